"""Mixed-precision solve: float32 factorization, float64 iterative refinement.

The LAPACK ``dsgesv`` / ``dsposv`` scheme: factor a float32 copy of ``A`` (half the memory
traffic and about twice the GEMM speed), solve, then repeat ``r = b - A x`` in float64,
``d = A32^{-1} r`` with the float32 factors, ``x += d`` until every column satisfies
``||r||_inf <= ||x||_inf ||A||_inf eps sqrt(n)`` (float64 ``eps``).  If the float32
factorization fails, ``A`` does not fit in float32, the residual stops shrinking or 30
iterations pass, it falls back to a float64 factorization.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

from .. import comm as _c
from ..matrix import DistMatrix
from ..norms import norm
from .cholesky import cho_factor
from .lu import lu_factor

__all__ = ["RefineInfo", "refine_solve", "residual"]

ITERMAX = 30
#: Fall back once an iteration shrinks the worst column's residual ratio by less than this.
STALL = 0.5


@dataclass(frozen=True)
class RefineInfo:
    """How a mixed-precision solve went (attached to its result as ``x.refine_info``).

    Attributes
    ----------
    iterations : int
        Refinement steps taken with the float32 factors (0 if the first solve was enough).
    converged : bool
        True when the float32 factors reached float64 accuracy.
    fallback : bool
        True when the result comes from a float64 factorization instead.
    reason : str
        Why it fell back ("" if it did not).
    backward_error : float
        The final ``max_j ||r_j|| / (||A|| ||x_j||)`` (infinity norms).
    """

    iterations: int
    converged: bool
    fallback: bool
    reason: str
    backward_error: float


def residual(a: DistMatrix, x: DistMatrix, b: DistMatrix) -> DistMatrix:
    """``b - a @ x`` for ``n x k`` ``x`` and ``b`` with ``a``'s row block. Collective.

    ``x`` is replicated on every rank (``n k`` words, cheap for the few right-hand sides of a
    solve), each rank multiplies its local block, and one all-reduce along grid rows sums the
    partial products.
    """
    grid = a.grid
    n, k = x.shape
    xr, xc = x.global_rows, x.global_cols
    full = np.zeros((n, k), dtype=np.result_type(a.dtype, x.dtype))
    full[np.ix_(xr, xc)] = x.local
    if grid.size > 1 and full.size:
        _c.allreduce(grid.comm, full)
    part = np.ascontiguousarray(a.local @ full[a.global_cols])
    if grid.shape[1] > 1 and part.size:
        _c.allreduce(grid.row_comm, part)
    r = b.local - part[:, b.global_cols]
    return DistMatrix._wrap(r, b.shape, b.block, b.grid)


def _colnorms(m: DistMatrix) -> np.ndarray:
    """Infinity norm of each local column of ``m`` (max over the process column)."""
    v = np.abs(m.local).max(axis=0) if m.local.shape[0] else np.zeros(m.local.shape[1])
    v = np.ascontiguousarray(v, dtype=np.float64)
    if m.grid.shape[0] > 1 and v.size:
        _c.allreduce(m.grid.col_comm, v, MPI.MAX)
    return v


def _worst(grid, r: DistMatrix, x: DistMatrix, anrm: float, eps: float, n: int
           ) -> tuple[bool, float]:
    """(every column converged, max backward error) on every rank."""
    rn, xn = _colnorms(r), _colnorms(x)
    ok = bool(np.all(rn <= xn * anrm * eps * np.sqrt(n)))
    with np.errstate(divide="ignore", invalid="ignore"):
        be = rn / (anrm * xn)
    be = np.where(rn == 0, 0.0, be)
    worst = float(np.nanmax(be)) if be.size else 0.0
    if np.isnan(be).any():
        worst = np.inf
    buf = np.array([0.0 if ok else 1.0, worst])
    _c.allreduce(grid.comm, buf, MPI.MAX)
    return not buf[0], float(buf[1])


def refine_solve(a: DistMatrix, b: DistMatrix, *, assume_a: str = "gen", lower: bool = False,
                 panel: int | None = None) -> tuple[DistMatrix, RefineInfo]:
    """Solve ``a x = b`` with float32 factors and float64 refinement. Collective.

    ``a`` and ``b`` are float64 (or complex128) and already checked (internal: called by
    :func:`distmat.linalg.solve` with ``refine="mixed"``).  Returns ``x`` (with ``b``'s row
    block aligned to ``a``) and a :class:`RefineInfo`.
    """
    grid = a.grid
    n = a.shape[0]
    low = np.complex64 if a.dtype.kind == "c" else np.float32
    eps = float(np.finfo(a.dtype).eps)
    anrm = norm(a, np.inf)
    reason = ""
    f32 = None
    if anrm > float(np.finfo(np.float32).max) / 2:
        reason = "||A|| does not fit in float32"
    else:
        try:
            a32 = a.astype(low)
            if assume_a == "pos":
                f32 = cho_factor(a32, lower=lower, check_finite=False, panel=panel)
            else:
                f32 = lu_factor(a32, check_finite=False, panel=panel)
        except np.linalg.LinAlgError as e:  # raised on every rank alike
            reason = f"float32 factorization failed: {e}"
    iters = 0
    if f32 is not None:
        x = f32.solve(b.astype(low), check_finite=False).astype(a.dtype)
        r = residual(a, x, b)
        done, berr = _worst(grid, r, x, anrm, eps, n)
        while not done:
            if iters == ITERMAX:
                reason = f"no float64 accuracy after {ITERMAX} refinement steps"
                break
            if not np.isfinite(berr):
                reason = "the float32 solution is not finite"
                break
            d = f32.solve(r.astype(low), check_finite=False)
            x.local += d.local
            iters += 1
            r = residual(a, x, b)
            prev = berr
            done, berr = _worst(grid, r, x, anrm, eps, n)
            if not done and not berr < STALL * prev:
                reason = (f"refinement stalled at step {iters} (backward error {berr:.2e} "
                          f"after {prev:.2e})")
                break
        if done:
            return x, RefineInfo(iters, True, False, "", berr)
    if assume_a == "pos":
        f64 = cho_factor(a, lower=lower, check_finite=False, panel=panel)
    else:
        f64 = lu_factor(a, check_finite=False, panel=panel)
    x = f64.solve(b, check_finite=False)
    r = residual(a, x, b)
    _, berr = _worst(grid, r, x, anrm, eps, n)
    return x, RefineInfo(iters, False, True, reason, berr)
