"""QR factorization of a block-cyclic matrix: blocked Householder (the pdgeqrf scheme) or TSQR.

Blocked Householder, right-looking.  A step factors a panel of up to ``panel`` columns that
lies inside one storage block column, so one process column owns it:

1. **panel** (inside the owning process column): on one process row LAPACK ``geqrf`` factors
   the local panel; on several, column by column as ScaLAPACK's ``pdgeqr2``: one all-reduce
   over the column communicator per column carries the squared norm of the column below the
   diagonal, the diagonal entry, ``x^H A_rest`` and the diagonal row of the rest of the panel,
   from which every rank forms the same Householder reflector and updates its rows;
2. **compact WY**: ``T`` (``kw x kw``, upper triangular) with ``H_1 ... H_kw = I - V T V^H``,
   from ``V^H V`` (one more small all-reduce over the column communicator);
3. **broadcast** of ``V`` (this process row's rows) and ``T`` along the grid row;
4. **trailing update**: ``W = V^H A2`` (local GEMM, one all-reduce over the column
   communicator), then ``A2 -= V (T^H W)`` (one local GEMM).

On ``1 x P`` grids the factorization looks ahead by one panel: the owner of the next panel
updates and factors it and starts its broadcast before its own trailing update.

``Q`` (``mode="reduced"``) is formed like LAPACK ``orgqr``: start from the first ``k`` columns
of the identity and apply the block reflectors last to first, each with one all-reduce over
the column communicator and two GEMMs (the ``V`` panels are kept from the factorization).
Both paths return ``R`` with a real non-negative diagonal (one small all-reduce), so the
factors do not depend on the grid or the path.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI
from scipy.linalg import lapack

from .. import comm as _c
from ..errors import ShapeMismatchError
from ..grid import ProcessGrid
from ..layout import Layout
from ..matrix import DistMatrix
from . import _checks
from ._kernels import gemm_update
from ._panels import Index
from .tsqr import tsqr

__all__ = ["qr", "choose_method", "TSQR_MIN_ASPECT", "TSQR_MAX_COLS"]

#: ``method="auto"`` uses TSQR when ``m >= TSQR_MIN_ASPECT * n`` and ``n <= TSQR_MAX_COLS``.
TSQR_MIN_ASPECT = 4
TSQR_MAX_COLS = 256

_MODES = ("reduced", "r")
_METHODS = ("auto", "householder", "tsqr")


def choose_method(shape: tuple[int, int]) -> str:
    """The algorithm ``qr(method="auto")`` runs for a matrix of this global shape.

    ``"tsqr"`` for tall-skinny matrices (``m >= 4 n`` and ``n <= 256``: the local QRs do all
    the flops, the tree moves ``O(n^2 log P)`` words and ``R`` is small enough to replicate),
    ``"householder"`` otherwise.
    """
    m, n = shape
    return "tsqr" if m >= TSQR_MIN_ASPECT * n and n <= TSQR_MAX_COLS else "householder"


def qr(a: DistMatrix, mode: str = "reduced", *, method: str = "auto",
       check_finite: bool = True, panel: int | None = None
       ) -> tuple[DistMatrix, DistMatrix] | DistMatrix:
    """QR factorization ``a = Q R`` (numpy.linalg.qr's modes). Collective over the grid.

    Parameters
    ----------
    a : DistMatrix
        ``m x n`` matrix, any shape **(global)**; not modified.
    mode : {"reduced", "r"}
        "reduced": return ``(Q, R)`` with ``Q`` ``m x k`` (orthonormal columns) and ``R``
        ``k x n`` upper triangular (trapezoidal when wide), ``k = min(m, n)``; "r": return
        ``R`` only **(global)**.
    method : {"auto", "householder", "tsqr"}
        Algorithm **(global)**: "tsqr" needs ``m >= n``; "auto" picks it when
        ``m >= 4 n`` and ``n <= 256`` (see :func:`choose_method`), else blocked Householder.
    check_finite : bool
        Raise ValueError if ``a`` holds NaN or Inf (one all-reduce) **(global)**.
    panel : int, optional
        Blocked Householder: columns per step **(global)**; default (and at most) the
        storage block's column count, since a panel lives in one process column.

    Returns
    -------
    (Q, R) or R : DistMatrix
        On ``a``'s grid with ``a``'s block.  ``diag(R)`` is real and non-negative.

    Raises
    ------
    TypeError
        If ``a`` is not a DistMatrix.
    ValueError
        For a bad ``mode``, ``method`` or ``panel`` (before any message); NaN or Inf with
        ``check_finite``.
    ShapeMismatchError
        ``method="tsqr"`` on a wide matrix.
    """
    _checks.require_matrix(a, "a")
    if mode not in _MODES:
        raise ValueError(f"mode must be 'reduced' or 'r', got {mode!r} (numpy.linalg.qr's "
                         f"'complete' and 'raw' are not supported)")
    if method not in _METHODS:
        raise ValueError(f"method must be 'auto', 'householder' or 'tsqr', got {method!r}")
    panel = _checks.check_panel(panel)
    m, n = a.shape
    if method == "auto":
        method = choose_method(a.shape)
    if method == "tsqr" and m < n:
        raise ShapeMismatchError(f"method='tsqr' needs a tall matrix (m >= n), got shape "
                                 f"{a.shape}")
    want_q = mode == "reduced"
    with _c.operation("qr"):
        if check_finite:
            _checks.check_finite((a, "a"))
        if method == "tsqr":
            Q, R = tsqr(a, want_q=want_q)
            Rd = replicated_to_dist(R, a.grid, a.block)
            return (Q, Rd) if want_q else Rd
        dtype = _checks.common_dtype(a)
        work = DistMatrix._wrap(np.array(a.local, dtype=dtype, order="C"), a.shape, a.block,
                                a.grid)
        refl = geqrf(work, panel, keep=want_q)
        R = _extract_r(work)
        p = _diag_phases(R)
        R.local *= np.conj(p)[R.global_rows][:, None]
        if not want_q:
            return R
        Q = orgqr(work, refl)
        Q.local *= p[Q.global_cols][None, :]
    return Q, R


def replicated_to_dist(R: np.ndarray, grid: ProcessGrid, block: tuple[int, int]) -> DistMatrix:
    """``R`` (the same on every rank) as a DistMatrix on ``grid`` with ``block`` (no message)."""
    lay = Layout(R.shape, block, grid.shape)
    local = np.ascontiguousarray(R[np.ix_(lay.rows(grid.myrow), lay.cols(grid.mycol))])
    return DistMatrix._wrap(local, R.shape, block, grid)


class Reflectors:
    """The block reflectors of a blocked QR: per panel ``(k0, kw, V rows here, T)``."""

    def __init__(self) -> None:
        self.panels: list[tuple[int, int, np.ndarray, np.ndarray]] = []


def geqrf(a: DistMatrix, panel: int | None = None, keep: bool = True) -> Reflectors:
    """Overwrite ``a`` with ``R`` (on and above the diagonal) and the reflectors (below).

    Collective over the grid (internal).  Returns the panels' ``V`` and ``T`` when ``keep``.
    """
    m, n = a.shape
    k = min(m, n)
    grid = a.grid
    idx = Index(a.layout, grid)
    A = a.local
    nb = a.block[1]
    w = min(panel or nb, nb)
    refl = Reflectors()
    pr, pc = grid.shape
    if pr == 1 and pc > 1 and k:
        return _geqrf_row_lookahead(a, idx, w, keep)
    k0 = 0
    while k0 < k:
        kw = min(w, nb - k0 % nb, k - k0)
        owner = int(a.layout.col_owner(k0))
        lr0 = idx.row_start(k0)
        nloc = A.shape[0] - lr0
        if grid.mycol == owner:
            lc0 = idx.col_start(k0)
            V, T = _factor_panel(idx, A, k0, kw, lr0, lc0)
        if pc > 1:
            buf = np.empty(nloc * kw + kw * kw, dtype=A.dtype)
            if grid.mycol == owner:
                buf[:nloc * kw] = V.ravel()
                buf[nloc * kw:] = T.ravel()
            if buf.size:
                _c.bcast(grid.row_comm, buf, owner)
            V = buf[:nloc * kw].reshape(nloc, kw)
            T = buf[nloc * kw:].reshape(kw, kw)
        lct = idx.col_start(k0 + kw)
        if lct < A.shape[1]:
            A2 = A[lr0:, lct:]
            W = V.conj().T @ A2
            if pr > 1:
                _c.allreduce(grid.col_comm, W)
            gemm_update(A2, V, T.conj().T @ W)
        if keep:
            refl.panels.append((k0, kw, V, T))
        k0 += kw
    return refl


def _steps(k: int, nb: int, w: int) -> list[tuple[int, int]]:
    """``(k0, kw)`` of the panels: at most ``w`` columns, never across a block boundary."""
    out, k0 = [], 0
    while k0 < k:
        kw = min(w, nb - k0 % nb, k - k0)
        out.append((k0, kw))
        k0 += kw
    return out


#: Columns per GEMM chunk of the look-ahead update (the broadcast in flight is tested
#: between chunks, since MPICH progresses only inside MPI calls).
UPDATE_CHUNK = 512


def _apply_left(A: np.ndarray, V: np.ndarray, T: np.ndarray, lr0: int, c0: int, c1: int,
                req: _c.Request | None = None) -> None:
    """``A[lr0:, c0:c1] = (I - V T V^H)^H A[lr0:, c0:c1]`` on one process row (rank-local)."""
    TH = T.conj().T
    for a in range(c0, c1, UPDATE_CHUNK):
        b = min(c1, a + UPDATE_CHUNK)
        A2 = A[lr0:, a:b]
        gemm_update(A2, V, TH @ (V.conj().T @ A2))
        if req is not None:
            req.test()


def _geqrf_row_lookahead(a: DistMatrix, idx: Index, w: int, keep: bool) -> Reflectors:
    """:func:`geqrf` on a ``1 x P`` grid with a look-ahead of one panel.

    The owner of panel ``i + 1`` applies panel ``i``'s reflectors to those columns first,
    factors them (LAPACK, all rows are local) and starts their broadcast along the row
    before it updates the rest of its columns; the other ranks post the broadcast and
    update, so nobody waits for a panel while it has work.  Collective over the row.
    """
    m, n = a.shape
    grid = a.grid
    A = a.local
    steps = _steps(min(m, n), a.block[1], w)
    owners = [int(a.layout.col_owner(k0)) for k0, _ in steps]
    refl = Reflectors()

    def post(i: int) -> tuple[_c.Request, np.ndarray]:
        k0, kw = steps[i]
        nloc = m - k0
        buf = np.empty(nloc * kw + kw * kw, dtype=A.dtype)
        if grid.mycol == owners[i]:
            V, T = _factor_panel(idx, A, k0, kw, k0, idx.col_start(k0))
            buf[:nloc * kw] = V.ravel()
            buf[nloc * kw:] = T.ravel()
        return _c.ibcast(grid.row_comm, buf, owners[i]), buf

    req, buf = post(0)
    for i, (k0, kw) in enumerate(steps):
        req.wait()
        nloc = m - k0
        V = buf[:nloc * kw].reshape(nloc, kw)
        T = buf[nloc * kw:].reshape(kw, kw)
        lct = idx.col_start(k0 + kw)
        ncols = A.shape[1]
        nxt = None
        if i + 1 < len(steps):
            k1, kw1 = steps[i + 1]
            if grid.mycol == owners[i + 1]:
                p0, p1 = idx.col_start(k1), idx.col_start(k1 + kw1)
                _apply_left(A, V, T, k0, p0, p1)
                nxt = post(i + 1)
                _apply_left(A, V, T, k0, lct, p0, nxt[0])
                _apply_left(A, V, T, k0, p1, ncols, nxt[0])
            else:
                nxt = post(i + 1)
                _apply_left(A, V, T, k0, lct, ncols, nxt[0])
        else:
            _apply_left(A, V, T, k0, lct, ncols)
        if keep:
            refl.panels.append((k0, kw, V, T))
        if nxt is not None:
            req, buf = nxt
    return refl


def _factor_panel(idx: Index, A: np.ndarray, k0: int, kw: int, lr0: int, lc0: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Factor the panel ``A[k0:, k0:k0+kw]`` in place inside its process column.

    Collective over the column communicator.  Returns ``V`` (this rank's panel rows, unit
    lower trapezoidal, explicit) and ``T``.
    """
    grid = idx.grid
    P = A[lr0:, lc0:lc0 + kw]
    grows = idx.myrows[lr0:]
    gcols = k0 + np.arange(kw)
    if grid.shape[0] == 1:
        geqrf_ = lapack.get_lapack_funcs("geqrf", dtype=A.dtype)
        fac, tau, _, info = geqrf_(np.asfortranarray(P), lwork=64 * kw, overwrite_a=True)
        if info < 0:  # pragma: no cover - a LAPACK argument error is a bug here
            raise RuntimeError(f"geqrf: illegal argument {-info}")
        P[...] = fac
        tau = np.asarray(tau[:kw], dtype=A.dtype)
    else:
        tau = _panel_columns(idx, P, k0, kw, lr0)
    below = grows[:, None] > gcols[None, :]
    V = np.where(below, P, 0).astype(A.dtype)
    V[grows[:, None] == gcols[None, :]] = 1
    G = V.conj().T @ V
    if grid.shape[0] > 1:
        _c.allreduce(grid.col_comm, G)
    T = np.zeros((kw, kw), dtype=A.dtype)
    for j in range(kw):
        T[j, j] = tau[j]
        if j:
            T[:j, j] = -tau[j] * (T[:j, :j] @ G[:j, j])
    return V, T


def _panel_columns(idx: Index, P: np.ndarray, k0: int, kw: int, lr0: int) -> np.ndarray:
    """The pdgeqr2 loop: one all-reduce over the column communicator per column.

    The sums are taken in (at least) float64.  When they overflow or underflow (entries
    beyond about ``1e154`` or below ``1e-146`` in float64), the column is summed again
    scaled by its largest magnitude (one more MAX and SUM all-reduce), as LAPACK's
    ``larfg`` rescales.
    """
    grid = idx.grid
    layout = idx.layout
    tau = np.zeros(kw, dtype=P.dtype)
    acc = np.result_type(P.dtype, np.float64)
    real = np.finfo(acc).dtype
    tiny = np.finfo(real).tiny / np.finfo(real).eps
    for j in range(kw):
        g = k0 + j
        a = idx.row_start(g) - lr0            # my first panel row at or below g
        mine = int(layout.row_owner(g)) == grid.myrow
        r = kw - j - 1
        x = P[a:, j]
        rest = P[a:, j + 1:]
        s0 = 1 if mine else 0                 # skip the diagonal row in the sums
        xs, rs = x[s0:], rest[s0:]
        # [sum |x_i|^2, nonzeros, alpha, x^H rest (r), diagonal row of rest (r)], i > g
        buf = np.zeros(3 + 2 * r, dtype=acc)
        xa = xs.astype(acc, copy=False)
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):  # checked below
            buf[0] = np.vdot(xa, xa).real
            if r:
                buf[3:3 + r] = xa.conj() @ rs.astype(acc, copy=False)
        buf[1] = np.count_nonzero(xs)
        if mine:
            buf[2] = x[0]
            buf[3 + r:] = rest[0]
        with np.errstate(over="ignore", invalid="ignore"):
            _c.allreduce(grid.col_comm, buf)
        ssq, alpha, arow = float(buf[0].real), buf[2], buf[3 + r:]
        if buf[1].real == 0 and np.imag(alpha) == 0:
            continue                          # H = I (tau = 0), as LAPACK's larfg
        if np.isfinite(buf[:3 + r]).all() and ssq >= tiny:
            norm = np.sqrt(abs(alpha) ** 2 + ssq)
            sx, z_s, sr = 1.0, buf[3:3 + r], 1.0
        else:
            norm, sx, z_s, sr = _rescaled_sums(grid.col_comm, xs, rs, alpha, acc, real)
        beta = -np.copysign(norm, np.real(alpha))
        t = (beta - alpha) / beta
        scale = 1.0 / (alpha - beta)
        xs *= scale
        if mine:
            x[0] = beta
        tau[j] = t
        if r:
            # v^H rest = rest[g] + conj(scale) x^H rest, with x^H rest = sx * z_s * sr
            wvec = np.conj(t) * (arow + np.conj(scale * sx) * (z_s * sr))
            if mine:
                rest[0] -= wvec
            rs -= np.outer(xs, wvec)
    return tau


