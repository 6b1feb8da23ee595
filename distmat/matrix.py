"""The dense distributed matrix type (layer 2).

A :class:`DistMatrix` holds metadata (global shape, block size, grid) and this rank's local
block-cyclic piece; algorithms live in their own modules and the operators call them.
"""

from __future__ import annotations

from numbers import Number
from typing import Any

import numpy as np

from . import comm as _c
from .errors import GridMismatchError, ShapeMismatchError
from .grid import ProcessGrid
from .layout import Layout, check_block

__all__ = ["DistMatrix", "SUPPORTED_DTYPES", "check_dtype", "default_block"]

SUPPORTED_DTYPES = tuple(np.dtype(t) for t in (np.float32, np.float64, np.complex64,
                                                np.complex128))


def check_dtype(dtype: Any, name: str = "dtype") -> np.dtype:
    """Return ``dtype`` as a numpy dtype if distmat supports it, else raise TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} must be one of float32, float64, complex64, complex128; "
                        f"got {dtype!r}")
    return dt


def default_block(shape: tuple[int, int], grid_shape: tuple[int, int],
                  cap: int = 64) -> tuple[int, int]:
    """The default block size: 64 x 64, shrunk to the plain block partition when smaller.

    ``min(64, ceil(m / pr))`` rows by ``min(64, ceil(n / pc))`` columns (at least 1), so small
    matrices are spread evenly and large ones are block-cyclic with BLAS-friendly blocks.
    """
    (m, n), (pr, pc) = shape, grid_shape
    return (max(1, min(cap, -(-m // pr))), max(1, min(cap, -(-n // pc))))


def _is_scalar(x: Any) -> bool:
    return isinstance(x, (Number, np.number)) or (isinstance(x, np.ndarray) and x.ndim == 0)


class DistMatrix:
    """A dense ``m x n`` matrix distributed 2D block-cyclically over a :class:`ProcessGrid`.

    Block ``(I, J)`` (rows ``I*mb .. I*mb+mb-1``, columns ``J*nb ..``) lives on grid
    coordinate ``(I % pr, J % pc)``; each rank stores its blocks in order as one ndarray,
    :attr:`local`, which is empty on ranks that own nothing.

    Most users create matrices with :func:`distmat.zeros`, :func:`distmat.random`,
    :func:`distmat.from_global` and friends.  The constructor wraps local pieces a program
    already has.

    Parameters
    ----------
    local : ndarray
        This rank's piece **(local)**, of shape ``layout.local_shape(*grid.coords)``.
    shape : tuple of int
        Global shape **(global)**.
    block : tuple of int
        Block size ``(mb, nb)`` **(global)**.
    grid : ProcessGrid
        The grid **(global)**.

    Notes
    -----
    Collective over the grid: the local shapes are checked on every rank and a mismatch on
    any rank raises the same ValueError everywhere.
    """

    __array_ufunc__ = None  # ``ndarray @ DistMatrix`` must not silently densify

    def __init__(self, local: np.ndarray, shape: tuple[int, int], block: tuple[int, int],
                 grid: ProcessGrid):
        shape = _check_shape(shape)
        block = check_block(block)
        with _c.agreed(grid.comm):
            local = np.asarray(local)
            check_dtype(local.dtype, "local.dtype")
            expect = Layout(shape, block, grid.shape).local_shape(*grid.coords)
            if local.shape != expect:
                raise ValueError(f"local has shape {local.shape} but grid coordinate "
                                 f"{grid.coords} owns {expect} of a {shape} matrix with block "
                                 f"{block}")
        dtypes = _c.allgather_obj(grid.comm, local.dtype.str)
        if len(set(dtypes)) != 1:
            raise TypeError(f"local arrays have different dtypes on different ranks: "
                            f"{sorted(set(dtypes))}")
        self._init(local, shape, block, grid)

    def _init(self, local: np.ndarray, shape: tuple[int, int], block: tuple[int, int],
              grid: ProcessGrid) -> None:
        self.local = local
        self._shape = shape
        self._block = block
        self._grid = grid
        self._rows: np.ndarray | None = None
        self._cols: np.ndarray | None = None

    @classmethod
    def _wrap(cls, local: np.ndarray, shape: tuple[int, int], block: tuple[int, int],
              grid: ProcessGrid) -> DistMatrix:
        """Build without checks or communication (internal: callers guarantee the layout)."""
        obj = cls.__new__(cls)
        obj._init(local, shape, block, grid)
        return obj

    # ------------------------------------------------------------------ metadata
    @property
    def shape(self) -> tuple[int, int]:
        """Global shape ``(m, n)``."""
        return self._shape

    @property
    def block(self) -> tuple[int, int]:
        """Block size ``(mb, nb)``."""
        return self._block

    @property
    def grid(self) -> ProcessGrid:
        """The process grid the matrix lives on."""
        return self._grid

    @property
    def dtype(self) -> np.dtype:
        return self.local.dtype

    @property
    def ndim(self) -> int:
        return 2

    @property
    def size(self) -> int:
        """Number of global entries."""
        return self._shape[0] * self._shape[1]

    @property
    def local_shape(self) -> tuple[int, int]:
        """Shape of this rank's local array."""
        return self.local.shape

    @property
    def layout(self) -> Layout:
        """The block-cyclic layout (pure metadata)."""
        return Layout(self._shape, self._block, self._grid.shape)

    @property
    def global_rows(self) -> np.ndarray:
        """Global row index of each local row."""
        if self._rows is None:
            self._rows = self.layout.rows(self._grid.myrow)
        return self._rows

    @property
    def global_cols(self) -> np.ndarray:
        """Global column index of each local column."""
        if self._cols is None:
            self._cols = self.layout.cols(self._grid.mycol)
        return self._cols

    def global_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, cols)``: global indices of the local rows and columns.

        ``A.local[a, b]`` is global entry ``(rows[a], cols[b])``, so
        ``global_array[np.ix_(rows, cols)]`` equals ``A.local``.
        """
        return self.global_rows, self.global_cols

    # ------------------------------------------------------------------ conversions
    def gather(self, root: int | None = 0) -> np.ndarray | None:
        """Collect the global matrix as an ndarray. Collective over the grid.

        Parameters
        ----------
        root : int or None
            Rank (in ``grid.comm``) that receives the array **(global)**; None gives it to
            every rank.

        Returns
        -------
        ndarray or None
            The global matrix on ``root`` (every rank for ``root=None``), None elsewhere.
        """
        from .convert import gather

        return gather(self, root)

    def redistribute(self, block: tuple[int, int] | None = None,
                     grid: ProcessGrid | None = None) -> DistMatrix:
        """The same matrix under another block size and/or grid over the same processes.

        Collective over the grid.  One all-to-all moves only the entries whose owner
        changes; the traffic is recorded in the ledger as ``redistribute``.
        """
        from .convert import redistribute

        return redistribute(self, block=block, grid=grid)

    @property
    def T(self) -> DistMatrix:
        """The transpose, as a new distributed matrix on the same grid (collective)."""
        from .convert import transpose

        return transpose(self)

    def transpose(self) -> DistMatrix:
        """The transpose (see :attr:`T`)."""
        return self.T

    def conj(self) -> DistMatrix:
        """Elementwise complex conjugate (no communication)."""
        return self._like(np.conj(self.local))

    @property
    def H(self) -> DistMatrix:
        """Conjugate transpose (collective)."""
        return self.T.conj() if np.iscomplexobj(self.local) else self.T

    def astype(self, dtype: Any) -> DistMatrix:
        """Copy cast to ``dtype`` (float32, float64, complex64 or complex128)."""
        return self._like(self.local.astype(check_dtype(dtype)))

    def copy(self) -> DistMatrix:
        """A copy with its own local array."""
        return self._like(self.local.copy())

    def _like(self, local: np.ndarray) -> DistMatrix:
        return DistMatrix._wrap(local, self._shape, self._block, self._grid)

    # ------------------------------------------------------------------ arithmetic
    def _binary(self, other: Any, op: Any, name: str, reflected: bool = False) -> DistMatrix:
        if isinstance(other, DistMatrix):
            other = _conform(self, other, name)
            a, b = self.local, other.local
        elif _is_scalar(other):
            a, b = self.local, other
        else:
            _reject_array(other, name)
            return NotImplemented
        if reflected:
            a, b = b, a
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out = op(a, b)
        if out.dtype not in SUPPORTED_DTYPES:
            out = out.astype(np.result_type(out.dtype, np.float64))
        return self._like(out)

    def __add__(self, other: Any) -> DistMatrix:
        return self._binary(other, np.add, "+")

    def __radd__(self, other: Any) -> DistMatrix:
        return self._binary(other, np.add, "+", reflected=True)

    def __sub__(self, other: Any) -> DistMatrix:
        return self._binary(other, np.subtract, "-")

    def __rsub__(self, other: Any) -> DistMatrix:
        return self._binary(other, np.subtract, "-", reflected=True)

    def __mul__(self, other: Any) -> DistMatrix:
        return self._binary(other, np.multiply, "*")

    def __rmul__(self, other: Any) -> DistMatrix:
        return self._binary(other, np.multiply, "*", reflected=True)

    def __truediv__(self, other: Any) -> DistMatrix:
        return self._binary(other, np.true_divide, "/")

    def __rtruediv__(self, other: Any) -> DistMatrix:
        return self._binary(other, np.true_divide, "/", reflected=True)

    def __neg__(self) -> DistMatrix:
        return self._like(-self.local)

    def __pos__(self) -> DistMatrix:
        return self.copy()

    def __abs__(self) -> DistMatrix:
        return self._like(np.abs(self.local))

    def __matmul__(self, other: Any) -> DistMatrix:
        if not isinstance(other, DistMatrix):
            _reject_array(other, "@")
            return NotImplemented
        from .summa import matmul

        return matmul(self, other)

    def __rmatmul__(self, other: Any) -> DistMatrix:
        _reject_array(other, "@")
        return NotImplemented

    # ------------------------------------------------------------------ guards
    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise TypeError("a DistMatrix is distributed; use A.gather(root=...) to get an ndarray "
                        "(collective), or A.local for this rank's piece")

    def __bool__(self) -> bool:
        raise TypeError("the truth value of a DistMatrix is ambiguous")

    def __len__(self) -> int:
        raise TypeError("len() of a DistMatrix is ambiguous; use A.shape")

    def __iter__(self):  # noqa: D105
        raise TypeError("a DistMatrix is not iterable; use A.gather() or A.local")

    def __repr__(self) -> str:
        return (f"DistMatrix(shape={self._shape}, dtype={self.dtype}, block={self._block}, "
                f"grid={self._grid.shape}, local_shape={self.local.shape})")


def _reject_array(other: Any, op: str, what: str = "DistMatrix") -> None:
    """TypeError for ``DistMatrix <op> ndarray``: say how to distribute the array instead."""
    if isinstance(other, (np.ndarray, list, tuple)):
        shape = np.shape(other)
        raise TypeError(f"cannot use '{op}' between a {what} and a {type(other).__name__} "
                        f"of shape {shape}: distribute it first, e.g. "
                        f"dm.from_global(a, grid=A.grid, block=A.block, root=None)")


def _check_shape(shape: Any, name: str = "shape") -> tuple[int, int]:
    try:
        m, n = shape
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0
                 for v in (m, n))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a pair (m, n) of non-negative integers, got {shape!r}")
    return int(m), int(n)


def check_same_grid(a: DistMatrix, b: DistMatrix, what: str) -> None:
    """Raise GridMismatchError (on every rank, from metadata) unless a and b share a grid."""
    if not a.grid.compatible(b.grid):
        raise GridMismatchError(f"{what}: operands live on different process grids "
                                f"({a.grid.shape} and {b.grid.shape}); use "
                                f"B.redistribute(grid=A.grid) first")


def _conform(a: DistMatrix, b: DistMatrix, name: str) -> DistMatrix:
    check_same_grid(a, b, f"A {name} B")
    if a.shape != b.shape:
        raise ShapeMismatchError(f"operands could not be combined with '{name}': shapes "
                                 f"{a.shape} and {b.shape} differ")
    if a.block != b.block:
        b = b.redistribute(block=a.block)
    return b

