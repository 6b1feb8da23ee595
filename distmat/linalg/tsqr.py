"""TSQR: the QR factorization of a tall-skinny matrix by a reduction tree of local QRs.

``A`` (``m x n``, ``m >= n``) is cut into row slabs, one per rank (a ``P x 1`` grid keeps its
own rows; any other grid is first moved to contiguous slabs of ``ceil(m / P)`` rows by one
all-to-all).  Each rank factors its slab (``A_i = Q_i R_i``) as a flat tree of cache-sized
chunks, each factored by LAPACK (a tall ``geqrf`` is bound by memory bandwidth, a chunk
of about 1 MB is not), then the stacked chunk triangles once more; then a binary tree
over the ranks combines the triangles: at level ``l`` rank ``r`` (``r % 2^(l+1) == 0``)
receives ``R`` from rank ``r + 2^l`` (one message), factors the stacked pair
``[R_r; R_{r+2^l}] = Q_node R`` and goes up.  Rank 0 ends with ``R``, makes its diagonal
non-negative (so the result does not depend on the rank count) and broadcasts it.

``Q`` is built by going back down the tree: rank 0 starts from the ``n x n`` sign matrix
``D``; at each level a parent multiplies its stored ``Q_node`` by its coefficient block, keeps
the top rows and sends the bottom rows to its child (one message per level); at the leaves
``Q = Q_i C_i``.  Ranks that own fewer than ``n`` rows (or none) carry triangles of
``min(rows, n)`` rows, so any ``m >= n`` works on any rank count; message sizes follow from
the layout, so none is exchanged.

Flops: about ``2 m n^2 / P`` per rank for ``R`` (LAPACK ``geqrf``) plus ``4 m n^2 / P`` for
``Q`` (``orgqr`` and the final GEMM), and ``O(n^3 log P)`` in the tree.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.linalg as sla
from mpi4py import MPI
from scipy.linalg import lapack

from .. import comm as _c
from ..errors import ShapeMismatchError
from ..grid import ProcessGrid
from ..layout import Layout, numroc
from ..matrix import DistMatrix
from ..redistribute import exchange
from . import _checks

__all__ = ["tsqr", "RowSlabs", "TSQRTree"]

_TAG = 7100


class RowSlabs:
    """Rows of matrices with ``m`` global rows, whole rows per rank (a ``P x 1`` arrangement).

    ``mb`` is the row block of the arrangement: the grid's own row block when the grid is
    ``P x 1`` (then nothing moves), else ``ceil(m / P)`` (contiguous slabs).  ``counts[p]``
    is the number of rows rank ``p`` of ``grid.comm`` holds.  Internal (pure metadata).
    """

    def __init__(self, grid: ProcessGrid, m: int, mb: int | None = None):
        self.grid = grid
        self.m = m
        P = grid.size
        if mb is None:
            mb = max(1, -(-m // P))
        self.mb = mb
        self.counts = np.array([numroc(m, mb, p, P) for p in range(P)], dtype=np.int64)
        self.ranks = np.arange(P, dtype=np.int64).reshape(P, 1)

    @classmethod
    def for_matrix(cls, A: DistMatrix) -> RowSlabs:
        """The arrangement TSQR uses for ``A``: its own rows on a ``P x 1`` grid."""
        if A.grid.shape[1] == 1:
            return cls(A.grid, A.shape[0], A.block[0])
        return cls(A.grid, A.shape[0])

    def layout(self, ncols: int) -> Layout:
        return Layout((self.m, ncols), (self.mb, max(1, ncols)), (self.grid.size, 1))

    def rows_of(self, X: DistMatrix) -> np.ndarray:
        """This rank's rows of ``X`` (all its columns), moved if needed. Collective."""
        dst = self.layout(X.shape[1])
        if X.grid.shape[1] == 1 and X.block[0] == self.mb:
            return X.local
        return exchange(self.grid.comm, X.local, X.layout, self.grid.ranks(), dst, self.ranks,
                        dtype=X.dtype)

    def to_matrix(self, rows: np.ndarray, ncols: int, block: tuple[int, int]) -> DistMatrix:
        """The DistMatrix on the grid with ``block`` whose rows here are ``rows``. Collective."""
        grid = self.grid
        dst = Layout((self.m, ncols), block, grid.shape)
        if grid.shape[1] == 1 and block[0] == self.mb:
            local = np.ascontiguousarray(rows)  # one process column holds every column
        else:
            local = exchange(grid.comm, rows, self.layout(ncols), self.ranks, dst, grid.ranks(),
                             dtype=rows.dtype)
        return DistMatrix._wrap(local, (self.m, ncols), block, grid)


