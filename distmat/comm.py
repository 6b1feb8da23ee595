"""Communication layer (layer 1): buffer-only MPI wrappers that keep a ledger, and agreed errors.

All distmat traffic goes through the functions here.  Each call records, under the label of the
public operation that is running (see :func:`operation`), the messages and bytes this rank sent
and received and the seconds it spent inside MPI.  Recording happens only while a
:func:`distmat.profile` block is open; otherwise a wrapper is the bare MPI call plus one
truth test.

Byte counts are *logical*: what the algorithm asks MPI to move, not what MPI's internal
algorithm forwards.  A broadcast counts ``nbytes`` received on each non-root rank and
``nbytes * (size - 1)`` sent by the root; an all-to-all counts exactly the blocks that go to
other ranks.  These are the quantities communication models (alpha-beta, SUMMA's
``2 n^2 / sqrt(p)`` words) speak of.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from mpi4py import MPI
from mpi4py.util.dtlib import from_numpy_dtype

from .errors import RemoteError

__all__ = [
    "operation",
    "current_label",
    "bcast",
    "ibcast",
    "allreduce",
    "allsum",
    "iallreduce",
    "reduce",
    "alltoallv",
    "sendrecv",
    "isend",
    "irecv",
    "allgather_obj",
    "Request",
    "waitall",
    "agreed",
    "raise_if_any",
    "agree_info",
    "check_same",
    "FIELDS",
]

#: The per-operation counters, in the order of a ledger row.
FIELDS = ("calls", "msgs_sent", "bytes_sent", "msgs_recv", "bytes_recv", "seconds")

_labels: list[str] = []
_recorders: list[dict[str, np.ndarray]] = []


@contextmanager
def operation(label: str) -> Iterator[None]:
    """Attribute the traffic of the enclosed block to ``label``.

    The outermost label wins, so the traffic of a redistribution done inside ``matmul`` is
    counted as ``matmul``.
    """
    _labels.append(label)
    try:
        yield
    finally:
        _labels.pop()


def current_label() -> str:
    """The label traffic is recorded under now (``"other"`` outside any operation)."""
    return _labels[0] if _labels else "other"


def _record(msgs_sent: int, bytes_sent: int, msgs_recv: int, bytes_recv: int, seconds: float,
            calls: int = 1) -> None:
    label = current_label()
    row = np.array([calls, msgs_sent, bytes_sent, msgs_recv, bytes_recv, seconds])
    for rec in _recorders:
        if label in rec:
            rec[label] += row
        else:
            rec[label] = row.copy()


def _start_recorder() -> dict[str, np.ndarray]:
    rec: dict[str, np.ndarray] = {}
    _recorders.append(rec)
    return rec


def _stop_recorder(rec: dict[str, np.ndarray]) -> None:
    for i, r in enumerate(_recorders):
        if r is rec:
            del _recorders[i]
            return


# --------------------------------------------------------------------------- collectives


def bcast(comm: MPI.Comm, buf: np.ndarray, root: int) -> np.ndarray:
    """Broadcast the contiguous array ``buf`` from ``root`` in place. Collective over ``comm``."""
    if not _recorders:
        comm.Bcast(buf, root)
        return buf
    t0 = time.perf_counter()
    comm.Bcast(buf, root)
    dt = time.perf_counter() - t0
    _record_bcast(comm, buf.nbytes, root, dt)
    return buf


def _record_bcast(comm: MPI.Comm, nbytes: int, root: int, seconds: float) -> None:
    size = comm.Get_size()
    if size == 1:
        _record(0, 0, 0, 0, seconds)
    elif comm.Get_rank() == root:
        _record(size - 1, nbytes * (size - 1), 0, 0, seconds)
    else:
        _record(0, 0, 1, nbytes, seconds)


class Request:
    """A non-blocking operation whose wait time is recorded in the ledger."""

    __slots__ = ("_req", "_label", "_recording")

    def __init__(self, req: MPI.Request):
        self._req = req
        self._label = current_label()
        self._recording = bool(_recorders)

    def wait(self) -> None:
        """Complete the operation."""
        if not self._recording:
            self._req.Wait()
            return
        t0 = time.perf_counter()
        self._req.Wait()
        dt = time.perf_counter() - t0
        _labels.insert(0, self._label)
        try:
            _record(0, 0, 0, 0, dt, calls=0)
        finally:
            _labels.pop(0)

    def test(self) -> bool:
        """True when the operation has completed (drives progress)."""
        return bool(self._req.Test())


def waitall(requests: list[Request]) -> None:
    """Wait for every request in ``requests``."""
    for r in requests:
        r.wait()


def ibcast(comm: MPI.Comm, buf: np.ndarray, root: int) -> Request:
    """Start a non-blocking broadcast of ``buf`` from ``root``. Collective over ``comm``."""
    if not _recorders:
        return Request(comm.Ibcast(buf, root))
    t0 = time.perf_counter()
    req = comm.Ibcast(buf, root)
    _record_bcast(comm, buf.nbytes, root, time.perf_counter() - t0)
    return Request(req)


def allreduce(comm: MPI.Comm, buf: np.ndarray, op: MPI.Op = MPI.SUM) -> np.ndarray:
    """Reduce ``buf`` over ``comm`` in place with ``op``; every rank gets the result."""
    if not _recorders:
        comm.Allreduce(MPI.IN_PLACE, buf, op=op)
        return buf
    t0 = time.perf_counter()
    comm.Allreduce(MPI.IN_PLACE, buf, op=op)
    dt = time.perf_counter() - t0
    n = 1 if comm.Get_size() > 1 else 0
    _record(n, n * buf.nbytes, n, n * buf.nbytes, dt)
    return buf


def allsum(comm: MPI.Comm, buf: np.ndarray) -> np.ndarray:
    """Sum the small array ``buf`` over ``comm`` in place, bitwise the same on every rank.

    MPI does not promise that an all-reduce gives every rank the same bits; a value that
    steers control flow (a stopping test) must, or ranks could leave a loop at different
    iterations and hang.  Here every rank gathers all the parts and adds them in rank
    order.  For scalars and short vectors (the gather moves ``size`` times the buffer).
    """
    size = comm.Get_size()
    if size == 1:
        if _recorders:
            _record(0, 0, 0, 0, 0.0)
        return buf
    parts = np.empty((size,) + buf.shape, dtype=buf.dtype)
    t0 = time.perf_counter() if _recorders else 0.0
    comm.Allgather(np.ascontiguousarray(buf), parts)
    if _recorders:
        _record(size - 1, (size - 1) * buf.nbytes, size - 1, (size - 1) * buf.nbytes,
                time.perf_counter() - t0)
    total = parts[0].copy()
    for q in range(1, size):
        total += parts[q]
    buf[...] = total
    return buf


def iallreduce(comm: MPI.Comm, buf: np.ndarray, op: MPI.Op = MPI.SUM) -> Request:
    """Start a non-blocking in-place all-reduce of ``buf``."""
    req = comm.Iallreduce(MPI.IN_PLACE, buf, op=op)
    if _recorders:
        n = 1 if comm.Get_size() > 1 else 0
        _record(n, n * buf.nbytes, n, n * buf.nbytes, 0.0)
    return Request(req)


def reduce(comm: MPI.Comm, sendbuf: np.ndarray, recvbuf: np.ndarray | None, root: int,
           op: MPI.Op = MPI.SUM) -> None:
    """Reduce ``sendbuf`` onto ``recvbuf`` at ``root`` (``recvbuf`` ignored elsewhere)."""
    t0 = time.perf_counter() if _recorders else 0.0
    comm.Reduce(sendbuf, recvbuf if comm.Get_rank() == root else None, op=op, root=root)
    if _recorders:
        size, rank = comm.Get_size(), comm.Get_rank()
        dt = time.perf_counter() - t0
        if size == 1:
            _record(0, 0, 0, 0, dt)
        elif rank == root:
            _record(0, 0, size - 1, (size - 1) * sendbuf.nbytes, dt)
        else:
            _record(1, sendbuf.nbytes, 0, 0, dt)


def alltoallv(comm: MPI.Comm, sendbuf: np.ndarray, sendcounts: np.ndarray,
              recvbuf: np.ndarray, recvcounts: np.ndarray) -> np.ndarray:
    """Personalised all-to-all exchange of contiguous 1-D arrays (counts in elements)."""
    sendcounts = np.asarray(sendcounts, dtype=np.int64)
    recvcounts = np.asarray(recvcounts, dtype=np.int64)
    sdispl = np.zeros_like(sendcounts)
    np.cumsum(sendcounts[:-1], out=sdispl[1:])
    rdispl = np.zeros_like(recvcounts)
    np.cumsum(recvcounts[:-1], out=rdispl[1:])
    t0 = time.perf_counter() if _recorders else 0.0
    comm.Alltoallv([sendbuf, (sendcounts, sdispl)], [recvbuf, (recvcounts, rdispl)])
    if _recorders:
        dt = time.perf_counter() - t0
        me = comm.Get_rank()
        s = sendcounts.copy()
        r = recvcounts.copy()
        s[me] = 0
        r[me] = 0
        item = sendbuf.itemsize
        _record(int(np.count_nonzero(s)), int(s.sum()) * item,
                int(np.count_nonzero(r)), int(r.sum()) * item, dt)
    return recvbuf


def sendrecv(comm: MPI.Comm, sendbuf: np.ndarray, dest: int, recvbuf: np.ndarray, source: int,
             tag: int = 0) -> np.ndarray:
    """Send ``sendbuf`` to ``dest`` while receiving ``recvbuf`` from ``source``."""
    t0 = time.perf_counter() if _recorders else 0.0
    comm.Sendrecv(sendbuf, dest, tag, recvbuf, source, tag)
    if _recorders:
        _record(1, sendbuf.nbytes, 1, recvbuf.nbytes, time.perf_counter() - t0)
    return recvbuf


def _rows_spec(a: np.ndarray, rows: list[tuple[int, int]] | None) -> tuple[list, int]:
    """An mpi4py buffer spec for whole rows ``[(start, count), ...]`` of a C-ordered 2-D array."""
    if not a.flags.c_contiguous:
        raise ValueError("rows of a C-contiguous array are required")
    if rows is None:
        return [a, a.size, from_numpy_dtype(a.dtype)], a.nbytes
    w = a.shape[1]
    base = from_numpy_dtype(a.dtype)
    lengths = [c * w for _, c in rows]
    dtype = base.Create_indexed(lengths, [r * w for r, _ in rows]).Commit()
    return [a, 1, dtype], sum(lengths) * a.itemsize


def sendrecv_rows(comm: MPI.Comm, send: np.ndarray, send_rows: list[tuple[int, int]] | None,
                  dest: int, recv: np.ndarray, recv_rows: list[tuple[int, int]] | None,
                  source: int, tag: int = 0) -> None:
    """Send some whole rows of ``send`` to ``dest`` while receiving rows of ``recv``.

    ``*_rows`` lists ``(first_row, row_count)`` ranges of a C-contiguous 2-D array (None: all
    of it); MPI reads and writes them in place through an indexed datatype, so neither side
    packs.  The two sides must move the same number of elements.
    """
    sspec, sbytes = _rows_spec(send, send_rows)
    rspec, rbytes = _rows_spec(recv, recv_rows)
    t0 = time.perf_counter() if _recorders else 0.0
    try:
        comm.Sendrecv(sspec, dest, tag, rspec, source, tag)
    finally:
        for spec, rows in ((sspec, send_rows), (rspec, recv_rows)):
            if rows is not None:
                spec[2].Free()
    if _recorders:
        _record(1, sbytes, 1, rbytes, time.perf_counter() - t0)


def isend(comm: MPI.Comm, buf: np.ndarray, dest: int, tag: int = 0) -> Request:
    """Start sending ``buf`` to ``dest``."""
    req = comm.Isend(buf, dest, tag)
    if _recorders:
        _record(1, buf.nbytes, 0, 0, 0.0)
    return Request(req)


def irecv(comm: MPI.Comm, buf: np.ndarray, source: int, tag: int = 0) -> Request:
    """Start receiving into ``buf`` from ``source``."""
    req = comm.Irecv(buf, source, tag)
    if _recorders:
        _record(0, 0, 1, buf.nbytes, 0.0)
    return Request(req)


def allgather_obj(comm: MPI.Comm, obj: object) -> list:
    """Gather a small picklable object from every rank (cold metadata only, never data)."""
    return comm.allgather(obj)


# --------------------------------------------------------------------------- agreed errors


def agree_info(comm: MPI.Comm, info: int) -> int:
    """Smallest non-zero LAPACK-style ``info`` over the ranks of ``comm``, else 0. Collective."""
    none = np.iinfo(np.int64).max
    buf = np.array([info or none], dtype=np.int64)
    comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.MIN)
    return 0 if buf[0] == none else int(buf[0])


def raise_if_any(comm: MPI.Comm, exc: BaseException | None) -> None:
    """Raise the same exception on every rank of ``comm`` if any rank passes one. Collective.

    Every rank must call this, with its local exception or None.  If no rank failed it
    returns.  Otherwise every rank raises an exception of the type raised on the lowest
    failing rank (or :class:`~distmat.errors.RemoteError` when that type cannot be rebuilt
    from a message), whose message names the failing ranks and their reasons.
    """
    flag = np.array([0 if exc is None else 1], dtype=np.int32)
    comm.Allreduce(MPI.IN_PLACE, flag, op=MPI.MAX)
    if not flag[0]:
        return
    mine = None if exc is None else (type(exc), str(exc))
    try:
        infos = comm.allgather(mine)
    except Exception:  # the exception type itself could not be pickled
        infos = comm.allgather(None if exc is None else (None, f"{type(exc).__name__}: {exc}"))
    failing = tuple(r for r, i in enumerate(infos) if i is not None)
    reasons = tuple(infos[r][1] for r in failing)
    cls = infos[failing[0]][0]
    if len(failing) == 1:
        where = f"rank {failing[0]} of {comm.Get_size()}"
    else:
        where = f"ranks {list(failing)} of {comm.Get_size()}"
    message = f"{reasons[0]} [raised on {where}]"
    err: BaseException | None = None
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            err = cls(message)
        except Exception:
            err = None
        if err is not None and str(err) != message:
            err = None
    if err is None:
        err = RemoteError(message, failing, reasons)
    if exc is not None:
        raise err from exc
    raise err


@contextmanager
def agreed(comm: MPI.Comm) -> Iterator[None]:
    """Run a block of rank-local work whose failure must be seen by every rank.

    Every rank of ``comm`` must enter the block.  The block must not itself communicate on
    ``comm`` after a point where it may raise (or that collective would be left waiting).
    On exit one small all-reduce decides whether any rank raised; if so every rank raises
    the same exception (see :func:`raise_if_any`).  ``KeyboardInterrupt`` and other
    non-``Exception`` errors are not caught: they abort the job under ``python -m mpi4py``.

    Examples
    --------
    >>> with agreed(grid.comm):
    ...     piv = scipy.linalg.lu_factor(local_block)   # may fail on one rank only
    """
    exc: Exception | None = None
    try:
        yield
    except Exception as e:  # noqa: BLE001 - re-raised collectively below
        exc = e
    raise_if_any(comm, exc)


def check_same(comm: MPI.Comm, value: tuple[int, ...], name: str) -> None:
    """Raise ValueError on every rank unless all ranks pass the same integer tuple ``value``."""
    buf = np.array(value, dtype=np.int64)
    lo = buf.copy()
    comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.MAX)
    comm.Allreduce(MPI.IN_PLACE, lo, op=MPI.MIN)
    if not np.array_equal(buf, lo):
        raise ValueError(
            f"{name} must be the same on every rank (a global argument); the ranks passed "
            f"differing values, from {tuple(lo.tolist())} to {tuple(buf.tolist())}"
        )
