"""The process grid: a ``pr x pc`` arrangement of MPI ranks and its communicators."""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from .layout import grid_shape_for

__all__ = ["ProcessGrid", "as_grid"]

_default: ProcessGrid | None = None


class ProcessGrid:
    """A ``pr x pc`` grid of the ranks of a communicator, row-major.

    Rank ``r`` of the grid's communicator sits at coordinate ``(r // pc, r % pc)``.  The grid
    keeps a duplicate of ``comm`` (so distmat traffic never mixes with the caller's) and two
    sub-communicators: ``row_comm`` joins the ranks of one grid row (its rank is the column
    coordinate), ``col_comm`` the ranks of one grid column (its rank is the row coordinate).

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        Intra-communicator to build the grid over **(global)**.  Collective over ``comm``.
    shape : tuple of int, optional
        ``(pr, pc)`` with ``pr * pc == comm.size`` **(global)**.  Default: the most square
        factorisation with ``pr <= pc``.

    Raises
    ------
    ValueError
        On every rank, if ``shape`` is not two positive integers whose product is the size
        of ``comm``.

    Notes
    -----
    Freeing communicators is collective, so a grid is freed by :meth:`free` or by leaving a
    ``with`` block, never by garbage collection.
    """

    def __init__(self, comm: MPI.Comm, shape: tuple[int, int] | None = None):
        if not isinstance(comm, MPI.Intracomm) or comm == MPI.COMM_NULL:
            raise TypeError(f"comm must be an mpi4py intra-communicator, got {comm!r}")
        size = comm.Get_size()
        if shape is None:
            shape = grid_shape_for(size)
        else:
            try:
                pr, pc = shape
                ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1
                         for v in (pr, pc))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"grid shape must be a pair (pr, pc) of positive integers, "
                                 f"got {shape!r}")
            if pr * pc != size:
                raise ValueError(f"grid shape {tuple(shape)} has {pr * pc} processes but the "
                                 f"communicator has {size} ranks")
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self.comm: MPI.Intracomm = comm.Dup()
        self.rank: int = self.comm.Get_rank()
        self.size: int = size
        self.myrow, self.mycol = divmod(self.rank, self.shape[1])
        self.row_comm: MPI.Intracomm = self.comm.Split(self.myrow, self.mycol)
        self.col_comm: MPI.Intracomm = self.comm.Split(self.mycol, self.myrow)
        self._freed = False

    @classmethod
    def default(cls) -> ProcessGrid:
        """The grid used when a constructor gets ``grid=None``.

        Built on first use (collectively) over a duplicate of ``MPI.COMM_WORLD`` with the
        default near-square shape, and kept for the life of the process.
        """
        global _default
        if _default is None or _default._freed:
            _default = cls(MPI.COMM_WORLD)
        return _default

    @property
    def coords(self) -> tuple[int, int]:
        """This rank's ``(row, column)`` coordinate in the grid."""
        return self.myrow, self.mycol

    @property
    def nprow(self) -> int:
        return self.shape[0]

    @property
    def npcol(self) -> int:
        return self.shape[1]

    def rank_of(self, prow: int, pcol: int) -> int:
        """Rank in :attr:`comm` of grid coordinate ``(prow, pcol)``."""
        return prow * self.shape[1] + pcol

    def ranks(self) -> np.ndarray:
        """``pr x pc`` array of the ranks (in :attr:`comm`) at each coordinate."""
        return np.arange(self.size, dtype=np.int64).reshape(self.shape)

    def ranks_in(self, comm: MPI.Comm) -> np.ndarray:
        """``pr x pc`` array of the ranks, in ``comm``, of this grid's processes."""
        mine = self.comm.Get_group()
        other = comm.Get_group()
        try:
            out = MPI.Group.Translate_ranks(mine, list(range(self.size)), other)
        finally:
            mine.Free()
            other.Free()
        return np.asarray(out, dtype=np.int64).reshape(self.shape)

    def compatible(self, other: ProcessGrid) -> bool:
        """True if ``other`` is this grid or an equal-shaped grid over the same ranks in order."""
        if other is self:
            return True
        if not isinstance(other, ProcessGrid) or other.shape != self.shape:
            return False
        return MPI.Comm.Compare(self.comm, other.comm) in (MPI.IDENT, MPI.CONGRUENT)

    def same_processes(self, other: ProcessGrid) -> bool:
        """True if ``other`` spans the same set of processes (in any order or shape)."""
        g1, g2 = self.comm.Get_group(), other.comm.Get_group()
        try:
            return MPI.Group.Compare(g1, g2) in (MPI.IDENT, MPI.SIMILAR)
        finally:
            g1.Free()
            g2.Free()

    def free(self) -> None:
        """Free the grid's communicators. Collective over the grid; idempotent."""
        if self._freed:
            return
        for c in (self.row_comm, self.col_comm, self.comm):
            c.Free()
        self._freed = True

    def __enter__(self) -> ProcessGrid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()

    def __repr__(self) -> str:
        state = ", freed" if self._freed else ""
        return (f"ProcessGrid(shape={self.shape}, rank={self.rank}, "
                f"coords={self.coords}{state})")


def as_grid(grid: ProcessGrid | None) -> ProcessGrid:
    """``grid`` itself, or the default grid for None; TypeError for anything else."""
    if grid is None:
        return ProcessGrid.default()
    if not isinstance(grid, ProcessGrid):
        raise TypeError(f"grid must be a distmat.ProcessGrid or None, got {type(grid).__name__}")
    if grid._freed:
        raise ValueError("grid has been freed")
    return grid
