"""Moving matrix entries between layouts: the one engine behind scatter, gather, transpose and
redistribution (layer 2).

Every rank computes, from global metadata alone, which of its local rows and columns go to
which destination coordinate (and, symmetrically, which source coordinate sends it what), so
one ``Alltoallv`` moves everything with no other message.  Rows and columns are grouped by
owner with a stable sort, so each rank-to-rank piece is a rectangular slice of a permuted
local array and needs no per-element index in the message.  Pieces are packed and unpacked
as rectangles of consecutive rows and columns (a block-cyclic layout has few), straight
between the local arrays and the message buffers; only layouts too fragmented for that go
through numpy's fancy indexing, which costs about ten plain copies per permuted axis.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from . import comm as _c
from .layout import Layout, split_by_owner

__all__ = ["exchange"]


def _coord_of(ranks: np.ndarray | None, me: int) -> tuple[int, int] | None:
    if ranks is None:
        return None
    hit = np.argwhere(ranks == me)
    return (int(hit[0, 0]), int(hit[0, 1])) if hit.size else None


def _by_rank(ranks: np.ndarray) -> list[tuple[int, int, int]]:
    """(rank, row, col) of each coordinate of ``ranks``, sorted by rank."""
    pr, pc = ranks.shape
    return sorted((int(ranks[i, j]), i, j) for i in range(pr) for j in range(pc))


# Above this many rectangle copies per rank the run-wise copies lose to numpy's fancy
# indexing (a block-cyclic layout with tiny blocks splits into many short runs).
MAX_RUN_COPIES = 4096


def _runs(perm: np.ndarray | None, offsets: np.ndarray, group: int
          ) -> list[tuple[int, int, int]]:
    """``(first local index, length, position in the group)`` of the maximal runs of
    consecutive local indices in ``group`` of a :func:`split_by_owner` grouping."""
    lo, hi = int(offsets[group]), int(offsets[group + 1])
    if hi <= lo:
        return []
    if perm is None:
        return [(lo, hi - lo, 0)]
    idx = perm[lo:hi]
    cut = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = np.concatenate(([0], cut))
    ends = np.concatenate((cut, [idx.size]))
    return [(int(idx[a]), int(b - a), int(a)) for a, b in zip(starts, ends, strict=True)]


def _plan(pr: tuple, pc: tuple, groups: list[tuple[int, int]]) -> list | None:
    """Run lists of the row and column groups, or None when they are too fragmented."""
    rr = {a: _runs(*pr, a) for a in {g[0] for g in groups}}
    cc = {b: _runs(*pc, b) for b in {g[1] for g in groups}}
    if sum(len(rr[a]) * len(cc[b]) for a, b in groups) > MAX_RUN_COPIES:
        return None
    return [(rr[a], cc[b]) for a, b in groups]


def exchange(comm: MPI.Comm, local: np.ndarray | None, src: Layout, src_ranks: np.ndarray,
             dst: Layout, dst_ranks: np.ndarray, *, transpose: bool = False,
             dtype: np.dtype | None = None) -> np.ndarray | None:
    """Move a matrix from layout ``src`` to layout ``dst``. Collective over ``comm``.

    Parameters
    ----------
    comm : MPI.Comm
        A communicator containing every process of both layouts **(global)**.
    local : ndarray or None
        This rank's local array under ``src`` (None on ranks outside ``src_ranks``).
    src, dst : Layout
        Source and destination layouts **(global)**.  With ``transpose`` the destination
        holds the transpose, so ``dst.shape == src.shape[::-1]``.
    src_ranks, dst_ranks : ndarray of int
        Rank in ``comm`` of each grid coordinate of ``src`` and ``dst`` **(global)**.
    transpose : bool
        Store entry ``(i, j)`` of the source at ``(j, i)`` of the destination.
    dtype : numpy dtype, optional
        Element type of the result **(global)**; default the source's.

    Returns
    -------
    ndarray or None
        This rank's local array under ``dst``, or None on ranks outside ``dst_ranks``.
    """
    me = comm.Get_rank()
    size = comm.Get_size()
    dtype = np.dtype(dtype if dtype is not None else local.dtype)  # type: ignore[union-attr]
    sendcounts = np.zeros(size, dtype=np.int64)
    recvcounts = np.zeros(size, dtype=np.int64)
    (dpr, dpc), (spr, spc) = dst.grid_shape, src.grid_shape

    # ---- pack: group my rows/columns by their destination coordinate
    scoord = _coord_of(src_ranks, me)
    sendbuf = np.empty(0, dtype=dtype)
    if scoord is not None:
        rows, cols = src.rows(scoord[0]), src.cols(scoord[1])
        if not transpose:
            rkey, ckey, nr, nc = dst.row_owner(rows), dst.col_owner(cols), dpr, dpc
        else:
            rkey, ckey, nr, nc = dst.col_owner(rows), dst.row_owner(cols), dpc, dpr
        perm_r, off_r = split_by_owner(rkey, nr)
        perm_c, off_c = split_by_owner(ckey, nc)
        dests = [(rank, (dr, dc) if not transpose else (dc, dr))
                 for rank, dr, dc in _by_rank(dst_ranks)]
        plan = _plan((perm_r, off_r), (perm_c, off_c), [ab for _, ab in dests])
        L = local
        if plan is None:   # fragmented: permute whole axes with numpy's fancy indexing
            if perm_r is not None:
                L = L[perm_r]
            if perm_c is not None:
                L = L[:, perm_c]
        sendbuf = np.empty(local.size, dtype=dtype)
        pos = 0
        for i, (rank, (a, b)) in enumerate(dests):
            shp = (int(off_r[a + 1] - off_r[a]), int(off_c[b + 1] - off_c[b]))
            cnt = shp[0] * shp[1]
            if cnt:
                piece = sendbuf[pos:pos + cnt].reshape(shp[::-1] if transpose else shp)
                if plan is None:
                    blk = L[off_r[a]:off_r[a + 1], off_c[b]:off_c[b + 1]]
                    piece[...] = blk.T if transpose else blk
                else:   # copy the rectangles of consecutive rows and columns straight in
                    for r0, rl, rp in plan[i][0]:
                        for c0, cl, cp in plan[i][1]:
                            blk = local[r0:r0 + rl, c0:c0 + cl]
                            if transpose:
                                piece[cp:cp + cl, rp:rp + rl] = blk.T
                            else:
                                piece[rp:rp + rl, cp:cp + cl] = blk
            sendcounts[rank] += cnt
            pos += cnt

    # ---- receive plan: group my destination rows/columns by their source coordinate
    dcoord = _coord_of(dst_ranks, me)
    out = None
    if dcoord is not None:
        rows, cols = dst.rows(dcoord[0]), dst.cols(dcoord[1])
        if not transpose:
            rkey, ckey, nr, nc = src.row_owner(rows), src.col_owner(cols), spr, spc
        else:
            rkey, ckey, nr, nc = src.col_owner(rows), src.row_owner(cols), spc, spr
        rperm, roff = split_by_owner(rkey, nr)
        cperm, coff = split_by_owner(ckey, nc)
        pieces = []
        for rank, sr, sc in _by_rank(src_ranks):
            a, b = (sr, sc) if not transpose else (sc, sr)
            shp = (int(roff[a + 1] - roff[a]), int(coff[b + 1] - coff[b]))
            pieces.append((rank, roff[a], coff[b], shp, (a, b)))
            recvcounts[rank] += shp[0] * shp[1]
        rplan = _plan((rperm, roff), (cperm, coff), [p[4] for p in pieces])
    recvbuf = np.empty(int(recvcounts.sum()), dtype=dtype)

    _c.alltoallv(comm, sendbuf, sendcounts, recvbuf, recvcounts)

    if dcoord is not None:
        displ = np.zeros(size + 1, dtype=np.int64)
        np.cumsum(recvcounts, out=displ[1:])
        if rplan is not None:   # each received rectangle straight to its place
            out = np.empty((rows.size, cols.size), dtype=dtype)
            for (rank, _, _, shp, _), (rruns, cruns) in zip(pieces, rplan, strict=True):
                cnt = shp[0] * shp[1]
                if cnt:
                    piece = recvbuf[displ[rank]:displ[rank] + cnt].reshape(shp)
                    for r0, rl, rp in rruns:
                        for c0, cl, cp in cruns:
                            out[r0:r0 + rl, c0:c0 + cl] = piece[rp:rp + rl, cp:cp + cl]
            return out
        out_p = np.empty((rows.size, cols.size), dtype=dtype)
        for rank, r0, c0, shp, _ in pieces:
            cnt = shp[0] * shp[1]
            if cnt:
                out_p[r0:r0 + shp[0], c0:c0 + shp[1]] = \
                    recvbuf[displ[rank]:displ[rank] + cnt].reshape(shp)
        if rperm is None and cperm is None:
            out = out_p
        else:
            out = np.empty_like(out_p)
            ri = rperm if rperm is not None else slice(None)
            ci = cperm if cperm is not None else slice(None)
            if rperm is not None and cperm is not None:
                out[np.ix_(rperm, cperm)] = out_p
            else:
                out[ri, ci] = out_p
    return out