def _rescaled_sums(col_comm, xs: np.ndarray, rs: np.ndarray, alpha, acc, real):
    """Column norm and ``x^H rest`` from data scaled by their largest magnitudes.

    Returns ``(norm, sx, z_s, sr)`` with ``norm = ||[alpha; x]||`` and
    ``x^H rest = sx * z_s * sr`` (``sr`` per column of ``rest``).  Collective over
    ``col_comm`` (a MAX and a SUM all-reduce).
    """
    r = rs.shape[1]
    mx = np.zeros(1 + r, dtype=real)
    if xs.size:
        mx[0] = np.abs(xs).max()
        if r:
            mx[1:] = np.abs(rs).max(axis=0)
    _c.allreduce(col_comm, mx, MPI.MAX)
    sx = float(mx[0]) if mx[0] > 0 else 1.0
    sr = np.where(mx[1:] > 0, mx[1:], 1.0)
    xa = xs.astype(acc) / sx
    buf = np.zeros(1 + r, dtype=acc)
    buf[0] = np.vdot(xa, xa).real
    if r:
        buf[1:] = xa.conj() @ (rs.astype(acc) / sr)
    _c.allreduce(col_comm, buf)
    norm = sx * np.hypot(abs(alpha) / sx, np.sqrt(buf[0].real))
    return norm, sx, buf[1:], sr


