"""Sparse x sparse products ``C = A @ B`` with DBCSR-style filtering.

Algorithm (collective over the grid): rank ``(p, q)`` holds the blocks ``A_IK`` with ``I % pr ==
p`` and ``K % pc == q``. It asks the owners of ``B``'s block rows ``K`` (process row ``K % pr``,
every process column) for the stored blocks of those rows (one all-to-all of requests, one of
blocks), forms every product ``A_IK @ B_KJ`` it can (one BLAS GEMM per result block over its
concatenated pairs: a loop over result blocks, not elements), sums the products per result block
and sends each partial block to the owner of ``C_IJ``, where partial blocks are summed (one more
all-to-all). Every message carries stored blocks only, so traffic follows the sparsity; it is
labelled ``sparse.matmul``.

Filtering (DBCSR's rule), with ``eps = filter_eps``:

1. a block product is skipped when ``||A_IK||_F * ||B_KJ||_F < eps / N``, where ``N`` is the
   largest number of stored blocks in a block row of ``A`` (an upper bound on the number of
   products summed into one result block);
2. a result block whose Frobenius norm is below ``eps`` is dropped.

So every result block differs from the exact product's block by less than ``2 eps`` in the
Frobenius norm (``eps`` from skipped products, ``eps`` from dropping), and the whole result by
less than ``2 eps sqrt(nnzb_exact)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mpi4py import MPI

from .. import comm as _c
from ..errors import GridMismatchError, ShapeMismatchError
from ._exchange import exchange_bytes, route_blocks
from .bsr import BlockSparseMatrix

__all__ = ["matmul"]

def _block_norms(data: np.ndarray) -> np.ndarray:
    a = np.abs(data.reshape(data.shape[0], data.shape[1] * data.shape[2])).astype(np.float64)
    return np.sqrt(np.einsum("ij,ij->i", a, a))


def matmul(A: BlockSparseMatrix, B: BlockSparseMatrix, *, filter_eps: float | None = None,
           retain_sparsity: bool = False, C: BlockSparseMatrix | None = None,
           return_info: bool = False) -> Any:
    """``A @ B`` for two block-sparse matrices. Collective over the grid.

    Parameters
    ----------
    A, B : BlockSparseMatrix
        ``m x k`` and ``k x n`` on the same grid with the same block size **(global)**.
    filter_eps : float, optional
        DBCSR filtering threshold **(global)** (see the module notes); None: exact product.
    retain_sparsity : bool
        Compute only the blocks present in ``C``'s sparsity pattern (DBCSR's
        ``retain_sparsity``); the others are never formed.  Requires ``C``.
    C : BlockSparseMatrix, optional
        ``m x n`` pattern for ``retain_sparsity`` **(global)** (its values are not used).
    return_info : bool
        Also return a dict of global figures: ``flops`` actually done (``2 bs^3`` per block
        product), ``products`` formed, ``skipped`` products, ``dropped_blocks``.

    Returns
    -------
    BlockSparseMatrix, or (BlockSparseMatrix, dict) with ``return_info``.

    Raises
    ------
    ShapeMismatchError
        On every rank if ``A.shape[1] != B.shape[0]`` (naming both shapes).
    """
    for name, M in (("A", A), ("B", B)):
        if not isinstance(M, BlockSparseMatrix):
            raise TypeError(f"{name} must be a BlockSparseMatrix, got {type(M).__name__}")
    if A.shape[1] != B.shape[0]:
        raise ShapeMismatchError(f"A @ B: shapes {A.shape} and {B.shape} do not conform")
    if not A.grid.compatible(B.grid):
        raise GridMismatchError("A @ B: operands live on different process grids")
    if A.bs != B.bs:
        raise ValueError(f"A @ B: block sizes differ ({A.bs} and {B.bs})")
    if filter_eps is not None and (not np.isfinite(filter_eps) or filter_eps < 0):
        raise ValueError(f"filter_eps must be None or a finite number >= 0, got {filter_eps!r}")
    shape = (A.shape[0], B.shape[1])
    if retain_sparsity:
        if not isinstance(C, BlockSparseMatrix):
            raise ValueError("retain_sparsity=True needs the pattern C=BlockSparseMatrix")
        if C.shape != shape or C.bs != A.bs:
            raise ShapeMismatchError(f"C has shape {C.shape} (block {C.bs}) but A @ B has "
                                     f"shape {shape} (block {A.bs})")
    grid, bs = A.grid, A.bs
    pr, pc = grid.shape
    dt = np.result_type(A.dtype, B.dtype)
    with _c.operation("sparse.matmul"):
        ai, ak = A.block_coords()
        # ---- fetch the stored blocks of B's block rows K that my A blocks need
        need = np.unique(ak)
        owner_row = need % pr
        reqs = exchange_bytes(grid.comm, [need[owner_row == r // pc].view(np.uint8)
                                          for r in range(grid.size)])
        bi, bj = B.block_coords()
        dest_list, sel_list = [], []
        for r in range(grid.size):
            K = reqs[r].view(np.int64)
            if K.size and bi.size:
                sel = np.flatnonzero(np.isin(bi, K))
                sel_list.append(sel)
                dest_list.append(np.full(sel.size, r, dtype=np.int64))
        sel = np.concatenate(sel_list) if sel_list else np.empty(0, np.int64)
        dest = np.concatenate(dest_list) if dest_list else np.empty(0, np.int64)
        gk, gj, gd = route_blocks(grid.comm, dest, bi[sel], bj[sel], B.data[sel], bs, B.dtype)
        # ---- pairs (A block t, B block u) with the same K
        order = np.argsort(gk, kind="stable")
        gk, gj, gd = gk[order], gj[order], gd[order]
        lo = np.searchsorted(gk, ak, side="left")
        hi = np.searchsorted(gk, ak, side="right")
        cnt = hi - lo
        t = np.repeat(np.arange(ak.size, dtype=np.int64), cnt)
        start = np.repeat(lo - np.concatenate([[0], np.cumsum(cnt)[:-1]]) if cnt.size else
                          np.empty(0, np.int64), cnt)
        u = np.arange(t.size, dtype=np.int64) + start
        ri, rj = ai[t], gj[u]
        npairs = t.size
        if retain_sparsity:
            ci, cj = C.block_coords()
            # C's pattern of my result rows lives on my grid row: gather its keys along it
            nb = max(B.shape[1] // bs + 1, 1)
            mykeys = (ci * nb + cj).astype(np.int64).view(np.uint8)
            allkeys = np.concatenate(exchange_bytes(grid.row_comm, [mykeys] * pc)).view(np.int64)
            keep = np.isin(ri * nb + rj, allkeys)
            t, u, ri, rj = t[keep], u[keep], ri[keep], rj[keep]
        skipped_local = npairs - t.size
        eps = None if filter_eps is None else float(filter_eps)
        if eps is not None and eps > 0:
            # N: the most stored blocks in one block row of A (a row is spread over the grid
            # row: sum along it, then the maximum over the grid)
            cnts = np.diff(A.indptr).astype(np.int64)
            _c.allreduce(grid.row_comm, cnts)
            nmax = np.array([int(cnts.max()) if cnts.size else 0], dtype=np.int64)
            _c.allreduce(grid.comm, nmax, op=MPI.MAX)
            na, nbn = _block_norms(A.data), _block_norms(gd)
            ok = na[t] * nbn[u] >= eps / max(int(nmax[0]), 1)
            skipped_local += int(t.size - np.count_nonzero(ok))
            t, u, ri, rj = t[ok], u[ok], ri[ok], rj[ok]
        # ---- products, summed per result block
        nbc = max(-(-B.shape[1] // bs), 1)
        key = ri * nbc + rj
        order = np.argsort(key, kind="stable")
        t, u, key = t[order], u[order], key[order]
        ukey, first = np.unique(key, return_index=True)
        out = np.empty((ukey.size, bs, bs), dtype=dt)
        Ad = A.data.astype(dt, copy=False)
        Bd = gd.astype(dt, copy=False)
        ends = np.r_[first[1:], key.size].astype(np.int64)
        # one GEMM per result block: [A_IK1 .. A_IKr] (bs x r bs) @ [B_K1J; ..; B_KrJ]
        for o in range(ukey.size):
            s0, s1 = first[o], ends[o]
            if s1 - s0 == 1:
                np.matmul(Ad[t[s0]], Bd[u[s0]], out=out[o])
            else:
                r = s1 - s0
                np.matmul(Ad[t[s0:s1]].transpose(1, 0, 2).reshape(bs, r * bs),
                          Bd[u[s0:s1]].reshape(r * bs, bs), out=out[o])
        oi, oj = ukey // nbc, ukey % nbc
        # ---- partial result blocks to the owners of C, summed there
        ci, cj, cd = route_blocks(grid.comm, (oi % pr) * pc + oj % pc, oi, oj, out, bs, dt)
    R = BlockSparseMatrix._from_owned(ci, cj, cd, shape, bs, grid, dt)
    dropped = 0
    if eps is not None:
        keep = _block_norms(R.data) >= eps
        dropped = R.local_nnzb - int(np.count_nonzero(keep))
        ri2, rj2 = R.block_coords()
        R = BlockSparseMatrix._from_owned(ri2[keep], rj2[keep], R.data[keep], shape, bs,
                                          grid, dt)
    figures = np.array([2 * bs ** 3 * t.size, t.size, skipped_local, dropped],
                       dtype=np.int64)
    _c.allreduce(grid.comm, figures)
    R.flops = int(figures[0])
    if not return_info:
        return R
    return R, {"flops": int(figures[0]), "products": int(figures[1]),
               "skipped": int(figures[2]), "dropped_blocks": int(figures[3])}
