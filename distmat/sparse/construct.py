"""Constructors of block-sparse matrices: distributed COO assembly, identity, random.

Each is collective over the grid.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import comm as _c
from .. import rng
from ..grid import ProcessGrid, as_grid
from ..matrix import _check_shape, check_dtype
from ._exchange import exchange_bytes
from .bsr import BlockSparseMatrix, check_blocksize, nblocks

__all__ = ["from_coo", "eye", "random"]


def from_coo(rows: Any, cols: Any, values: Any, shape: tuple[int, int], blocksize: Any = None,
             grid: ProcessGrid | None = None, dtype: Any = None) -> BlockSparseMatrix:
    """Assemble a matrix from triplets that every rank contributes. Collective over the grid.

    Every rank passes any subset of ``(i, j, v)`` entries in global indices, including entries
    owned by other ranks; entries given more than once (on one rank or several) are summed.
    The triplets travel to the owners of their blocks in one all-to-all exchange (after a
    small exchange of counts); no rank ever holds the whole matrix.

    Parameters
    ----------
    rows, cols : array_like of int
        Global row and column indices **(local)**.
    values : array_like
        Values **(local)**, same length.
    shape : tuple of int
        Global shape **(global)**.
    blocksize : int, optional
        Square block edge **(global)**; default ``min(64, max(shape))``.
    grid : ProcessGrid, optional
        **(global)**.
    dtype : dtype, optional
        **(global)** default float64 (complex128 if any rank passes complex values).

    Raises
    ------
    ValueError
        On every rank, for a bad shape or block size, arrays of different lengths or indices
        out of range on any rank.
    """
    grid = as_grid(grid)
    shape = _check_shape(shape)
    bs = check_blocksize(blocksize, shape)
    with _c.agreed(grid.comm):
        r = np.asarray(rows).reshape(-1)
        c = np.asarray(cols).reshape(-1)
        v = np.asarray(values).reshape(-1)
        if not (r.size == c.size == v.size):
            raise ValueError(f"rows, cols and values must have the same length, got "
                             f"{r.size}, {c.size} and {v.size}")
        if r.size and (r.dtype.kind not in "iu" or c.dtype.kind not in "iu"):
            raise ValueError("rows and cols must be integer arrays")
        r = r.astype(np.int64)
        c = c.astype(np.int64)
        if r.size and (r.min() < 0 or r.max() >= shape[0] or c.min() < 0
                       or c.max() >= shape[1]):
            raise ValueError(f"an index is out of range for shape {shape}")
        if v.dtype.kind not in "biufc":
            raise ValueError(f"values must be numeric, got dtype {v.dtype}")
    if dtype is None:
        flag = np.array([1 if v.dtype.kind == "c" else 0], dtype=np.int32)
        _c.allreduce(grid.comm, flag)
        dtype = np.complex128 if flag[0] else np.float64
    dt = check_dtype(dtype)
    pr, pc = grid.shape
    rt = np.dtype([("i", "<i8"), ("j", "<i8"), ("v", dt)])
    rec = np.empty(r.size, dtype=rt)
    rec["i"], rec["j"], rec["v"] = r, c, v.astype(dt)
    dest = ((r // bs) % pr) * pc + (c // bs) % pc
    order = np.argsort(dest, kind="stable")
    counts = np.bincount(dest, minlength=grid.size)
    off = np.zeros(grid.size + 1, dtype=np.int64)
    np.cumsum(counts, out=off[1:])
    raw = rec[order].view(np.uint8).reshape(r.size, rt.itemsize)
    with _c.operation("sparse.from_coo"):
        got = exchange_bytes(grid.comm, [raw[off[k]:off[k + 1]].reshape(-1)
                                         for k in range(grid.size)])
    allb = np.concatenate(got)
    mine = allb.view(rt) if allb.size else np.empty(0, rt)
    return _assemble_owned(mine["i"], mine["j"], mine["v"], shape, bs, grid, dt)


def _assemble_owned(r: np.ndarray, c: np.ndarray, v: np.ndarray, shape: tuple[int, int],
                    bs: int, grid: ProcessGrid, dt: np.dtype) -> BlockSparseMatrix:
    """Blocks from entries this rank owns (duplicates summed). Collective (nnzb reduce)."""
    pr, pc = grid.shape
    nlbr, nlbc = BlockSparseMatrix._local_nblocks(shape, bs, grid)
    li = (r // bs) // pr
    lj = (c // bs) // pc
    key = li * max(nlbc, 1) + lj
    ukey, inv = np.unique(key, return_inverse=True)
    flat = inv * (bs * bs) + (r % bs) * bs + (c % bs)
    size = ukey.size * bs * bs
    if dt.kind == "c":
        data = (np.bincount(flat, weights=v.real, minlength=size)
                + 1j * np.bincount(flat, weights=v.imag, minlength=size))
    else:
        data = np.bincount(flat, weights=v.real.astype(np.float64), minlength=size)
    data = data.astype(dt).reshape(-1, bs, bs)
    bli = ukey // max(nlbc, 1)
    return BlockSparseMatrix._from_owned(bli * pr + grid.myrow,
                                         (ukey - bli * max(nlbc, 1)) * pc + grid.mycol, data,
                                         shape, bs, grid, dt)


def _local_block_ids(shape: tuple[int, int], bs: int, grid: ProcessGrid
                     ) -> tuple[np.ndarray, np.ndarray]:
    pr, pc = grid.shape
    mb, nb = nblocks(shape[0], bs), nblocks(shape[1], bs)
    return (np.arange(grid.myrow, mb, pr, dtype=np.int64),
            np.arange(grid.mycol, nb, pc, dtype=np.int64))


def eye(n: int, m: int | None = None, *, blocksize: Any = None, dtype: Any = np.float64,
        grid: ProcessGrid | None = None) -> BlockSparseMatrix:
    """The ``n x m`` identity (ones on the main diagonal) as a block-sparse matrix.

    Collective over the grid; no data moves.  Only the diagonal blocks are stored.
    """
    grid = as_grid(grid)
    shape = _check_shape((n, n if m is None else m))
    bs = check_blocksize(blocksize, shape)
    dt = check_dtype(dtype)
    I_, J_ = _local_block_ids(shape, bs, grid)
    diag = np.intersect1d(I_, J_)
    k = min(shape)
    diag = diag[diag * bs < k]
    data = np.zeros((diag.size, bs, bs), dtype=dt)
    idx = np.arange(bs)
    g = diag[:, None] * bs + idx[None, :]
    t, a = np.nonzero(g < k)
    data[t, a, a] = 1
    nnzb = nblocks(k, bs)
    return BlockSparseMatrix._from_owned(diag, diag, data, shape, bs, grid, dt, nnzb=nnzb)


def _entry_uniform(r: np.ndarray, c: np.ndarray, ncols: int, seed: int, stream: int
                   ) -> np.ndarray:
    """Uniform [0, 1) numbers for entries (r, c) (broadcast arrays), keyed like distmat.rng."""
    with np.errstate(over="ignore"):
        base = rng.mix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
        base = rng.mix64(base ^ np.uint64(stream))
        key = rng.mix64((r.astype(np.uint64) * np.uint64(max(ncols, 1))
                         + c.astype(np.uint64)) ^ base)
        bits = key >> np.uint64(11)
    return bits.astype(np.float64) * (1.0 / 9007199254740992.0)


def random(shape: tuple[int, int], *, blocksize: Any = None, density: float = 0.01,
           seed: int | None = None, dtype: Any = np.float64, grid: ProcessGrid | None = None
           ) -> BlockSparseMatrix:
    """A random block-sparse matrix, the same global matrix for a seed on any grid.

    Block ``(I, J)`` is stored with probability ``density``, decided by a hash of
    ``(seed, I, J)``; its entries are uniform on ``[0, 1)``, each a hash of its global
    position (real and imaginary parts drawn independently for complex dtypes).  Each rank
    draws only its own blocks.  Collective over the grid (one small all-reduce).

    Parameters
    ----------
    shape : tuple of int
        **(global)**.
    blocksize : int, optional
        **(global)** default ``min(64, max(shape))``.
    density : float
        Probability that a block is stored, in ``[0, 1]`` **(global)**.
    seed : int, optional
        **(global)** None draws one on rank 0 and broadcasts it.
    dtype, grid
        As for :func:`distmat.random`.
    """
    from ..creation import _global_seed

    grid = as_grid(grid)
    shape = _check_shape(shape)
    bs = check_blocksize(blocksize, shape)
    dt = check_dtype(dtype)
    if not (isinstance(density, (int, float, np.floating)) and 0.0 <= density <= 1.0):
        raise ValueError(f"density must be a number in [0, 1], got {density!r}")
    s = _global_seed(seed, grid)
    nb = nblocks(shape[1], bs)
    I_, J_ = _local_block_ids(shape, bs, grid)
    u = rng.uniform01(I_, J_, nb, s, stream=101)
    li, lj = np.nonzero(u < density)
    bi, bj = I_[li], J_[lj]
    idx = np.arange(bs, dtype=np.int64)
    r = (bi[:, None] * bs + idx[None, :])[:, :, None]
    c = (bj[:, None] * bs + idx[None, :])[:, None, :]
    vals = _entry_uniform(r, c, shape[1], s, 0)
    if dt.kind == "c":
        vals = vals + 1j * _entry_uniform(r, c, shape[1], s, 1)
    vals = np.where((r < shape[0]) & (c < shape[1]), vals, 0).astype(dt)
    return BlockSparseMatrix._from_owned(bi, bj, vals, shape, bs, grid, dt)
