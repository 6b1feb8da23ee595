"""The distributed block-sparse matrix type (layer 2).

Storage
-------
An ``m x n`` matrix is cut into square ``bs x bs`` blocks: block ``(I, J)`` holds rows
``I*bs .. I*bs+bs-1`` and columns ``J*bs ..``.  Block row ``I`` belongs to process row
``I % pr`` and block column ``J`` to process column ``J % pc``: exactly the ownership of a dense
:class:`~distmat.DistMatrix` with block ``(bs, bs)``, so ``S.todense()`` needs no message and
``S @ X`` meets ``X`` on the same block grid.

Each rank keeps the non-zero blocks it owns as block-CSR over its *local* block rows
(local block row ``li`` is global block row ``li * pr + myrow``):

- ``indptr`` (``nlbr + 1``, int64): blocks of local block row ``li`` are
  ``indptr[li]:indptr[li+1]``;
- ``indices`` (``nnzb_local``, int64): **local** block column indices, increasing within a
  row (global block column ``indices * pc + mycol``);
- ``data`` (``nnzb_local, bs, bs``): the blocks.  Edge blocks of a shape not divisible by
  ``bs`` are stored zero-padded to ``bs x bs`` so batched kernels stay uniform; every
  conversion out strips the padding.
"""

from __future__ import annotations

from numbers import Number
from typing import Any

import numpy as np

from .. import comm as _c
from ..errors import GridMismatchError, ShapeMismatchError
from ..grid import ProcessGrid
from ..matrix import SUPPORTED_DTYPES, DistMatrix, _reject_array, check_dtype

__all__ = ["BlockSparseMatrix", "check_blocksize", "nblocks"]


