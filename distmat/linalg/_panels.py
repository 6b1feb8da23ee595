"""Panel movement for the blocked factorizations (layer 3 internals).

Everything here is collective over the grid (or one of its sub-communicators) and takes the
rank's local array plus global metadata; every rank computes every message size from the
layout alone, so no sizes are exchanged.

- :func:`panel_to_root` gathers a column panel ``A[r0:, c0:c0+cw]`` on one rank (one
  ``Alltoallv``), which factors it and broadcasts the result: the factorization of a panel is
  computed once, so every rank sees the same pivots and the same ``info``.
- :func:`exchange_rows` applies a row permutation to the local columns of a process column
  with one ``Alltoallv`` over the column communicator (whole rows, one message per pair of
  process rows).
- :func:`cols_along_rows` replicates a column panel along grid rows and
  :func:`rows_along_cols` a row panel along grid columns.
"""

from __future__ import annotations

import numpy as np

from .. import comm as _c
from ..grid import ProcessGrid
from ..layout import Layout, global_to_local, owner_of

__all__ = ["Index", "panel_to_root", "exchange_rows", "cols_along_rows", "rows_along_cols",
           "default_panel", "ipiv_to_perm"]

#: Default algorithmic panel width (columns factored per step): wide enough that the
#: trailing update is one large GEMM, independent of the storage block.
DEFAULT_PANEL = 128


def default_panel(n: int) -> int:
    """The algorithmic panel width used when the caller gives none."""
    return max(1, min(DEFAULT_PANEL, n))


def ipiv_to_perm(ip: np.ndarray, m: int) -> np.ndarray:
    """The row order that LAPACK's pivots ``ip`` (0-based, row ``i`` swapped with ``ip[i]``,
    in turn) give ``m`` rows: row ``i`` of the result is old row ``perm[i]``."""
    perm = np.arange(m, dtype=np.int64)
    for i in range(ip.size):
        j = int(ip[i])
        if j != i:
            perm[i], perm[j] = perm[j], perm[i]
    return perm


class Index:
    """Global row and column indices of every process row and column of a layout.

    ``rows[r]`` are the global rows stored on process row ``r`` (increasing), ``cols[c]`` the
    columns on process column ``c``; ``myrows`` and ``mycols`` are this rank's.
    """

    def __init__(self, layout: Layout, grid: ProcessGrid):
        self.layout = layout
        self.grid = grid
        pr, pc = grid.shape
        self.rows = [layout.rows(r) for r in range(pr)]
        self.cols = [layout.cols(c) for c in range(pc)]
        self.myrows = self.rows[grid.myrow]
        self.mycols = self.cols[grid.mycol]

    def row_start(self, g: int, prow: int | None = None) -> int:
        """Number of local rows (of process row ``prow``, default mine) with global index < g."""
        rows = self.myrows if prow is None else self.rows[prow]
        return int(np.searchsorted(rows, g))

    def col_start(self, g: int, pcol: int | None = None) -> int:
        """Number of local columns (of process column ``pcol``, default mine) below ``g``."""
        cols = self.mycols if pcol is None else self.cols[pcol]
        return int(np.searchsorted(cols, g))

    def owner_rank(self, i: int, j: int) -> int:
        """Grid rank owning global entry ``(i, j)``."""
        return self.grid.rank_of(int(self.layout.row_owner(i)), int(self.layout.col_owner(j)))


def panel_to_root(idx: Index, local: np.ndarray, r0: int, c0: int, cw: int, root: int
                  ) -> np.ndarray | None:
    """Gather the panel ``A[r0:, c0:c0+cw]`` (Fortran order) on grid rank ``root``.

    Collective over the grid.  Returns the panel on ``root`` and None elsewhere.
    """
    grid = idx.grid
    m = idx.layout.shape[0]
    lr0 = idx.row_start(r0)
    lc0, lc1 = idx.col_start(c0), idx.col_start(c0 + cw)
    piece = np.ascontiguousarray(local[lr0:, lc0:lc1])
    if grid.size == 1:
        return np.asfortranarray(piece)
    p = grid.size
    sendcounts = np.zeros(p, dtype=np.int64)
    sendcounts[root] = piece.size
    recvcounts = np.zeros(p, dtype=np.int64)
    spans = []
    if grid.rank == root:
        pc = grid.shape[1]
        for q in range(p):
            r, c = divmod(q, pc)
            a = idx.row_start(r0, r)
            b0, b1 = idx.col_start(c0, c), idx.col_start(c0 + cw, c)
            spans.append((r, c, a, b0, b1))
            recvcounts[q] = (idx.rows[r].size - a) * (b1 - b0)
    recv = np.empty(int(recvcounts.sum()), dtype=local.dtype)
    _c.alltoallv(grid.comm, piece.ravel(), sendcounts, recv, recvcounts)
    if grid.rank != root:
        return None
    out = np.empty((m - r0, cw), dtype=local.dtype, order="F")
    off = 0
    for (r, c, a, b0, b1), cnt in zip(spans, recvcounts, strict=True):
        if cnt == 0:
            continue
        ri = idx.rows[r][a:] - r0
        ci = idx.cols[c][b0:b1] - c0
        out[np.ix_(ri, ci)] = recv[off:off + cnt].reshape(ri.size, ci.size)
        off += cnt
    return out