def orgqr(a: DistMatrix, refl: Reflectors) -> DistMatrix:
    """``Q`` (``m x k``) from the reflectors of :func:`geqrf`. Collective over the grid."""
    m, n = a.shape
    k = min(m, n)
    grid = a.grid
    lay = Layout((m, k), a.block, grid.shape)
    rows, cols = lay.rows(grid.myrow), lay.cols(grid.mycol)
    Q = np.zeros((rows.size, cols.size), dtype=a.dtype)
    ii, jj = _diagonal_positions(rows, cols)
    Q[ii, jj] = 1
    for k0, _kw, V, T in reversed(refl.panels):
        lr0 = int(np.searchsorted(rows, k0))
        lc0 = int(np.searchsorted(cols, k0))
        if lc0 == cols.size:
            continue  # the same on the whole process column
        Q2 = Q[lr0:, lc0:]
        W = V.conj().T @ Q2
        if grid.shape[0] > 1:
            _c.allreduce(grid.col_comm, W)
        gemm_update(Q2, V, T @ W)
    return DistMatrix._wrap(Q, (m, k), a.block, grid)


def _extract_r(a: DistMatrix) -> DistMatrix:
    """The upper trapezoid of the first ``k`` rows of the factored ``a`` (no message)."""
    m, n = a.shape
    k = min(m, n)
    rows = a.global_rows
    nr = int(np.searchsorted(rows, k))
    R = np.array(a.local[:nr])
    R[rows[:nr, None] > a.global_cols[None, :]] = 0
    return DistMatrix._wrap(R, (k, n), a.block, a.grid)


def _diag_phases(R: DistMatrix) -> np.ndarray:
    """Unit factors ``p`` of ``diag(R)`` (1 for zero), on every rank. One all-reduce."""
    k = R.shape[0]
    d = np.zeros(k, dtype=R.dtype)
    rows, cols = R.global_rows, R.global_cols
    ii, jj = _diagonal_positions(rows, cols)
    d[rows[ii]] = R.local[ii, jj]
    if R.grid.size > 1 and k:
        _c.allreduce(R.grid.comm, d)
    p = np.ones(k, dtype=R.dtype)
    nz = d != 0
    p[nz] = d[nz] / np.abs(d[nz])
    return p


def _diagonal_positions(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local ``(i, j)`` of the diagonal entries among global ``rows`` x ``cols`` (increasing)."""
    common = np.intersect1d(rows, cols, assume_unique=True)
    return np.searchsorted(rows, common), np.searchsorted(cols, common)
