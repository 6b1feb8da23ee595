"""The general dense solve driver, ``dm.linalg.solve`` (scipy.linalg.solve's meaning)."""

from __future__ import annotations

import numpy as np

from .. import comm as _c
from ..matrix import DistMatrix
from . import _checks
from .cholesky import cho_factor
from .lu import lu_factor
from .refine import refine_solve

__all__ = ["solve"]

_ASSUME = {"gen": "gen", "general": "gen", "pos": "pos", "positive definite": "pos"}


def solve(a: DistMatrix, b: DistMatrix, *, assume_a: str = "gen", lower: bool = False,
          refine: str | None = None, check_finite: bool = True, panel: int | None = None
          ) -> DistMatrix:
    """Solve ``a x = b`` for ``x``. Collective over the grid.

    Parameters
    ----------
    a : DistMatrix
        Square ``n x n`` matrix **(global)**.
    b : DistMatrix
        ``n x k`` right-hand sides (``k >= 1``) on the same grid **(global)**.
    assume_a : {"gen", "pos"}
        "gen": LU with partial pivoting; "pos": Cholesky, ``a`` symmetric (Hermitian)
        positive definite, only the triangle named by ``lower`` is read **(global)**.
    lower : bool
        For "pos": read the lower (True) or upper (False, default) triangle **(global)**.
    refine : {None, "mixed"}
        "mixed": factor in single precision and refine with double-precision residuals
        (LAPACK dsgesv / dsposv), falling back to a double-precision factorization when
        refinement does not reach double accuracy; the result carries
        ``x.refine_info`` (a :class:`distmat.linalg.RefineInfo`: iterations, fallback, ...).
        For float32 input it is the same as None **(global)**.
    check_finite : bool
        Raise ValueError if ``a`` or ``b`` holds NaN or Inf (one all-reduce) **(global)**.
    panel : int, optional
        Algorithmic panel width of the factorization **(global)**.

    Returns
    -------
    DistMatrix
        ``x`` with the shape and block of ``b`` and the promoted dtype of ``a`` and ``b``.

    Raises
    ------
    ValueError
        On every rank, before any message: non-square ``a``, ``b`` with the wrong number of
        rows (ShapeMismatchError), bad ``assume_a`` / ``refine``; after one all-reduce: NaN
        or Inf with ``check_finite``.
    SingularMatrixError
        On every rank for an exactly singular ``a`` (naming the zero pivot's column).
    numpy.linalg.LinAlgError
        On every rank when ``assume_a="pos"`` and ``a`` is not positive definite.
    """
    _checks.require_square(a, "a")
    _checks.require_rhs(a, b, "a", "b")
    try:
        kind = _ASSUME[assume_a]
    except (KeyError, TypeError):
        raise ValueError(f"assume_a must be 'gen' or 'pos', got {assume_a!r}") from None
    if refine not in (None, "mixed"):
        raise ValueError(f"refine must be None or 'mixed', got {refine!r}")
    panel = _checks.check_panel(panel)
    with _c.operation("solve"):
        if check_finite:
            _checks.check_finite((a, "a"), (b, "b"))
        dtype = _checks.common_dtype(a, b)
        if refine == "mixed" and dtype in (np.float64, np.complex128):
            aa = a if a.dtype == dtype else a.astype(dtype)
            bb = _checks.rhs_aligned(b, aa.block[0], dtype)
            x, info = refine_solve(aa, bb, assume_a=kind, lower=lower, panel=panel)
            if x.block != b.block:
                x = x.redistribute(block=b.block)
            x.refine_info = info
            return x
        if a.dtype != dtype:
            a = a.astype(dtype)
        if kind == "pos":
            f = cho_factor(a, lower=lower, check_finite=False, panel=panel)
        else:
            f = lu_factor(a, check_finite=False, panel=panel)
        return f.solve(b, check_finite=False)
