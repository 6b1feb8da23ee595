"""Sparse x dense products ``S @ X`` (SpMM; SpMV when ``X`` has one column).

Algorithm (collective over the grid), read as "fetch, local kernel, reduce":

1. ``X`` is brought to row block ``bs`` if needed (its column blocking is kept).
2. Each rank asks, for the block columns ``J`` where its part of ``S`` has stored blocks,
   the owners of ``X``'s block row ``J`` (process row ``J % pr``, every process column)
   for their column slice of it: one all-to-all of the requests, one of the rows.  Block
   columns without stored blocks are never fetched, so traffic follows the sparsity.
3. The local kernel multiplies the local blocks with the fetched rows (one BLAS GEMM per
   block row over its concatenated blocks, or scipy's BSR kernel for small blocks) giving
   partial rows of ``C`` for the local block rows.
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

def local_product(indptr: np.ndarray, pos: np.ndarray, data: np.ndarray, Xn: np.ndarray
                  ) -> np.ndarray:
    """``Y[li] = sum_t data[t] @ Xn[pos[t]]`` over the blocks ``t`` of local block row ``li``.

    ``data`` is ``(nnzb, bs, bs)``, ``Xn`` is ``(nJ, bs, k)``; returns ``(nlbr, bs, k)``.
    Blocks of 16 or more: one BLAS GEMM per non-empty block row, ``[A_IJ1 .. A_IJr]`` (``bs x
    r bs``) times the stacked rows ``[X_J1; ..; X_Jr]`` (a loop over block rows, not
    elements).  Smaller blocks: scipy's compiled BSR kernel (many tiny blocks would make the
    loop the bottleneck).
    """
    nlbr = indptr.size - 1
    nnzb, bs, k = data.shape[0], Xn.shape[1], Xn.shape[2]
    dt = np.result_type(data.dtype, Xn.dtype)
    Y = np.zeros((nlbr, bs, k), dtype=dt)
    if nnzb == 0 or k == 0:
        return Y
    if bs < 16:
        L = sp.bsr_array((data.astype(dt, copy=False), pos, indptr),
                         shape=(nlbr * bs, Xn.shape[0] * bs))
        return np.asarray(L @ Xn.reshape(-1, k).astype(dt, copy=False)).reshape(nlbr, bs, k)
    Xn = Xn.astype(dt, copy=False)
    data = data.astype(dt, copy=False)
    for i in np.flatnonzero(np.diff(indptr)):
        s, e = indptr[i], indptr[i + 1]
        if e - s == 1:
            np.matmul(data[s], Xn[pos[s]], out=Y[i])
        else:
            A = data[s:e].transpose(1, 0, 2).reshape(bs, (e - s) * bs)
            np.matmul(A, Xn[pos[s:e]].reshape((e - s) * bs, k), out=Y[i])
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
    bs = S.bs
    if method not in ("auto", "rows", "blocks"):
        raise ValueError(f"method must be 'auto', 'rows' or 'blocks', got {method!r}")
    dt = np.result_type(S.dtype, X.dtype)
    with _c.operation("sparse.spmm"):
        if X.block[0] != bs:
            X = X.redistribute(block=(bs, X.block[1]))
        key = (X.shape, X.block, dt.str, method)
        cache = S.__dict__.setdefault("_spmm_plans", {})
        plan = cache.get(key)
        if plan is None:
            chosen = _choose(S, X, dt) if method == "auto" else method
            plan = _RowsPlan(S, X, dt) if chosen == "rows" else "blocks"
            cache.clear()  # keep one plan: the structure of S is fixed, X's layout rarely varies
            cache[key] = plan
        if plan == "blocks":
            return _spmm_blocks(S, X, dt)
        return plan.run(S, X)


class _RowsPlan:
    """Communication plan of the ``"rows"`` method for one ``S`` and one layout of ``X``.

    Built once (collective: the requests travel once) and cached on ``S``; each product is then
    one all-to-all of ``X`` rows, the local kernel and, on grids with several columns, one
    all-to-all of partial rows along the grid row, all with precomputed counts.
    """

    def __init__(self, S: BlockSparseMatrix, X: DistMatrix, dt: np.dtype):
        grid, bs = S.grid, S.bs
        pr, pc = grid.shape
        size = grid.size
        lay = X.layout
        self.dt, self.bs, self.k, self.kb = dt, bs, X.shape[1], X.block[1]
        self.m = S.shape[0]
        _, bj = S.block_coords()
        need = np.unique(bj)
        # order the fetched rows by source rank so that a one-column grid receives X's rows
        # already in place
        src_row = need % pr
        order = np.argsort(src_row, kind="stable")
        need = need[order]
        src_row = src_row[order]
        where = np.empty(need.size, dtype=np.int64)
        where[order] = np.arange(need.size)
        self.need = need
        self.pos = where[np.searchsorted(np.sort(need), bj)] if bj.size else bj
        # requests: block rows J go to every rank of process row J % pr
        reqs = exchange_bytes(grid.comm, [need[src_row == r // pc].view(np.uint8)
                                          for r in range(size)])
        self.send_rows = [reqs[r].view(np.int64) // pr for r in range(size)]
        lr, lc = X.local.shape
        self.lc = lc
        self.send_idx = np.concatenate(self.send_rows) if lc else np.empty(0, np.int64)
        self.sendcounts = np.array([rows.size * bs * lc for rows in self.send_rows],
                                   dtype=np.int64)
        self.recv_parts = []  # (rank, positions in need, global columns)
        recvcounts = np.zeros(size, dtype=np.int64)
        for rank in range(size):
            r, c = divmod(rank, pc)
            cols = lay.cols(c)
            p = np.flatnonzero(src_row == r)
            recvcounts[rank] = p.size * bs * cols.size
            if p.size and cols.size:
                self.recv_parts.append((rank, p, cols))
        self.recvcounts = recvcounts
        self.direct = pc == 1  # the receive buffer is Xn itself
        # reduction of partial rows along the grid row (only for pc > 1)
        self.nz_rows = np.flatnonzero(np.diff(S.indptr))
        self.myrows = numroc(self.m, bs, grid.myrow, pr)
        self.nlbr = nblocks(self.myrows, bs)
        self.mycols = numroc(self.k, self.kb, grid.mycol, pc)
        if pc > 1:
            self.col_sets = [lay.cols(c) for c in range(pc)]
            got = exchange_bytes(grid.row_comm, [self.nz_rows.astype(np.int64).view(np.uint8)
                                                 if cols.size else np.empty(0, np.uint8)
                                                 for cols in self.col_sets])
            self.in_rows = [g.view(np.int64) for g in got]
            self.red_send = np.array([self.nz_rows.size * bs * cols.size
                                      for cols in self.col_sets], dtype=np.int64)
            self.red_recv = np.array([rows.size * bs * self.mycols for rows in self.in_rows],
                                     dtype=np.int64)

    def run(self, S: BlockSparseMatrix, X: DistMatrix) -> DistMatrix:
        grid, bs, dt = S.grid, self.bs, self.dt
        lr, lc = X.local.shape
        nlbx = nblocks(lr, bs)
        Xp = X.local
        if lr != nlbx * bs:
            Xp = np.zeros((nlbx * bs, lc), dtype=X.dtype)
            Xp[:lr] = X.local
        sendbuf = np.ascontiguousarray(Xp.reshape(nlbx, bs, lc)[self.send_idx], dtype=dt) \
            if self.send_idx.size else np.empty(0, dt)
        k = self.k
        recvbuf = np.empty(int(self.recvcounts.sum()), dtype=dt)
        _c.alltoallv(grid.comm, sendbuf.reshape(-1), self.sendcounts, recvbuf,
                     self.recvcounts)
        if self.direct:
            Xn = recvbuf.reshape(self.need.size, bs, k)
        else:
            Xn = np.zeros((self.need.size, bs, k), dtype=dt)
            off = np.zeros(grid.size + 1, dtype=np.int64)
            np.cumsum(self.recvcounts, out=off[1:])
            ar = np.arange(bs)[None, :, None]
            for rank, p, cols in self.recv_parts:
                Xn[p[:, None, None], ar, cols[None, None, :]] = \
                    recvbuf[off[rank]:off[rank + 1]].reshape(p.size, bs, cols.size)
        Y = local_product(S.indptr, self.pos, S.data, Xn)
        if grid.shape[1] == 1:
            Cb = Y
        else:
            Ynz = Y[self.nz_rows]
            sendbuf = np.concatenate([Ynz[:, :, cols].reshape(-1) for cols in self.col_sets])
            recvbuf = np.empty(int(self.red_recv.sum()), dtype=dt)
            _c.alltoallv(grid.row_comm, sendbuf, self.red_send, recvbuf, self.red_recv)
            Cb = np.zeros((self.nlbr, bs, self.mycols), dtype=dt)
            off = 0
            for rows in self.in_rows:
                cnt = rows.size * bs * self.mycols
                if cnt:
                    Cb[rows] += recvbuf[off:off + cnt].reshape(rows.size, bs, self.mycols)
                off += cnt
        local = np.ascontiguousarray(Cb.reshape(self.nlbr * bs, Cb.shape[2])[:self.myrows])
        return DistMatrix._wrap(local, (self.m, k), (bs, self.kb), grid)


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