#: The local QR works on chunks of about this many bytes (``chunk_rows(n)`` rows), so each
#: LAPACK ``geqrf`` runs in cache; a tall ``geqrf`` is bound by memory bandwidth.
CHUNK_BYTES = 1 << 20


def chunk_rows(n: int, itemsize: int) -> int:
    """Rows per chunk of the local QR: ``CHUNK_BYTES`` worth, at least ``2 n``."""
    return max(2 * n, CHUNK_BYTES // max(1, n * itemsize))


def _r_only(x: np.ndarray) -> np.ndarray:
    """The ``min(rows, n) x n`` triangle of the QR of ``x`` (LAPACK ``geqrf``; may overwrite
    ``x``).  scipy's ``qr(mode="r")`` zeroes a full ``rows x n`` copy, which costs more than
    the factorization of a tall chunk."""
    k = min(x.shape)
    geqrf = lapack.get_lapack_funcs("geqrf", (x,))
    fac, _, _, info = geqrf(np.asfortranarray(x), lwork=max(1, 64 * x.shape[1]), overwrite_a=True)
    if info < 0:  # pragma: no cover - a LAPACK argument error is a bug here
        raise RuntimeError(f"geqrf: illegal argument {-info}")
    return np.triu(fac[:k])


class _LocalQR:
    """QR of this rank's rows (``mine x n``) as a flat tree of cache-sized chunks.

    Each chunk of :func:`chunk_rows` rows is factored by LAPACK, then the stacked chunk
    triangles once more: ``rows = blockdiag(Q_c) Q_s R``.  :attr:`r` is ``min(mine, n) x n``;
    :meth:`q_times` returns ``blockdiag(Q_c) Q_s C``.
    """

    def __init__(self, rows: np.ndarray, n: int, want_q: bool):
        mine = rows.shape[0]
        self.mine = mine
        self.dtype = rows.dtype
        step = chunk_rows(n, rows.dtype.itemsize)
        if mine <= 2 * step:
            self.ranges = [(0, mine)] if mine else []
        else:
            cuts = list(range(0, mine, step))
            if mine - cuts[-1] < n:     # a short last chunk joins the one before it
                cuts.pop()
            self.ranges = list(zip(cuts, cuts[1:] + [mine], strict=True))
        self.qs: list[np.ndarray] = []
        rs = []
        for i0, i1 in self.ranges:
            piece = np.array(rows[i0:i1], order="F")
            if want_q:
                q, r = sla.qr(piece, mode="economic", overwrite_a=True, check_finite=False)
                self.qs.append(q)
            else:
                r = _r_only(piece)
            rs.append(r)
        self.q_stack = None
        if not rs:
            self.r = np.zeros((0, n), dtype=rows.dtype)
        elif len(rs) == 1:
            self.r = rs[0]
        else:
            stacked = np.vstack(rs)
            if want_q:
                self.q_stack, self.r = sla.qr(stacked, mode="economic", overwrite_a=True,
                                              check_finite=False)
            else:
                self.r = _r_only(stacked)
        self.offsets = np.cumsum([0] + [q.shape[1] for q in self.qs])

    def q_times(self, C: np.ndarray) -> np.ndarray:
        """This rank's rows of ``Q_local @ C`` (``C`` is ``r.shape[0] x ncols``)."""
        out = np.empty((self.mine, C.shape[1]), dtype=self.dtype)
        if self.q_stack is not None:
            C = self.q_stack @ C
        for (i0, i1), q, o in zip(self.ranges, self.qs, self.offsets, strict=False):
            np.matmul(q, C[o:o + q.shape[1]], out=out[i0:i1])
        return out


class TSQRTree:
    """The reduction tree of one TSQR (internal).

    Parameters
    ----------
    comm : MPI.Comm
        The ranks, in tree order (rank 0 is the root).
    rows : ndarray
        This rank's ``counts[rank] x n`` rows (not modified).
    counts : ndarray
        Rows held by every rank (global).
    n : int
        Columns (global).
    want_q : bool
        Keep the local ``Q`` factors for :meth:`q_rows`.

    Building the tree runs the upward pass (collective); :attr:`r_root` is the raw ``R`` on
    rank 0 (None elsewhere).
    """

    def __init__(self, comm: MPI.Comm, rows: np.ndarray, counts: np.ndarray, n: int,
                 want_q: bool):
        self.comm = comm
        self.n = n
        self.want_q = want_q
        self.size = P = comm.Get_size()
        self.me = me = comm.Get_rank()
        self.counts = counts
        csum = np.concatenate([[0], np.cumsum(counts)])
        # rows under the subtree rooted at rank r spanning ranks r .. r+s-1
        self._k = lambda r, s: int(min(csum[min(r + s, P)] - csum[r], n))
        self.dtype = dtype = rows.dtype
        # leaf factorization
        self.leaf = _LocalQR(rows, n, want_q)
        R = self.leaf.r
        # upward pass
        self.nodes: list[tuple[int, int, np.ndarray | None]] = []  # (step, k_mine, Q_node)
        self.parent_step = 0  # the level at which this rank sent its R up (0: root)
        step = 1
        while step < P:
            if me % (2 * step) == 0:
                child = me + step
                if child < P:
                    kc = self._k(child, step)
                    kme = R.shape[0]
                    if kc:
                        Rc = np.empty((kc, n), dtype=dtype)
                        _c.irecv(comm, Rc, child, _TAG + step).wait()
                        stacked = np.vstack([R, Rc])
                        if want_q:
                            qn, R = sla.qr(stacked, mode="economic", overwrite_a=True,
                                           check_finite=False)
                        else:
                            qn = None
                            R = _r_only(stacked)
                        self.nodes.append((step, kme, qn))
            else:
                parent = me - step
                if R.shape[0]:
                    _c.isend(comm, np.ascontiguousarray(R), parent, _TAG + step).wait()
                self.parent_step = step
                break
            step *= 2
        self.r_root = np.ascontiguousarray(R) if me == 0 else None

    def signs(self) -> np.ndarray:
        """On rank 0: the unit factors ``p`` with ``diag(conj(p)) R_raw`` non-negative."""
        d = np.diagonal(self.r_root).copy()
        p = np.ones(d.shape, dtype=self.r_root.dtype)
        nz = d != 0
        p[nz] = d[nz] / np.abs(d[nz])
        return p

    def r_replicated(self) -> np.ndarray:
        """``R`` (``min(m, n) x n``, diagonal >= 0) on every rank. Collective (one bcast)."""
        k = self._k(0, self.size)
        R = np.empty((k, self.n), dtype=self.dtype)
        if self.me == 0:
            R[...] = np.conj(self.signs())[:, None] * self.r_root
        if self.size > 1 and R.size:
            _c.bcast(self.comm, R, 0)
        return R

    def q_rows(self, c_root: np.ndarray | None, ncols: int) -> np.ndarray:
        """This rank's rows of ``Q_raw @ c_root`` (``c_root``, ``k x ncols``, read on rank 0).

        Collective (one message per tree level).  ``Q_raw`` is the orthonormal factor with
        ``A = Q_raw R_raw``; pass ``diag(signs()) @ M`` to get ``Q M`` for the ``Q`` whose
        ``R`` has a non-negative diagonal.
        """
        comm, me = self.comm, self.me
        dtype = self.dtype
        if me == 0:
            C = np.ascontiguousarray(c_root, dtype=dtype)
        else:
            step = self.parent_step
            C = np.empty((self._k(me, step), ncols), dtype=dtype)
            if C.size:  # the parent sends nothing for an empty block
                _c.irecv(comm, C, me - step, _TAG + 64 + step).wait()
        for step, kme, qn in reversed(self.nodes):
            M = qn @ C
            if M.shape[0] > kme and ncols:
                _c.isend(comm, np.ascontiguousarray(M[kme:]), me + step, _TAG + 64 + step).wait()
            C = M[:kme]
        return self.leaf.q_times(C)


def factor_rows(comm: MPI.Comm, rows: np.ndarray, counts: np.ndarray, n: int, *,
                want_q: bool, post: Callable[[np.ndarray], np.ndarray] | None = None
                ) -> tuple[np.ndarray | None, np.ndarray]:
    """TSQR of a matrix held as whole rows per rank (internal). Collective over ``comm``.

    Returns ``(Q rows or None, R)`` with ``R`` replicated and ``diag(R) >= 0``.  ``post``
    (called on rank 0 with ``R``) returns an ``n x c`` matrix ``M``; the rows returned are
    then those of ``Q M`` instead of ``Q``.
    """
    tree = TSQRTree(comm, rows, counts, n, want_q)
    R = tree.r_replicated()
    if not want_q:
        return None, R
    c_root = None
    ncols = R.shape[0]
    if comm.Get_rank() == 0:
        c_root = np.diag(tree.signs())
        if post is not None:
            c_root = c_root @ post(R)
    if post is not None:
        ncols = _c_bcast_int(comm, None if c_root is None else c_root.shape[1])
    return tree.q_rows(c_root, ncols), R


def _c_bcast_int(comm: MPI.Comm, value: int | None) -> int:
    buf = np.array([value if value is not None else 0], dtype=np.int64)
    if comm.Get_size() > 1:
        _c.bcast(comm, buf, 0)
    return int(buf[0])


def tsqr(A: DistMatrix, *, want_q: bool = True) -> tuple[DistMatrix | None, np.ndarray]:
    """QR factorization of a tall-skinny matrix by TSQR. Collective over ``A``'s grid.

    Parameters
    ----------
    A : DistMatrix
        ``m x n`` matrix with ``m >= n`` **(global)**; not modified.  Best on a ``P x 1``
        grid (no data moves before the local QRs); on other grids the rows are first moved
        to contiguous slabs of ``ceil(m / P)`` rows and ``Q`` is moved back (one all-to-all
        each way).
    want_q : bool
        Also form ``Q`` **(global)**.

    Returns
    -------
    Q : DistMatrix or None
        ``m x n`` with orthonormal columns, on ``A``'s grid with ``A``'s block (None when
        ``want_q=False``).
    R : ndarray
        ``n x n`` upper triangular with a non-negative (real) diagonal, the same on every
        rank; ``A = Q R``.

    Raises
    ------
    TypeError
        If ``A`` is not a DistMatrix.
    ShapeMismatchError
        If ``m < n`` (use ``tsqr(A.T)`` or :func:`distmat.linalg.qr`).

    Notes
    -----
    Messages: one per tree level on the way up (``n x n`` triangles), one broadcast of ``R``,
    and one per level on the way down (``n x n`` blocks of ``Q``'s coefficients), over a
    binary tree of ``ceil(log2 P)`` levels.  NaN or Inf in ``A`` propagates into the factors
    (no check here; :func:`distmat.linalg.qr` checks).
    """
    _checks.require_matrix(A, "A")
    m, n = A.shape
    if m < n:
        raise ShapeMismatchError(f"tsqr needs a tall matrix (m >= n), got shape {A.shape}; "
                                 f"factor A.T, or use dm.linalg.qr")
    dtype = _checks.common_dtype(A)
    if n == 0:
        Q = DistMatrix._wrap(np.zeros((A.local.shape[0], 0), dtype=dtype), A.shape, A.block,
                             A.grid) if want_q else None
        return Q, np.zeros((0, 0), dtype=dtype)
    with _c.operation("tsqr"):
        slabs = RowSlabs.for_matrix(A)
        rows = slabs.rows_of(A)
        if rows.dtype != dtype:
            rows = rows.astype(dtype)
        q_rows, R = factor_rows(A.grid.comm, rows, slabs.counts, n, want_q=bool(want_q))
        if not want_q:
            return None, R
        Q = slabs.to_matrix(q_rows, n, A.block)
    return Q, R
