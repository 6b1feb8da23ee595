"""Sparse x dense products ``S @ X`` (SpMM; SpMV when ``X`` has one column).

Algorithm (collective over the grid), read as "fetch, local kernel, reduce":

1. ``X`` is brought to row block ``bs`` if needed (its column blocking is kept).
2. Each rank asks, for the block columns ``J`` where its part of ``S`` has stored blocks,
   the owners of ``X``'s block row ``J`` (process row ``J % pr``, every process column)
   for their column slice of it: one all-to-all of the requests, one of the rows.  Block
   columns without stored blocks are never fetched, so traffic follows the sparsity.
3. The local kernel multiplies the local blocks with the fetched rows (batched BLAS on
   ``(nnzb, bs, bs)`` blocks and a segmented sum over block rows, or scipy's BSR kernel for
   small blocks) giving partial rows of ``C`` for the local block rows.
4. The partial rows are summed, along the grid row, on the owners of ``C``'s blocks (one
   all-to-all over the row communicator; only non-empty block rows travel).

The result has block ``(bs, X.block[1])``.  Traffic is labelled ``sparse.spmm``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .. import comm as _c
from ..errors import ShapeMismatchError
from ..layout import numroc
from ..matrix import DistMatrix, check_same_grid
from ._exchange import exchange_bytes, route_blocks
from .bsr import BlockSparseMatrix, nblocks

__all__ = ["spmm", "local_product"]

#: Blocks per chunk of the batched kernel (bounds the temporary to ~chunk * bs * k entries).
_CHUNK_ENTRIES = 1 << 21


def local_product(indptr: np.ndarray, pos: np.ndarray, data: np.ndarray, Xn: np.ndarray
                  ) -> np.ndarray:
    """``Y[li] = sum_t data[t] @ Xn[pos[t]]`` over the blocks ``t`` of local block row ``li``.

    ``data`` is ``(nnzb, bs, bs)``, ``Xn`` is ``(nJ, bs, k)``; returns ``(nlbr, bs, k)``.
    """
    nlbr = indptr.size - 1
    nnzb, bs, k = data.shape[0], Xn.shape[1], Xn.shape[2]
    dt = np.result_type(data.dtype, Xn.dtype)
    Y = np.zeros((nlbr, bs, k), dtype=dt)
    if nnzb == 0 or k == 0:
        return Y
    if bs < 16 or k < 4:
        L = sp.bsr_array((data.astype(dt, copy=False), pos, indptr),
                         shape=(nlbr * bs, Xn.shape[0] * bs))
        return np.asarray(L @ Xn.reshape(-1, k).astype(dt, copy=False)).reshape(nlbr, bs, k)
    rows = np.repeat(np.arange(nlbr, dtype=np.int64), np.diff(indptr))
    step = max(1, _CHUNK_ENTRIES // (bs * k))
    for t0 in range(0, nnzb, step):
        t1 = min(nnzb, t0 + step)
        prod = np.matmul(data[t0:t1], Xn[pos[t0:t1]])
        r = rows[t0:t1]
        starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
        Y[r[starts]] += np.add.reduceat(prod, starts, axis=0)
    return Y


def spmm(S: BlockSparseMatrix, X: DistMatrix, *, method: str = "auto") -> DistMatrix:
    """``S @ X`` for a block-sparse ``S`` and a dense DistMatrix ``X``. Collective over the grid.

    Parameters
    ----------
    S : BlockSparseMatrix
        ``m x n`` **(global)**.
    X : DistMatrix
        ``n x k`` on the same grid **(global)**.  Its row block should be ``S``'s block size;
        otherwise it is redistributed first (the result then has block ``(bs, X.block[1])``).

    method : {"auto", "rows", "blocks"}
        **(global)** ``"rows"``: fetch the needed rows of ``X`` and sum partial rows of ``C``
        (steps 2-4 of the module notes; traffic follows the non-empty block rows and
        columns, best when ``k`` is small against ``bs * density * n``).  ``"blocks"``:
        sparse SUMMA, the stored blocks of ``S`` are all-gathered along the grid rows and
        each rank fetches, down its grid column, the rows of its own columns of ``X`` (traffic
        proportional to the stored blocks, no reduction).  ``"auto"`` estimates both
        volumes from local counts (one small all-reduce) and takes the smaller.

    Returns
    -------
    DistMatrix
        ``m x k`` with block ``(bs, X.block[1])``.

    Raises
    ------
    ShapeMismatchError
        On every rank if ``S.shape[1] != X.shape[0]`` (the message names both shapes).
    """
    if not isinstance(X, DistMatrix):
        raise TypeError(f"X must be a DistMatrix, got {type(X).__name__}")
    if S.shape[1] != X.shape[0]:
        raise ShapeMismatchError(f"S @ X: shapes {S.shape} and {X.shape} do not conform "
                                 f"({S.shape[1]} != {X.shape[0]})")
    check_same_grid(X, _GridHolder(S), "S @ X")
    grid, bs = S.grid, S.bs
    pr, pc = grid.shape
    m, k = S.shape[0], X.shape[1]
    if method not in ("auto", "rows", "blocks"):
        raise ValueError(f"method must be 'auto', 'rows' or 'blocks', got {method!r}")
    dt = np.result_type(S.dtype, X.dtype)
    with _c.operation("sparse.spmm"):
        if X.block[0] != bs:
            X = X.redistribute(block=(bs, X.block[1]))
        if method == "auto":
            method = _choose(S, X, dt)
        if method == "blocks":
            return _spmm_blocks(S, X, dt)
        kb = X.block[1]
        lay = X.layout
        # ---- 2. fetch the needed block rows of X
        _, bj = S.block_coords()
        need = np.unique(bj)
        owner_row = need % pr
        parts = []
        for rank in range(grid.size):
            parts.append(need[owner_row == rank // pc].view(np.uint8))
        reqs = exchange_bytes(grid.comm, parts)
        lr, lc = X.local.shape
        nlbx = nblocks(lr, bs)
        Xp = X.local
        if lr != nlbx * bs:
            Xp = np.zeros((nlbx * bs, lc), dtype=X.dtype)
            Xp[:lr] = X.local
        Xb = Xp.reshape(nlbx, bs, lc)
        resp = []
        for rank in range(grid.size):
            J = reqs[rank].view(np.int64)
            resp.append(np.ascontiguousarray(Xb[J // pr], dtype=dt).reshape(-1).view(np.uint8)
                        if J.size and lc else np.empty(0, np.uint8))
        rows_in = exchange_bytes(grid.comm, resp)
        Xn = np.zeros((need.size, bs, k), dtype=dt)
        ar = np.arange(bs)[None, :, None]
        for rank in range(grid.size):
            r, c = divmod(rank, pc)
            cols = lay.cols(c)
            got = rows_in[rank]
            if got.size == 0 or cols.size == 0:
                continue
            p = np.flatnonzero(owner_row == r)
            Xn[p[:, None, None], ar, cols[None, None, :]] = \
                got.view(dt).reshape(p.size, bs, cols.size)
        # ---- 3. local kernel
        pos = np.searchsorted(need, bj)
        Y = local_product(S.indptr, pos, S.data, Xn)
        # ---- 4. sum partial rows on C's owners along the grid row
        nz_rows = np.flatnonzero(np.diff(S.indptr))
        sends = []
        for c in range(pc):
            cols = lay.cols(c)
            if nz_rows.size == 0 or cols.size == 0:
                sends.append(np.empty(0, np.uint8))
                continue
            vals = np.ascontiguousarray(Y[nz_rows][:, :, cols])
            sends.append(np.concatenate([nz_rows.astype(np.int64).view(np.uint8),
                                         vals.reshape(-1).view(np.uint8)]))
        parts_in = exchange_bytes(grid.row_comm, sends)
        myrows = numroc(m, bs, grid.myrow, pr)
        nlbr = nblocks(myrows, bs)
        mycols = numroc(k, kb, grid.mycol, pc)
        Cb = np.zeros((nlbr, bs, mycols), dtype=dt)
        rec = 8 + bs * mycols * dt.itemsize
        for got in parts_in:
            if got.size == 0 or mycols == 0:
                continue
            nr = got.size // rec
            li = got[:8 * nr].view(np.int64)
            Cb[li] += got[8 * nr:].view(dt).reshape(nr, bs, mycols)
    local = np.ascontiguousarray(Cb.reshape(nlbr * bs, mycols)[:myrows])
    return DistMatrix._wrap(local, (m, k), (bs, kb), grid)


def _choose(S: BlockSparseMatrix, X: DistMatrix, dt: np.dtype) -> str:
    """Pick the plan with the smaller estimated traffic (one all-reduce of two numbers)."""
    grid, bs = S.grid, S.bs
    pr, pc = grid.shape
    k, item = X.shape[1], dt.itemsize
    _, bj = S.block_coords()
    nj = np.unique(bj).size
    ni = int(np.count_nonzero(np.diff(S.indptr)))
    rows_plan = (nj * (pr * pc - 1) / max(pr * pc, 1) + ni * (pc - 1) / max(pc, 1)) * bs * k
    kloc = -(-k // pc)
    blocks_plan = S.local_nnzb * (bs * bs + 16 / item) * (pc - 1) \
        + nj * bs * kloc * (pr - 1) / max(pr, 1)
    est = np.array([rows_plan, blocks_plan], dtype=np.float64)
    _c.allreduce(grid.comm, est)
    return "rows" if est[0] <= est[1] else "blocks"


def _spmm_blocks(S: BlockSparseMatrix, X: DistMatrix, dt: np.dtype) -> DistMatrix:
    """Sparse SUMMA: all-gather ``S``'s stored blocks along grid rows, fetch ``X`` rows down
    grid columns, multiply locally.  Called inside the ``sparse.spmm`` operation."""
    grid, bs = S.grid, S.bs
    pr, pc = grid.shape
    m, k = S.shape[0], X.shape[1]
    kb = X.block[1]
    bi, bj = S.block_coords()
    if pc > 1:
        bi, bj, data = route_blocks(grid.row_comm, "all", bi, bj, S.data, bs, S.dtype)
    else:
        data = S.data
    li = bi // pr
    order = np.lexsort((bj, li))
    li, bj, data = li[order], bj[order], data[order]
    myrows = numroc(m, bs, grid.myrow, pr)
    nlbr = nblocks(myrows, bs)
    indptr = np.zeros(nlbr + 1, dtype=np.int64)
    np.cumsum(np.bincount(li, minlength=nlbr), out=indptr[1:])
    need = np.unique(bj)
    owner = need % pr
    # rows of my own columns of X: they live in my grid column, on process row J % pr
    reqs = exchange_bytes(grid.col_comm, [need[owner == r].view(np.uint8) for r in range(pr)])
    lr, lc = X.local.shape
    nlbx = nblocks(lr, bs)
    Xp = X.local
    if lr != nlbx * bs:
        Xp = np.zeros((nlbx * bs, lc), dtype=X.dtype)
        Xp[:lr] = X.local
    Xb = Xp.reshape(nlbx, bs, lc)
    resp = []
    for r in range(pr):
        J = reqs[r].view(np.int64)
        resp.append(np.ascontiguousarray(Xb[J // pr], dtype=dt).reshape(-1).view(np.uint8)
                    if J.size and lc else np.empty(0, np.uint8))
    got = exchange_bytes(grid.col_comm, resp)
    Xn = np.zeros((need.size, bs, lc), dtype=dt)
    for r in range(pr):
        if got[r].size:
            p = np.flatnonzero(owner == r)
            Xn[p] = got[r].view(dt).reshape(p.size, bs, lc)
    Y = local_product(indptr, np.searchsorted(need, bj), data, Xn)
    local = np.ascontiguousarray(Y.reshape(nlbr * bs, lc)[:myrows])
    return DistMatrix._wrap(local, (m, k), (bs, kb), grid)


class _GridHolder:
    """Adapter so :func:`distmat.matrix.check_same_grid` can compare a sparse operand's grid."""

    def __init__(self, S: BlockSparseMatrix):
        self.grid = S.grid
