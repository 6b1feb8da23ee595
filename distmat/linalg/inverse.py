"""Inverse, determinant and log-determinant from the distributed LU factorization."""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from .. import comm as _c
from ..creation import eye
from ..errors import SingularMatrixError
from ..matrix import DistMatrix
from . import _checks
from .lu import LUFactor, getrf, lu_factor, lu_solve

__all__ = ["inv", "det", "slogdet"]


def inv(a: DistMatrix, *, check_finite: bool = True, panel: int | None = None) -> DistMatrix:
    """The inverse of a square matrix (LU with partial pivoting, then ``n`` solves).

    Collective over the grid.

    Parameters
    ----------
    a : DistMatrix
        Square ``n x n`` matrix **(global)**.
    check_finite : bool
        Raise ValueError if ``a`` holds NaN or Inf **(global)**.
    panel : int, optional
        Algorithmic panel width **(global)**.

    Returns
    -------
    DistMatrix
        ``inv(a)`` with the layout of ``a``.

    Raises
    ------
    ValueError
        Non-square ``a`` or NaN/Inf.
    SingularMatrixError
        On every rank if ``a`` is exactly singular (naming the zero pivot's column).
    """
    _checks.require_square(a, "a")
    with _c.operation("inv"):
        f = lu_factor(a, check_finite=check_finite, panel=panel)
        ident = eye(a.shape[0], dtype=f.dtype, grid=a.grid, block=a.block)
        return lu_solve(f, ident, check_finite=False)


def slogdet(a: DistMatrix, *, check_finite: bool = True, panel: int | None = None
            ) -> tuple[float | complex, float]:
    """Sign and natural log of the absolute determinant, on every rank (numpy.linalg.slogdet).

    Collective over the grid.  A singular matrix gives ``(0.0, -inf)``.

    Returns
    -------
    sign : float or complex
        ``+-1`` for real matrices, a unit-modulus number for complex ones, 0 if singular.
    logabsdet : float
        ``log|det(a)|``.
    """
    _checks.require_square(a, "a")
    _checks.check_panel(panel)
    with _c.operation("slogdet"):
        if check_finite:
            _checks.check_finite((a, "a"))
        dtype = _checks.common_dtype(a)
        lu = DistMatrix._wrap(np.array(a.local, dtype=dtype), a.shape, a.block, a.grid)
        try:
            piv, perm = getrf(lu, panel)
        except SingularMatrixError:
            zero = 0j if dtype.kind == "c" else 0.0
            return zero, float("-inf")
        return _sign_logdet(LUFactor(lu, piv, perm))


def det(a: DistMatrix, *, check_finite: bool = True, panel: int | None = None
        ) -> float | complex:
    """The determinant, on every rank (scipy.linalg.det). Collective over the grid.

    Computed as ``sign * exp(logabsdet)`` from :func:`slogdet`; 0 for a singular matrix.
    """
    sign, logdet = slogdet(a, check_finite=check_finite, panel=panel)
    if sign == 0:
        return sign
    return sign * np.exp(logdet)


def _sign_logdet(f: LUFactor) -> tuple[float | complex, float]:
    lu = f.lu
    n = lu.shape[0]
    rows, cols = lu.global_rows, lu.global_cols
    diag = np.intersect1d(rows, cols, assume_unique=True)
    d = lu.local[np.searchsorted(rows, diag), np.searchsorted(cols, diag)]
    swaps = int(np.count_nonzero(f.piv != np.arange(n)))
    cplx = lu.dtype.kind == "c"
    buf = np.zeros(2, dtype=np.float64)
    with np.errstate(divide="ignore"):
        buf[0] = float(np.sum(np.log(np.abs(d)))) if d.size else 0.0
    buf[1] = float(np.sum(np.angle(d))) if cplx else float(np.count_nonzero(d.real < 0))
    _c.allreduce(lu.grid.comm, buf, MPI.SUM)
    if cplx:
        sign: float | complex = complex(np.exp(1j * buf[1])) * (-1) ** swaps
    else:
        sign = -1.0 if (int(round(buf[1])) + swaps) % 2 else 1.0
    return sign, float(buf[0])
