"""Linear least squares through QR (numpy.linalg.lstsq's meaning, full-rank problems).

- ``m >= n`` (over-determined or square): ``A = Q R``, ``X = R^{-1} Q^H B``.  For
  tall-skinny ``A`` (the TSQR rule of :func:`distmat.linalg.qr.choose_method`) and ``k <= n``
  one TSQR of the augmented ``[A  B]`` gives ``R``, ``Q^H B`` and the residual norms at once
  (the last ``k`` rows of its triangle), so ``Q`` is never formed and no product with ``A``
  is needed.  Otherwise (many right-hand sides: the augmented TSQR would cost
  ``2 m (n + k)^2`` flops) QR (TSQR when tall-skinny, else blocked Householder), ``Q^H B`` by
  SUMMA, a distributed triangular solve, and the residual ``B - A X`` by SUMMA.
- ``m < n`` (under-determined): the minimum-norm solution from the QR of ``A^H``:
  ``A^H = Q R``, ``X = Q R^{-H} B``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from .. import comm as _c
from ..errors import ShapeMismatchError
from ..matrix import DistMatrix, check_same_grid
from ..summa import matmul
from . import _checks
from .qr import choose_method, qr, replicated_to_dist
from .svd import replicated_svd
from .triangular import replicate, solve_triangular
from .tsqr import RowSlabs, factor_rows, tsqr

__all__ = ["lstsq", "LSTSQ_SVALS_MAX"]

#: Up to this ``min(m, n)`` the blocked path replicates ``R`` to compute ``s`` (and the
#: numerical rank from it); above, ``s`` is None and the rank test reads ``diag(R)``.
LSTSQ_SVALS_MAX = 1024


def lstsq(a: DistMatrix, b: DistMatrix, rcond: float | None = None, *,
          check_finite: bool = True):
    """Least-squares solution of ``a x = b`` for full-rank ``a``. Collective over the grid.

    Parameters
    ----------
    a : DistMatrix
        ``m x n`` coefficient matrix, any shape, full rank **(global)**.
    b : DistMatrix
        ``m x k`` right-hand sides on the same grid **(global)**.
    rcond : float, optional
        Relative cut-off for the rank test **(global)**: singular values (or, above
        :data:`LSTSQ_SVALS_MAX`, ``|R_ii|``) at most ``rcond`` times the largest count as
        zero.  Default ``eps * max(m, n)`` in the working precision (numpy's default).
    check_finite : bool
        Raise ValueError if ``a`` or ``b`` holds NaN or Inf (one all-reduce) **(global)**.

    Returns
    -------
    x : DistMatrix
        ``n x k`` solution (the minimum-norm one when ``m < n``), on the grid, with ``b``'s
        block and the promoted dtype.
    residues : ndarray
        Squared 2-norms of the columns of ``b - a x`` (real, length ``k``) when ``m > n``;
        empty (shape ``(0,)``) otherwise, as in numpy.  The same on every rank.
    rank : int
        ``min(m, n)`` (a rank-deficient ``a`` raises instead).
    s : ndarray or None
        The singular values of ``a`` (descending), computed as those of the small triangular
        factor ``R`` on rank 0 and broadcast; None when ``min(m, n) > LSTSQ_SVALS_MAX`` on
        the blocked path (the rank test then uses the diagonal of ``R``).

    Raises
    ------
    TypeError
        If ``a`` or ``b`` is not a DistMatrix.
    ShapeMismatchError
        If ``b`` does not have ``m`` rows (naming both shapes).
    GridMismatchError
        If ``a`` and ``b`` live on different grids.
    numpy.linalg.LinAlgError
        On every rank if ``a`` is rank deficient by the test above (QR without pivoting
        cannot give the minimum-norm solution of a rank-deficient problem).
    """
    _checks.require_matrix(a, "a")
    _checks.require_matrix(b, "b")
    m, n = a.shape
    if b.shape[0] != m:
        raise ShapeMismatchError(f"b with shape {b.shape} does not conform with a of shape "
                                 f"{a.shape}: b needs {m} rows")
    check_same_grid(a, b, "lstsq(a, b)")
    if rcond is not None and not (isinstance(rcond, (int, float, np.floating, np.integer))
                                  and not isinstance(rcond, bool) and rcond >= 0):
        raise ValueError(f"rcond must be a non-negative number or None, got {rcond!r}")
    dtype = _checks.common_dtype(a, b)
    real = np.finfo(dtype).dtype
    if rcond is None:
        rcond = float(np.finfo(dtype).eps) * max(m, n, 1)
    with _c.operation("lstsq"):
        if check_finite:
            _checks.check_finite((a, "a"), (b, "b"))
        if a.dtype != dtype:
            a = a.astype(dtype)
        if b.dtype != dtype:
            b = b.astype(dtype)
        if m >= n:
            if choose_method(a.shape) == "tsqr" and b.shape[1] <= n:
                return _tall_tsqr(a, b, dtype, rcond)
            return _tall_blocked(a, b, dtype, rcond)
        return _wide(a, b, dtype, real, rcond)


def _check_rank(s: np.ndarray | None, diag: np.ndarray | None, rcond: float, n: int) -> int:
    """``n``, or LinAlgError (the same on every rank: the inputs are replicated)."""
    vals = s if s is not None else np.abs(diag)
    if vals.size == 0:
        return 0
    top = float(vals.max())
    rank = int(np.count_nonzero(vals > rcond * top)) if top > 0 else 0
    if rank < n:
        what = "singular values" if s is not None else "|diag(R)|"
        raise np.linalg.LinAlgError(
            f"lstsq: a is rank deficient (numerical rank {rank} < {n}: {n - rank} of its "
            f"{what} are <= rcond * max = {rcond:.3g} * {top:.3g}); distmat's QR-based lstsq "
            f"needs full rank (use svd/svds and a truncated pseudo-inverse)")
    return rank


def _tall_tsqr(a: DistMatrix, b: DistMatrix, dtype: np.dtype, rcond: float):
    """``m >= n``, tall-skinny: one TSQR of ``[a b]``."""
    m, n = a.shape
    k = b.shape[1]
    comm = a.grid.comm
    slabs = RowSlabs.for_matrix(a)
    rows = np.hstack([slabs.rows_of(a).astype(dtype, copy=False),
                      slabs.rows_of(b).astype(dtype, copy=False)])
    _, Raug = factor_rows(comm, rows, slabs.counts, n + k, want_q=False)
    R = Raug[:n, :n]
    _, s, _ = replicated_svd(comm, R, compute_uv=False)
    rank = _check_rank(s, None, rcond, n)
    x = sla.solve_triangular(R, Raug[:n, n:], lower=False, check_finite=False)
    tail = Raug[n:, n:]  # rows n.. of Q^H [a b] restricted to b: the residual's coordinates
    residues = (np.sum(np.abs(tail) ** 2, axis=0).astype(np.finfo(dtype).dtype) if m > n
                else np.zeros(0, dtype=np.finfo(dtype).dtype))
    X = replicated_to_dist(np.ascontiguousarray(x), b.grid, b.block)
    return X, residues, rank, s


def _tall_blocked(a: DistMatrix, b: DistMatrix, dtype: np.dtype, rcond: float):
    """``m >= n``, general: QR (``method="auto"``), ``Q^H B`` and a triangular solve."""
    m, n = a.shape
    grid = a.grid
    Q, R = qr(a, check_finite=False)
    s, diag = _spectrum_or_diag(R)
    rank = _check_rank(s, diag, rcond, n)
    C = matmul(Q, b, trans_a="C")
    X = solve_triangular(R, C, lower=False, check_finite=False)
    if X.block != b.block:
        X = X.redistribute(block=b.block)
    real = np.finfo(dtype).dtype
    if m > n:
        res = b - matmul(a, X)
        col = np.zeros(b.shape[1], dtype=real)
        col[res.global_cols] = np.sum(np.abs(res.local) ** 2, axis=0)
        if grid.size > 1 and col.size:
            _c.allreduce(grid.comm, col)
        residues = col
    else:
        residues = np.zeros(0, dtype=real)
    return X, residues, rank, s


def _spectrum_or_diag(R: DistMatrix) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Singular values of the square ``R`` (small: replicated), else its diagonal."""
    k = R.shape[0]
    grid = R.grid
    if k <= LSTSQ_SVALS_MAX:
        full = replicate(R, R.dtype)
        _, s, _ = replicated_svd(grid.comm, full, compute_uv=False)
        return s, None
    d = np.zeros(k, dtype=R.dtype)
    rows, cols = R.global_rows, R.global_cols
    common = np.intersect1d(rows, cols, assume_unique=True)
    d[common] = R.local[np.searchsorted(rows, common), np.searchsorted(cols, common)]
    if grid.size > 1:
        _c.allreduce(grid.comm, d)
    return None, d


def _wide(a: DistMatrix, b: DistMatrix, dtype: np.dtype, real: np.dtype, rcond: float):
    """``m < n``: minimum-norm solution ``X = Q R^{-H} B`` from ``a^H = Q R``."""
    m, n = a.shape
    aH = a.H
    if choose_method(aH.shape) == "tsqr":
        Q, R = tsqr(aH)
        _, s, _ = replicated_svd(a.grid.comm, R, compute_uv=False)
        rank = _check_rank(s, None, rcond, m)
        y = sla.solve_triangular(R, replicate(b, dtype), lower=False, trans="C",
                                 check_finite=False)
        Y = replicated_to_dist(np.ascontiguousarray(y), b.grid, (Q.block[1], b.block[1]))
    else:
        Q, Rd = qr(aH, method="householder", check_finite=False)
        s, diag = _spectrum_or_diag(Rd)
        rank = _check_rank(s, diag, rcond, m)
        Y = solve_triangular(Rd, b, lower=False, trans="C", check_finite=False)
    X = matmul(Q, Y)
    if X.block != b.block:
        X = X.redistribute(block=b.block)
    return X, np.zeros(0, dtype=real), rank, s
