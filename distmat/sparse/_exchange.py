"""Moving variable-length byte records between ranks (internal to distmat.sparse).

Sparse data has counts only the sender knows, so every exchange here is two all-to-alls:
one of ``int64`` byte counts (metadata, ``8 * size`` bytes per rank) and one of the payload
bytes.  Both go through the ledgered wrappers of :mod:`distmat.comm`, so the ledger shows what
the non-zero blocks cost.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from .. import comm as _c

__all__ = ["exchange_bytes", "block_records", "route_blocks"]


def exchange_bytes(comm: MPI.Comm, parts: list[np.ndarray]) -> list[np.ndarray]:
    """Send ``parts[r]`` (a uint8 array, possibly empty) to rank ``r``. Collective.

    Returns the list of uint8 arrays received from each rank, in rank order.
    """
    size = comm.Get_size()
    sendcounts = np.array([p.size for p in parts], dtype=np.int64)
    recvcounts = np.empty(size, dtype=np.int64)
    _c.alltoallv(comm, sendcounts, np.ones(size, np.int64), recvcounts, np.ones(size, np.int64))
    sendbuf = np.concatenate(parts) if parts else np.empty(0, np.uint8)
    if sendbuf.dtype != np.uint8:
        sendbuf = sendbuf.view(np.uint8)
    recvbuf = np.empty(int(recvcounts.sum()), dtype=np.uint8)
    _c.alltoallv(comm, sendbuf, sendcounts, recvbuf, recvcounts)
    off = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(recvcounts, out=off[1:])
    return [recvbuf[off[r]:off[r + 1]] for r in range(size)]


def block_records(bs: int, dtype: np.dtype) -> np.dtype:
    """Record type of one block in flight: global block row, block column and values."""
    return np.dtype([("i", "<i8"), ("j", "<i8"), ("d", np.dtype(dtype), (bs, bs))])


def route_blocks(comm: MPI.Comm, dest: np.ndarray, bi: np.ndarray, bj: np.ndarray,
                 data: np.ndarray, bs: int, dtype: np.dtype
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Send block ``(bi[t], bj[t], data[t])`` to rank ``dest[t]``. Collective over ``comm``.

    ``dest`` may also be the string ``"all"`` (every block to every rank).  Returns the
    concatenated received ``(bi, bj, data)`` in source-rank order.
    """
    size = comm.Get_size()
    rt = block_records(bs, dtype)
    rec = np.empty(bi.size, dtype=rt)
    rec["i"] = bi
    rec["j"] = bj
    if bi.size:
        rec["d"] = data
    raw = rec.view(np.uint8).reshape(bi.size, rt.itemsize) if bi.size else \
        np.empty((0, rt.itemsize), np.uint8)
    if isinstance(dest, str):
        flat = raw.reshape(-1)
        parts = [flat] * size
    else:
        dest = np.asarray(dest, dtype=np.int64)
        order = np.argsort(dest, kind="stable")
        counts = np.bincount(dest, minlength=size)
        off = np.zeros(size + 1, dtype=np.int64)
        np.cumsum(counts, out=off[1:])
        srt = raw[order]
        parts = [srt[off[r]:off[r + 1]].reshape(-1) for r in range(size)]
    got = exchange_bytes(comm, parts)
    allb = np.concatenate(got) if got else np.empty(0, np.uint8)
    out = allb.view(rt) if allb.size else np.empty(0, dtype=rt)
    return (np.ascontiguousarray(out["i"]), np.ascontiguousarray(out["j"]),
            np.ascontiguousarray(out["d"]).reshape(-1, bs, bs))