def exchange_rows(idx: Index, local: np.ndarray, dst: np.ndarray, src: np.ndarray) -> None:
    """Row ``dst[i]`` of the global matrix becomes old row ``src[i]``, in every local column.

    Collective over the column communicator (a no-op message-wise on one process row).
    ``dst`` and ``src`` are global row indices, the same on every rank; rows not listed keep
    their values.  Rows travel whole: one message per pair of process rows.
    """
    if dst.size == 0:
        return
    grid = idx.grid
    mb, pr = idx.layout.block[0], grid.shape[0]
    ld = global_to_local(dst, mb, pr)
    ls = global_to_local(src, mb, pr)
    if pr == 1:
        local[ld] = local[ls]
        return
    me = grid.myrow
    od = owner_of(dst, mb, pr)
    os_ = owner_of(src, mb, pr)
    ncols = local.shape[1]
    keep = np.nonzero((os_ == me) & (od == me))[0]
    snd = np.nonzero((os_ == me) & (od != me))[0]
    snd = snd[np.argsort(od[snd], kind="stable")]
    rcv = np.nonzero((od == me) & (os_ != me))[0]
    rcv = rcv[np.argsort(os_[rcv], kind="stable")]
    sendbuf = np.ascontiguousarray(local[ls[snd]])
    kept = local[ls[keep]]
    sendcounts = np.bincount(od[snd], minlength=pr).astype(np.int64) * ncols
    recvcounts = np.bincount(os_[rcv], minlength=pr).astype(np.int64) * ncols
    recvbuf = np.empty((rcv.size, ncols), dtype=local.dtype)
    _c.alltoallv(grid.col_comm, sendbuf.ravel(), sendcounts, recvbuf.ravel(), recvcounts)
    local[ld[keep]] = kept
    local[ld[rcv]] = recvbuf


def cols_along_rows(idx: Index, local: np.ndarray, lr0: int, lr1: int, c0: int, cw: int
                    ) -> np.ndarray:
    """Local rows ``lr0:lr1`` of the global columns ``c0:c0+cw``, on every rank of the row.

    Collective over the row communicator.  Returns a ``(lr1 - lr0) x cw`` array.
    """
    grid = idx.grid
    lc0, lc1 = idx.col_start(c0), idx.col_start(c0 + cw)
    if grid.shape[1] == 1:
        return np.ascontiguousarray(local[lr0:lr1, lc0:lc1])
    owners = {int(o) for o in idx.layout.col_owner(np.arange(c0, c0 + cw))} if cw else set()
    if len(owners) == 1:
        root = owners.pop()
        if grid.mycol == root:
            buf = np.ascontiguousarray(local[lr0:lr1, lc0:lc1])
        else:
            buf = np.empty((lr1 - lr0, cw), dtype=local.dtype)
        if buf.size:
            _c.bcast(grid.row_comm, buf, root)
        return buf
    buf = np.zeros((lr1 - lr0, cw), dtype=local.dtype)
    buf[:, idx.mycols[lc0:lc1] - c0] = local[lr0:lr1, lc0:lc1]
    if buf.size:
        _c.allreduce(grid.row_comm, buf)
    return buf


def rows_along_cols(idx: Index, parts: list[np.ndarray], r0: int, rw: int) -> list[np.ndarray]:
    """Global rows ``r0:r0+rw`` of several column blocks, on every rank of the column.

    Each part holds this rank's local rows that fall in ``r0:r0+rw`` (rows distributed as in
    ``idx``; ``idx.row_start(r0+rw) - idx.row_start(r0)`` of them) and any number of columns.
    One all-reduce over the column communicator assembles all of them.  Returns one
    ``rw x ncols`` array per part.  Collective over the column communicator.
    """
    grid = idx.grid
    widths = [p.shape[1] for p in parts]
    dtype = np.result_type(*[p.dtype for p in parts])
    if grid.shape[0] == 1:
        return [np.array(p, dtype=dtype) for p in parts]
    a, b = idx.row_start(r0), idx.row_start(r0 + rw)
    buf = np.zeros((rw, sum(widths)), dtype=dtype)
    ri = idx.myrows[a:b] - r0
    off = 0
    for p, w in zip(parts, widths, strict=True):
        buf[ri, off:off + w] = p
        off += w
    if buf.size:
        _c.allreduce(grid.col_comm, buf)
    out, off = [], 0
    for w in widths:
        out.append(buf[:, off:off + w])
        off += w
    return out
