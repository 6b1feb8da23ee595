"""``dm.profile``: per-operation communication figures reduced over the ranks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from mpi4py import MPI

from . import comm as _c
from .grid import ProcessGrid

__all__ = ["profile", "Profile", "Stat", "OpStats"]


@dataclass(frozen=True)
class Stat:
    """One counter over the ranks: this rank's value, the maximum and the sum."""

    local: float
    max: float
    sum: float

    def mean(self, nranks: int) -> float:
        return self.sum / nranks if nranks else 0.0


@dataclass(frozen=True)
class OpStats:
    """The ledger row of one operation (or the total)."""

    calls: Stat
    msgs_sent: Stat
    bytes_sent: Stat
    msgs_recv: Stat
    bytes_recv: Stat
    seconds: Stat

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {f: {"local": getattr(self, f).local, "max": getattr(self, f).max,
                    "sum": getattr(self, f).sum} for f in _c.FIELDS}


class profile:
    """Record the communication of the enclosed block. Collective over the grid on exit.

    While the block runs, every distmat message on this process is counted under the label of
    the public operation that sent it (``"transpose"``, ``"gather"``, ``"matmul"``...).  On
    leaving the block the counts are reduced over the grid's ranks (max and sum).  Outside a
    ``profile`` block nothing is recorded.

    Parameters
    ----------
    grid : ProcessGrid or mpi4py.MPI.Comm
        Where to reduce the figures **(global)**.

    Examples
    --------
    >>> with dm.profile(grid) as prof:
    ...     B = A.T
    >>> prof.ops["transpose"].bytes_sent.sum      # bytes all ranks sent for the transpose
    >>> print(prof.table())                      # on any rank; every rank has the figures

    Attributes (after the block)
    ----------------------------
    ops : dict of str to OpStats
        Per-operation figures.
    total : OpStats
        Figures summed over operations (``max`` is the max over ranks of each rank's total).
    nranks : int
    """

    def __init__(self, grid: ProcessGrid | MPI.Comm):
        self._comm = grid.comm if isinstance(grid, ProcessGrid) else grid
        self.ops: dict[str, OpStats] = {}
        self.total: OpStats | None = None
        self.nranks = self._comm.Get_size()
        self._rec: dict[str, np.ndarray] | None = None

    def __enter__(self) -> profile:
        self._rec = _c._start_recorder()
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        _c._stop_recorder(self._rec)
        if exc_type is not None:
            return  # an agreed error is propagating on every rank: do not communicate
        local = self._rec
        labels = sorted(set().union(*self._comm.allgather(sorted(local))))
        nf = len(_c.FIELDS)
        mat = np.zeros((len(labels) + 1, nf))
        for i, lab in enumerate(labels):
            if lab in local:
                mat[i] = local[lab]
        mat[-1] = mat[:-1].sum(axis=0)
        mx, sm = mat.copy(), mat.copy()
        self._comm.Allreduce(MPI.IN_PLACE, mx, op=MPI.MAX)
        self._comm.Allreduce(MPI.IN_PLACE, sm, op=MPI.SUM)

        def row(i: int) -> OpStats:
            return OpStats(*(Stat(float(mat[i, k]), float(mx[i, k]), float(sm[i, k]))
                             for k in range(nf)))

        self.ops = {lab: row(i) for i, lab in enumerate(labels)}
        self.total = row(len(labels))

    def as_dict(self) -> dict[str, Any]:
        """Figures as plain data (for JSON)."""
        out = {lab: s.as_dict() for lab, s in self.ops.items()}
        if self.total is not None:
            out["total"] = self.total.as_dict()
        return {"nranks": self.nranks, "ops": out}

    def table(self) -> str:
        """A fixed-width table of the figures (max and sum over ranks)."""
        head = (f"# {'operation':<14}{'calls':>7}{'msgs max':>10}{'sent max B':>14}"
                f"{'sent sum B':>14}{'recv max B':>14}{'MPI s max':>11}")
        lines = [head]
        rows = list(self.ops.items()) + ([("total", self.total)] if self.total else [])
        for lab, s in rows:
            lines.append(f"  {lab:<14}{int(s.calls.max):>7}{int(s.msgs_sent.max):>10}"
                         f"{int(s.bytes_sent.max):>14}{int(s.bytes_sent.sum):>14}"
                         f"{int(s.bytes_recv.max):>14}{s.seconds.max:>11.4f}")
        return "\n".join(lines)


Profile = profile
