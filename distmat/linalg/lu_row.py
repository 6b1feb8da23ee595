"""LU with look-ahead on a ``1 x P`` grid (layer 3; used by :func:`distmat.linalg.lu.getrf`).

Every rank holds whole columns, so a panel lies on one rank and ``getrf`` factors it there.
The owner of panel ``s + 1`` first updates just those columns with panel ``s`` and starts
their factorization, and only then updates the rest of its trailing matrix; the other ranks
update theirs meanwhile, so no rank waits for a panel unless it runs out of work.

On a ``1 x 2`` grid the last block column, and so one more block column of trailing matrix at
every other step, belongs to rank 1, which therefore has the longer path through the
factorization while rank 0 waits for its panels.  There rank 0 *helps*: rank 1 sends each of
its panels, once updated, to rank 0 as plain rows; rank 0 factors it between its own GEMMs and
sends it back factored.  Rank 1 keeps its GEMMs and loses the panel factorizations and their
column-major copies; rank 0 fills its waits with them.  Only in the first half of the matrix:
helping with every panel makes rank 0 the one that is late in the second half.  The gain is
small (``n = 4096``, block 256: 1-3 % over interleaved runs, within this machine's noise).

Panels factored by ``getrf`` are column-major; the trailing GEMM and the triangular solve use
them through their row-major transposes, so they are never copied back to row-major except
into the owner's own storage.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import lapack

from .. import comm as _c
from ..errors import SingularMatrixError
from ..layout import panels
from ..matrix import DistMatrix
from ._kernels import copy_tiled, gemm_update, trsm_inplace
from ._panels import Index, default_panel, ipiv_to_perm

__all__ = ["LOOKAHEAD_MIN_BLOCK", "POLL_COLS", "HELP", "HELP_UNTIL", "lookahead_panel",
           "getrf_row", "zero_pivot"]

#: Smallest storage block for which a one-row grid factors block by block with look-ahead.
LOOKAHEAD_MIN_BLOCK = 32

#: Local columns per trailing-update GEMM in the look-ahead loops: wide enough to run near
#: the GEMM peak, narrow enough to test the next panel's messages a few times per step.
POLL_COLS = 768

#: On a ``1 x 2`` grid, rank 0 factors rank 1's panels in the first :data:`HELP_UNTIL` of the
#: columns (see the module docstring); later rank 0 has no time to spare.
HELP = True
HELP_UNTIL = 0.5

#: Tags 20000-22999 (three per panel, modulo 1000 panels): apart from other modules' tags.
_TAG = 20000


def lookahead_panel(a: DistMatrix, panel: int | None) -> int | None:
    """Panel width of the look-ahead scheme for ``a``, or None when it does not apply.

    It applies on one rank, and on a ``1 x P`` grid when every panel lies inside one block
    column, so the rank owning it holds the whole panel: the default panel is then the
    storage block (if at least :data:`LOOKAHEAD_MIN_BLOCK`), and a given ``panel`` must divide
    the block.
    """
    pr, pc = a.grid.shape
    nb = a.block[1]
    if pr != 1:
        return None
    if pc == 1:  # one rank holds everything: any panel width
        return panel or default_panel(a.shape[1])
    if panel is None:
        return nb if nb >= LOOKAHEAD_MIN_BLOCK else None
    return panel if nb % panel == 0 else None


class _Panel:
    """A panel on its way: pivots (``head``), the factored columns, pending messages.

    ``pan`` is column-major (``fortran``) where ``getrf`` ran or an ``Ibcast`` delivered it,
    row-major on rank 1 for the panels rank 0 factored for it.  On the helping rank ``raw``
    holds the unfactored rows until they arrive and are factored (:meth:`advance`).
    """

    def __init__(self, head: np.ndarray, pan: np.ndarray | None, reqs: list,
                 fortran: bool = True):
        self.head = head
        self.pan = pan
        self.reqs = reqs
        self.fortran = fortran
        self.raw: np.ndarray | None = None
        self.getrf = None
        self.comm = None
        self.tag = 0
        self.sends: list = []

    def advance(self) -> bool:
        """Drive the messages; on the helper, factor the rows once they are in. True if done."""
        self.reqs = [r for r in self.reqs if not r.test()]
        if self.raw is not None and not self.reqs:
            self._factor()
        return not self.reqs and self.raw is None

    def finish(self) -> None:
        """Wait for the panel (and factor it on the helper)."""
        _c.waitall(self.reqs)
        self.reqs = []
        if self.raw is not None:
            self._factor()

    def _factor(self) -> None:
        raw, self.raw = self.raw, None
        pan = np.empty(raw.shape, dtype=raw.dtype, order="F")
        copy_tiled(pan, raw)
        lu_p, ip, info = self.getrf(pan, overwrite_a=True)
        kw = self.head.size - 1
        self.head[0] = info
        self.head[1:] = ip[:kw]
        self.pan = lu_p
        copy_tiled(raw, lu_p)           # row-major again, for rank 1
        self.sends = [_c.isend(self.comm, self.head, 1, self.tag + 1),
                      _c.isend(self.comm, raw, 1, self.tag + 2)]


def zero_pivot(j: int) -> SingularMatrixError:
    """The error for an exactly zero pivot in global column ``j``."""
    return SingularMatrixError(f"singular matrix: the pivot in column {j} is exactly zero "
                               f"(U[{j}, {j}] = 0)")


def getrf_row(a: DistMatrix, idx: Index, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Factor ``a`` in place on a ``1 x P`` grid; return ``(piv, perm)`` (internal).

    ``w`` comes from :func:`lookahead_panel`.  Collective over the grid.
    """
    n = a.shape[0]
    grid = a.grid
    comm = grid.comm
    A = a.local
    cols = idx.mycols
    me = grid.mycol
    perm = np.arange(n, dtype=np.int64)
    piv = np.arange(n, dtype=np.int64)
    getrf_ = lapack.get_lapack_funcs("getrf", dtype=A.dtype)
    steps = list(panels(n, w))
    helped = HELP and grid.shape[1] == 2
    sends: list = []

    def start(s: int, k: int, kw: int) -> _Panel:
        owner = int(idx.layout.col_owner(k))
        head = np.zeros(kw + 1, dtype=np.int64)
        lc0 = idx.col_start(k)
        if helped and owner == 1 and k < HELP_UNTIL * n:
            tag = _TAG + 3 * (s % 1000)
            if me == 1:   # send the updated rows to rank 0, receive them factored
                raw = np.ascontiguousarray(A[k:, lc0:lc0 + kw])
                pan = np.empty((n - k, kw), dtype=A.dtype)
                return _Panel(head, pan, [_c.isend(comm, raw, 0, tag),
                                          _c.irecv(comm, head, 0, tag + 1),
                                          _c.irecv(comm, pan, 0, tag + 2)], fortran=False)
            p = _Panel(head, None, [])
            p.raw = np.empty((n - k, kw), dtype=A.dtype)
            p.reqs = [_c.irecv(comm, p.raw, 1, tag)]
            p.getrf, p.comm, p.tag = getrf_, comm, tag
            return p
        pan = np.empty((n - k, kw), dtype=A.dtype, order="F")
        if me == owner:
            copy_tiled(pan, A[k:, lc0:lc0 + kw])
            lu_p, ip, info = getrf_(pan, overwrite_a=True)   # in place: pan is Fortran
            head[0] = info
            head[1:] = ip[:kw]
            pan = lu_p
        return _Panel(head, pan, [_c.ibcast(comm, head, owner), _c.ibcast(comm, pan, owner)])

    owned: list[tuple[int, int, int, int, np.ndarray]] = []
    pending = start(0, *steps[0])
    for s, (k, kw) in enumerate(steps):
        cur = pending
        cur.finish()
        sends = [r for r in sends + cur.sends if not r.test()]   # frees sent buffers
        head, pan = cur.head, cur.pan
        info = int(head[0])
        if info > 0:
            _c.waitall(sends)
            raise zero_pivot(k + info - 1)
        ip = head[1:]
        p_loc = ipiv_to_perm(ip, n - k)
        lc0, lc1 = idx.col_start(k), idx.col_start(k + kw)
        moved = np.nonzero(p_loc != np.arange(n - k))[0]
        if moved.size and lc1 < cols.size:
            # the panel's own columns come factored; those left of it are permuted at the end
            A[k + moved, lc1:] = A[k + p_loc[moved], lc1:]
        perm[k:] = perm[k:][p_loc]
        piv[k:k + kw] = k + ip
        if lc1 > lc0:
            copy_tiled(A[k:, lc0:lc1], pan)
            owned.append((k, kw, lc0, lc1, perm.copy()))
        if cur.fortran:    # the transposes are row-major views
            l11, lower, trans, l21 = pan[:kw].T, False, "T", pan[kw:].T
        else:
            l11, lower, trans, l21 = pan[:kw], True, "N", pan[kw:]
        nxt = steps[s + 1] if s + 1 < len(steps) else None
        ntr = cols.size - lc1
        u12 = None
        if ntr:
            u12 = A[k:k + kw, lc1:]          # solved in place: U12 = L11^{-1} A12
            trsm_inplace(u12, l11, left=True, lower=lower, trans=trans, unit_diagonal=True)
        done = lc1
        if nxt is not None:
            nk, nkw = nxt
            if ntr and int(idx.layout.col_owner(nk)) == me:
                ln1 = idx.col_start(nk + nkw)
                gemm_update(A[k + kw:, lc1:ln1], l21, u12[:, :ln1 - lc1],
                            a_transposed=cur.fortran)
                done = ln1
            pending = start(s + 1, nk, nkw)
        if ntr and done < cols.size:
            # in column chunks, driving the next panel's messages between them: MPI moves a
            # large message only while its ranks call into it
            for c0 in range(done, cols.size, POLL_COLS):
                c1 = min(c0 + POLL_COLS, cols.size)
                if cols.size - c1 < POLL_COLS // 2:
                    c1 = cols.size
                gemm_update(A[k + kw:, c0:c1], l21, u12[:, c0 - lc1:c1 - lc1],
                            a_transposed=cur.fortran)
                if nxt is not None:
                    pending.advance()
                if c1 == cols.size:
                    break
    _c.waitall(sends)
    # the row interchanges of later panels, applied once to the L columns of each own panel
    where = np.empty(n, dtype=np.int64)
    for k, kw, lc0, lc1, perm_then in owned:
        if k + kw < n and not np.array_equal(perm_then[k + kw:], perm[k + kw:]):
            where[perm_then] = np.arange(n, dtype=np.int64)
            src = where[perm[k + kw:]]
            A[k + kw:, lc0:lc1] = A[src, lc0:lc1]
    return piv, perm
