"""Conversions of block-sparse matrices: scipy in and out, dense in and out, transpose.

All collective over the grid; the traffic is labelled ``sparse.scatter``, ``sparse.gather``
and ``sparse.transpose`` in the ledger and moves only stored blocks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .. import comm as _c
from ..grid import ProcessGrid, as_grid
from ..layout import Layout
from ..matrix import DistMatrix, check_dtype
from ._exchange import route_blocks
from .bsr import BlockSparseMatrix, check_blocksize, nblocks

__all__ = ["from_scipy", "from_dense", "gather", "todense", "transpose", "scipy_to_blocks"]

FORMATS = ("csr", "csc", "coo", "bsr")


def _owner_ranks(bi: np.ndarray, bj: np.ndarray, grid: ProcessGrid) -> np.ndarray:
    pr, pc = grid.shape
    return (bi % pr) * pc + (bj % pc)


def _result_dtype(dt: np.dtype, dtype: Any) -> np.dtype:
    if dtype is not None:
        return check_dtype(dtype)
    if dt.kind in "biu":
        return np.dtype(np.float64)
    return check_dtype(dt, "the matrix's dtype")


def scipy_to_blocks(S: Any, bs: int, dtype: Any = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.dtype, tuple[int, int]]:
    """Global ``(bi, bj, data, dtype, shape)`` of the blocks holding stored entries of ``S``.

    ``S`` is any scipy sparse array or matrix, or a dense 2-D array (its zeros are not
    stored).  Duplicate entries are summed; edge blocks are zero-padded to ``bs x bs``.
    """
    if sp.issparse(S):
        coo = S.tocoo()
    else:
        arr = np.asarray(S)
        if arr.ndim != 2:
            raise ValueError(f"S must be a scipy sparse matrix or a 2-D array, got an array of "
                             f"shape {arr.shape}")
        coo = sp.coo_array(arr)
    shape = (int(coo.shape[0]), int(coo.shape[1]))
    dt = _result_dtype(coo.dtype, dtype)
    mb, nb = nblocks(shape[0], bs), nblocks(shape[1], bs)
    row = np.asarray(coo.row, dtype=np.int64)
    col = np.asarray(coo.col, dtype=np.int64)
    padded = sp.coo_array((np.asarray(coo.data, dtype=dt), (row, col)),
                          shape=(mb * bs, nb * bs))
    bsr = padded.tobsr(blocksize=(bs, bs))
    bsr.sum_duplicates()
    bi = np.repeat(np.arange(mb, dtype=np.int64), np.diff(bsr.indptr))
    return bi, np.asarray(bsr.indices, np.int64), np.asarray(bsr.data, dtype=dt), dt, shape


def from_scipy(S: Any, blocksize: Any = None, grid: ProcessGrid | None = None,
               root: int | None = 0, dtype: Any = None) -> BlockSparseMatrix:
    """Distribute a scipy sparse matrix (or a dense 2-D array). Collective over the grid.

    Parameters
    ----------
    S : scipy sparse array or matrix, or ndarray
        The global matrix on ``root`` **(local)**: CSR, CSC, COO, BSR, any scipy format, or
        a dense array whose zeros are not stored.  Other ranks pass None (ignored).  With
        ``root=None`` every rank passes the same matrix and no data moves.
    blocksize : int or (int, int), optional
        Square block edge ``bs`` **(global)**, default ``min(64, max(S.shape))``: the blocks
        holding at least one stored entry of ``S`` are stored (explicit zeros count).
    grid : ProcessGrid, optional
        **(global)** default :meth:`ProcessGrid.default`.
    root : int or None
        Rank in ``grid.comm`` holding ``S`` **(global)**, or None.
    dtype : dtype, optional
        Element type; default the matrix's (integers and booleans become float64).

    Raises
    ------
    ValueError
        On every rank if ``blocksize`` is not a positive integer or is larger than both
        dimensions, or if ``S`` on root is not a matrix.
    """
    grid = as_grid(grid)
    if root is not None and (isinstance(root, bool) or not isinstance(root, (int, np.integer))
                             or not 0 <= root < grid.size):
        raise ValueError(f"root must be a rank in 0..{grid.size - 1} or None, got {root!r}")
    if root is None:
        with _c.agreed(grid.comm):
            shape = _shape_of(S)
            bs = check_blocksize(blocksize, shape)
            bi, bj, data, dt, shape = scipy_to_blocks(S, bs, dtype)
        _c.check_same(grid.comm, (*shape, dt.num, bi.size), "from_scipy(root=None): the shape, "
                      "dtype and number of stored blocks of S")
        mine = _owner_ranks(bi, bj, grid) == grid.rank
        return BlockSparseMatrix._from_owned(bi[mine], bj[mine], data[mine], shape, bs, grid,
                                             dt, nnzb=int(bi.size))
    meta: Any = None
    if grid.rank == root:
        try:
            shape = _shape_of(S)
            bs = check_blocksize(blocksize, shape)
            bi, bj, data, dt, shape = scipy_to_blocks(S, bs, dtype)
            meta = (shape, bs, dt.str, int(bi.size))
        except (TypeError, ValueError) as e:
            meta = (type(e), str(e))
    meta = grid.comm.bcast(meta, root=root)  # cold metadata
    if isinstance(meta[0], type):
        raise meta[0](f"{meta[1]} [on root rank {root}]")
    shape, bs, dt, nnzb = tuple(meta[0]), meta[1], np.dtype(meta[2]), meta[3]
    if grid.rank != root:
        bi = bj = np.empty(0, np.int64)
        data = np.empty((0, bs, bs), dt)
    with _c.operation("sparse.scatter"):
        bi, bj, data = route_blocks(grid.comm, _owner_ranks(bi, bj, grid), bi, bj, data, bs,
                                    dt)
    return BlockSparseMatrix._from_owned(bi, bj, data, shape, bs, grid, dt, nnzb=nnzb)


def _shape_of(S: Any) -> tuple[int, int]:
    if S is None:
        raise ValueError("S must be a scipy sparse matrix or a 2-D array, got None")
    shp = S.shape if sp.issparse(S) else np.shape(S)
    if len(shp) != 2:
        raise ValueError(f"S must be 2-D, got shape {tuple(shp)}")
    return int(shp[0]), int(shp[1])


def _local_blocks_of_dense(local: np.ndarray, bs: int) -> np.ndarray:
    """View a local dense array with block ``(bs, bs)`` as ``(nlbr, nlbc, bs, bs)`` (padded)."""
    lr, lc = local.shape
    nlbr, nlbc = nblocks(lr, bs), nblocks(lc, bs)
    if lr != nlbr * bs or lc != nlbc * bs:
        pad = np.zeros((nlbr * bs, nlbc * bs), dtype=local.dtype)
        pad[:lr, :lc] = local
        local = pad
    return local.reshape(nlbr, bs, nlbc, bs).swapaxes(1, 2)


def from_dense(A: DistMatrix, threshold: float = 0.0, blocksize: Any = None
               ) -> BlockSparseMatrix:
    """Keep the blocks of a dense DistMatrix whose Frobenius norm exceeds ``threshold``.

    Collective over the grid.  No data moves when ``A``'s block is ``(bs, bs)``; otherwise ``A``
    is first redistributed to that block.

    Parameters
    ----------
    A : DistMatrix
        The dense matrix **(global)**.
    threshold : float
        Blocks with ``||A_IJ||_F > threshold`` are kept **(global)**; the default 0 keeps every
        block with a non-zero entry.
    blocksize : int, optional
        **(global)** default ``A.block[0]`` when ``A``'s block is square, else 64 (capped by
        the shape).
    """
    if not isinstance(A, DistMatrix):
        raise TypeError(f"A must be a DistMatrix, got {type(A).__name__}; use from_scipy for "
                        f"arrays")
    if blocksize is None:
        blocksize = A.block[0] if A.block[0] == A.block[1] else min(64, max(A.shape))
    bs = check_blocksize(blocksize, A.shape)
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
    if A.block != (bs, bs):
        A = A.redistribute(block=(bs, bs))
    grid = A.grid
    blocks = _local_blocks_of_dense(A.local, bs)
    norms = np.sqrt(np.einsum("abij,abij->ab", blocks.real, blocks.real)
                    + (np.einsum("abij,abij->ab", blocks.imag, blocks.imag)
                       if np.iscomplexobj(blocks) else 0.0))
    li, lj = np.nonzero(norms > threshold)
    pr, pc = grid.shape
    data = np.ascontiguousarray(blocks[li, lj])
    return BlockSparseMatrix._from_owned(li * pr + grid.myrow, lj * pc + grid.mycol, data,
                                         A.shape, bs, grid, A.dtype)


def todense(S: BlockSparseMatrix) -> DistMatrix:
    """``S`` as a dense DistMatrix with block ``(bs, bs)`` on the same grid. No communication."""
    grid, bs = S.grid, S.bs
    lay = Layout(S.shape, (bs, bs), grid.shape)
    lr, lc = lay.local_shape(*grid.coords)
    nlbr, nlbc = nblocks(lr, bs), nblocks(lc, bs)
    pad = np.zeros((nlbr, nlbc, bs, bs), dtype=S.dtype)
    li = np.repeat(np.arange(S.indptr.size - 1, dtype=np.int64), np.diff(S.indptr))
    pad[li, S.indices] = S.data
    local = np.ascontiguousarray(pad.swapaxes(1, 2).reshape(nlbr * bs, nlbc * bs)[:lr, :lc])
    return DistMatrix._wrap(local, S.shape, (bs, bs), grid)


def _crop_coo(bi: np.ndarray, bj: np.ndarray, data: np.ndarray, shape: tuple[int, int],
              bs: int) -> sp.coo_array:
    """Entries of the blocks as a COO array of ``shape`` (padding and zeros dropped)."""
    nz = data != 0
    t, a, b = np.nonzero(nz)
    r = bi[t] * bs + a
    c = bj[t] * bs + b
    keep = (r < shape[0]) & (c < shape[1])
    return sp.coo_array((data[t[keep], a[keep], b[keep]], (r[keep], c[keep])), shape=shape)


def gather(S: BlockSparseMatrix, root: int | None = 0, format: str = "csr") -> Any:
    """The global matrix as a scipy sparse array on ``root``. Collective over the grid.

    Parameters
    ----------
    S : BlockSparseMatrix
    root : int or None
        Rank in ``grid.comm`` that gets the result **(global)**; None: every rank.
    format : {"csr", "csc", "coo", "bsr"}
        **(global)**.  ``csr``, ``csc`` and ``coo`` hold the non-zero entries (canonical,
        explicit zeros and padding removed).  ``bsr`` holds the stored blocks with blocksize
        ``(bs, bs)`` when ``bs`` divides both dimensions; otherwise scipy cannot represent
        the padded edge blocks and the result is ``csr.tobsr()`` (scipy's blocksize choice).

    Returns
    -------
    scipy.sparse array or None
        On ``root`` (every rank for None); None elsewhere.
    """
    grid = S.grid
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if root is not None and (isinstance(root, bool) or not isinstance(root, (int, np.integer))
                             or not 0 <= root < grid.size):
        raise ValueError(f"root must be a rank in 0..{grid.size - 1} or None, got {root!r}")
    bi, bj = S.block_coords()
    with _c.operation("sparse.gather"):
        dest: Any = "all" if root is None else np.full(bi.size, root, dtype=np.int64)
        gi, gj, gd = route_blocks(grid.comm, dest, bi, bj, S.data, S.bs, S.dtype)
    if root is not None and grid.rank != root:
        return None
    m, n = S.shape
    bs = S.bs
    if format == "bsr" and m % bs == 0 and n % bs == 0:
        mb = m // bs
        order = np.lexsort((gj, gi))
        gi, gj, gd = gi[order], gj[order], gd[order]
        indptr = np.zeros(mb + 1, dtype=np.int64)
        np.cumsum(np.bincount(gi, minlength=mb), out=indptr[1:])
        return sp.bsr_array((gd, gj, indptr), shape=(m, n), blocksize=(bs, bs))
    coo = _crop_coo(gi, gj, gd, S.shape, bs)
    if format == "coo":
        coo.sum_duplicates()
        return coo
    if format == "csc":
        return coo.tocsc()
    csr = coo.tocsr()
    return csr if format == "csr" else csr.tobsr()


def transpose(S: BlockSparseMatrix) -> BlockSparseMatrix:
    """``S.T`` on the same grid: each block is transposed and sent to its new owner.

    Collective; traffic labelled ``sparse.transpose`` (stored blocks only).
    """
    grid = S.grid
    bi, bj = S.block_coords()
    data = S.data.transpose(0, 2, 1)
    with _c.operation("sparse.transpose"):
        ti, tj, td = route_blocks(grid.comm, _owner_ranks(bj, bi, grid), bj, bi, data, S.bs,
                                  S.dtype)
    return BlockSparseMatrix._from_owned(ti, tj, td, S.shape[::-1], S.bs, grid, S.dtype,
                                         nnzb=S.nnzb)