def nblocks(n: int, bs: int) -> int:
    """Number of blocks of size ``bs`` covering ``n`` indices."""
    return -(-n // bs)


def check_blocksize(blocksize: Any, shape: tuple[int, int]) -> int:
    """Validate a square block size (an int or a pair of equal ints) for ``shape``.

    None gives the default ``min(64, max(shape))``.  Raises ValueError naming the block size
    and the shape unless it is a positive integer no larger than the larger dimension.
    """
    if blocksize is None:
        return max(1, min(64, max(shape[0], shape[1])))
    bs = blocksize
    if isinstance(bs, (tuple, list)):
        if len(bs) != 2 or bs[0] != bs[1]:
            raise ValueError(f"blocksize must be a positive integer or a pair (bs, bs) of equal "
                             f"integers (square blocks), got {blocksize!r}")
        bs = bs[0]
    if isinstance(bs, bool) or not isinstance(bs, (int, np.integer)) or bs < 1:
        raise ValueError(f"blocksize must be a positive integer, got {blocksize!r}")
    bs = int(bs)
    if bs > max(shape[0], shape[1], 1):
        raise ValueError(f"blocksize {bs} is larger than both dimensions of the shape {shape}")
    return bs


def _is_scalar(x: Any) -> bool:
    return isinstance(x, (Number, np.number)) or (isinstance(x, np.ndarray) and x.ndim == 0)


class BlockSparseMatrix:
    """A block-sparse ``m x n`` matrix distributed over a :class:`~distmat.ProcessGrid`.

    See the module docstring for the storage.  Build one with the constructors of
    :mod:`distmat.sparse` (``from_scipy``, ``from_coo``, ``from_dense``, ``random``, ``eye``,
    ``poisson2d`` ...), not with this class directly.

    Attributes
    ----------
    shape : tuple of int
        Global shape.
    blocksize : tuple of int
        ``(bs, bs)`` (scipy's name; blocks are square).
    grid : ProcessGrid
    nnzb : int
        Global number of stored blocks.
    density : float
        ``nnzb`` over the number of blocks of the block grid.
    indptr, indices, data : ndarray
        This rank's block-CSR structure **(local)**; ``indices`` are local block columns.
    """

    __array_ufunc__ = None

    def __init__(self) -> None:  # pragma: no cover - use the constructors
        raise TypeError("use distmat.sparse.from_scipy / from_coo / random / ... to build a "
                        "BlockSparseMatrix")

    # ------------------------------------------------------------------ internal builders
    @classmethod
    def _wrap(cls, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
              shape: tuple[int, int], bs: int, grid: ProcessGrid, nnzb: int | None = None
              ) -> BlockSparseMatrix:
        """Build from canonical local block-CSR (sorted, no duplicates).

        Collective (one small all-reduce) unless the global ``nnzb`` is given.
        """
        obj = cls.__new__(cls)
        obj.indptr = indptr
        obj.indices = indices
        obj.data = data
        obj._shape = (int(shape[0]), int(shape[1]))
        obj._bs = int(bs)
        obj._grid = grid
        if nnzb is None:
            buf = np.array([indices.size], dtype=np.int64)
            _c.allreduce(grid.comm, buf)
            nnzb = int(buf[0])
        obj._nnzb = int(nnzb)
        return obj

    @classmethod
    def _from_owned(cls, bi: np.ndarray, bj: np.ndarray, data: np.ndarray,
                    shape: tuple[int, int], bs: int, grid: ProcessGrid, dtype: Any,
                    nnzb: int | None = None) -> BlockSparseMatrix:
        """Build from blocks this rank owns, in any order; duplicates are summed.

        ``bi``, ``bj`` are global block indices.  Collective (see :meth:`_wrap`).
        """
        pr, pc = grid.shape
        nlbr, nlbc = cls._local_nblocks(shape, bs, grid)
        dtype = np.dtype(dtype)
        li = np.asarray(bi, dtype=np.int64) // pr
        lj = np.asarray(bj, dtype=np.int64) // pc
        data = np.asarray(data, dtype=dtype).reshape(-1, bs, bs)
        key = li * max(nlbc, 1) + lj
        if key.size and not bool(np.all(key[1:] > key[:-1])):
            order = np.argsort(key, kind="stable")
            key = key[order]
            data = data[order]
            first = np.ones(key.size, dtype=bool)
            first[1:] = key[1:] != key[:-1]
            starts = np.flatnonzero(first)
            if starts.size != key.size:
                data = np.add.reduceat(data, starts, axis=0)
                key = key[starts]
        li = key // max(nlbc, 1)
        indices = key - li * max(nlbc, 1)
        indptr = np.zeros(nlbr + 1, dtype=np.int64)
        np.cumsum(np.bincount(li, minlength=nlbr), out=indptr[1:])
        return cls._wrap(indptr, indices.astype(np.int64), np.ascontiguousarray(data), shape,
                         bs, grid, nnzb)

    @staticmethod
    def _local_nblocks(shape: tuple[int, int], bs: int, grid: ProcessGrid) -> tuple[int, int]:
        pr, pc = grid.shape
        mb, nb = nblocks(shape[0], bs), nblocks(shape[1], bs)
        r, c = grid.coords
        return (max(0, -(-(mb - r) // pr)), max(0, -(-(nb - c) // pc)))

    def _like(self, data: np.ndarray) -> BlockSparseMatrix:
        return BlockSparseMatrix._wrap(self.indptr, self.indices, data, self._shape, self._bs,
                                       self._grid, self._nnzb)

    # ------------------------------------------------------------------ metadata
    @property
    def shape(self) -> tuple[int, int]:
        """Global shape ``(m, n)``."""
        return self._shape

    @property
    def blocksize(self) -> tuple[int, int]:
        """``(bs, bs)``."""
        return (self._bs, self._bs)

    @property
    def bs(self) -> int:
        """The block edge ``bs``."""
        return self._bs

    @property
    def grid(self) -> ProcessGrid:
        return self._grid

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return 2

    @property
    def nnzb(self) -> int:
        """Global number of stored blocks (known without communication)."""
        return self._nnzb

    @property
    def local_nnzb(self) -> int:
        """Number of blocks stored on this rank."""
        return int(self.indices.size)

    @property
    def block_shape(self) -> tuple[int, int]:
        """Global number of block rows and block columns."""
        return nblocks(self._shape[0], self._bs), nblocks(self._shape[1], self._bs)

    @property
    def density(self) -> float:
        """Fraction of the blocks of the block grid that are stored."""
        mb, nb = self.block_shape
        return self._nnzb / (mb * nb) if mb * nb else 0.0

    def block_coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Global ``(block_row, block_col)`` of each local block, in storage order."""
        pr, pc = self._grid.shape
        nlbr = self.indptr.size - 1
        li = np.repeat(np.arange(nlbr, dtype=np.int64), np.diff(self.indptr))
        return li * pr + self._grid.myrow, self.indices * pc + self._grid.mycol

    # ------------------------------------------------------------------ conversions
    def gather(self, root: int | None = 0, format: str = "csr") -> Any:
        """The global matrix as a scipy sparse array. Collective over the grid.

        See :func:`distmat.sparse.gather`.
        """
        from .convert import gather

        return gather(self, root=root, format=format)

    def todense(self) -> DistMatrix:
        """The same matrix as a dense DistMatrix with block ``(bs, bs)`` (no communication)."""
        from .convert import todense

        return todense(self)

    @property
    def T(self) -> BlockSparseMatrix:
        """The transpose on the same grid (collective: blocks move to their new owners)."""
        from .convert import transpose

        return transpose(self)

    def transpose(self) -> BlockSparseMatrix:
        """See :attr:`T`."""
        return self.T

    @property
    def H(self) -> BlockSparseMatrix:
        """Conjugate transpose (collective)."""
        return self.T.conj()

    def conj(self) -> BlockSparseMatrix:
        return self._like(np.conj(self.data))

    def copy(self) -> BlockSparseMatrix:
        return BlockSparseMatrix._wrap(self.indptr.copy(), self.indices.copy(),
                                       self.data.copy(), self._shape, self._bs, self._grid,
                                       self._nnzb)

    def astype(self, dtype: Any) -> BlockSparseMatrix:
        return self._like(self.data.astype(check_dtype(dtype)))

    def diagonal_blocks(self) -> tuple[np.ndarray, np.ndarray]:
        """This rank's stored diagonal blocks: ``(I, data)`` with global block index ``I``."""
        bi, bj = self.block_coords()
        sel = bi == bj
        return bi[sel], self.data[sel]

    # ------------------------------------------------------------------ arithmetic
    def _check_conform(self, other: BlockSparseMatrix, what: str) -> None:
        if not self._grid.compatible(other._grid):
            raise GridMismatchError(f"{what}: operands live on different process grids "
                                    f"({self._grid.shape} and {other._grid.shape})")
        if self._shape != other._shape:
            raise ShapeMismatchError(f"operands could not be combined with '{what}': shapes "
                                     f"{self._shape} and {other._shape} differ")
        if self._bs != other._bs:
            raise ValueError(f"{what}: block sizes differ ({self._bs} and {other._bs})")

    def _combine(self, other: BlockSparseMatrix, sign: float, what: str) -> BlockSparseMatrix:
        self._check_conform(other, what)
        bi1, bj1 = self.block_coords()
        bi2, bj2 = other.block_coords()
        dt = np.result_type(self.dtype, other.dtype)
        data = np.concatenate([self.data.astype(dt, copy=False),
                               (sign * other.data).astype(dt, copy=False)])
        return BlockSparseMatrix._from_owned(np.concatenate([bi1, bi2]),
                                             np.concatenate([bj1, bj2]), data, self._shape,
                                             self._bs, self._grid, dt)

    def __add__(self, other: Any) -> BlockSparseMatrix:
        if isinstance(other, BlockSparseMatrix):
            return self._combine(other, 1, "+")
        return NotImplemented

    def __sub__(self, other: Any) -> BlockSparseMatrix:
        if isinstance(other, BlockSparseMatrix):
            return self._combine(other, -1, "-")
        return NotImplemented

    def _scale(self, alpha: Any) -> BlockSparseMatrix:
        out = self.data * alpha
        if out.dtype not in SUPPORTED_DTYPES:
            out = out.astype(np.result_type(out.dtype, np.float64))
        return self._like(out)

    def __mul__(self, other: Any) -> BlockSparseMatrix:
        if _is_scalar(other):
            return self._scale(other)
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> BlockSparseMatrix:
        if _is_scalar(other):
            return self._scale(1.0 / other)
        return NotImplemented

    def __neg__(self) -> BlockSparseMatrix:
        return self._like(-self.data)

    def __matmul__(self, other: Any) -> Any:
        if isinstance(other, DistMatrix):
            from .spmm import spmm

            return spmm(self, other)
        if isinstance(other, BlockSparseMatrix):
            from .spgemm import matmul

            return matmul(self, other)
        _reject_array(other, "@", "BlockSparseMatrix")
        return NotImplemented

    def __rmatmul__(self, other: Any) -> Any:
        _reject_array(other, "@", "BlockSparseMatrix")
        return NotImplemented

    # ------------------------------------------------------------------ guards
    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise TypeError("a BlockSparseMatrix is distributed; use S.gather(root=..., format=...) "
                        "(collective) or S.todense()")

    def __bool__(self) -> bool:
        raise TypeError("the truth value of a BlockSparseMatrix is ambiguous")

    def __len__(self) -> int:
        raise TypeError("len() of a BlockSparseMatrix is ambiguous; use S.shape")

    def __repr__(self) -> str:
        return (f"BlockSparseMatrix(shape={self._shape}, blocksize={self.blocksize}, "
                f"nnzb={self._nnzb}, density={self.density:.3g}, dtype={self.dtype}, "
                f"grid={self._grid.shape}, local_nnzb={self.local_nnzb})")
