"""Distributed triangular solves with many right-hand sides (TRSM) (layer 3)."""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from .. import comm as _c
from ..errors import SingularMatrixError
from ..layout import panels
from ..matrix import DistMatrix
from . import _checks
from ._kernels import gemm_update
from ._panels import Index, cols_along_rows, default_panel, rows_along_cols

__all__ = ["solve_triangular", "trsm"]

_TRANS = {0: "N", 1: "T", 2: "C", "N": "N", "T": "T", "C": "C", "n": "N", "t": "T", "c": "C"}


def solve_triangular(a: DistMatrix, b: DistMatrix, *, lower: bool = False,
                     trans: int | str = 0, unit_diagonal: bool = False,
                     check_finite: bool = True, panel: int | None = None) -> DistMatrix:
    """Solve ``op(a) x = b`` for ``x`` with ``a`` triangular (scipy.linalg.solve_triangular).

    Collective over the grid.  Only the triangle named by ``lower`` of ``a`` is read.

    Parameters
    ----------
    a : DistMatrix
        ``n x n`` triangular matrix **(global)**.
    b : DistMatrix
        ``n x k`` right-hand sides on the same grid **(global)**.
    lower : bool
        Use the lower (True) or upper (False, default) triangle of ``a`` **(global)**.
    trans : {0, 1, 2, 'N', 'T', 'C'}
        Solve ``a x = b``, ``a^T x = b`` or ``a^H x = b`` **(global)**.
    unit_diagonal : bool
        Assume ones on the diagonal of ``a`` without reading it **(global)**.
    check_finite : bool
        Raise ValueError if ``a`` or ``b`` holds NaN or Inf (one all-reduce) **(global)**.
    panel : int, optional
        Algorithmic block width (rows solved per step) **(global)**.

    Returns
    -------
    DistMatrix
        ``x``, with the shape and block of ``b``.

    Raises
    ------
    ValueError
        Non-square ``a``, ``b`` with the wrong number of rows, a bad ``trans``, or NaN/Inf.
    SingularMatrixError
        On every rank, when a diagonal entry is exactly zero (naming its global index).
    """
    _checks.require_square(a, "a")
    _checks.require_rhs(a, b, "a", "b")
    try:
        t = _TRANS[trans]
    except (KeyError, TypeError):
        raise ValueError(f"trans must be 0, 1, 2, 'N', 'T' or 'C', got {trans!r}") from None
    panel = _checks.check_panel(panel)
    with _c.operation("solve_triangular"):
        if check_finite:
            _checks.check_finite((a, "a"), (b, "b"))
        dtype = _checks.common_dtype(a, b)
        if a.dtype != dtype:
            a = a.astype(dtype)
        if t != "N":
            a = a.H if (t == "C" and dtype.kind == "c") else a.T
            lower = not lower
        x = _checks.rhs_aligned(b, a.block[0], dtype)
        trsm(a, x, lower=bool(lower), unit_diagonal=bool(unit_diagonal), panel=panel)
        if x.block != b.block:
            x = x.redistribute(block=b.block)
    return x


def trsm(a: DistMatrix, x: DistMatrix, *, lower: bool, unit_diagonal: bool,
         panel: int | None = None, idx: Index | None = None) -> None:
    """Overwrite ``x`` (holding ``b``) with ``a^{-1} b``. Collective over the grid.

    Internal: ``a`` is square and ``x`` conforms, has the dtype of ``a`` and the row block
    of ``a``.  Right-looking: for each block of ``w`` rows, the diagonal block and those rows
    of ``x`` are assembled on every rank of a process column and solved there (redundantly),
    then the column panel of ``a`` below (or above) it, replicated along grid rows, updates
    the rest of ``x`` with one local GEMM.
    """
    n = a.shape[0]
    if n == 0 or x.shape[1] == 0:
        return
    w = panel or default_panel(n)
    grid = a.grid
    if idx is None:
        idx = Index(a.layout, grid)
    X = x.local
    mloc = X.shape[0]
    steps = list(panels(n, w))
    if not lower:
        steps.reverse()
    for k, kw in steps:
        a0, a1 = idx.row_start(k), idx.row_start(k + kw)
        # the part of the column panel a[:, k:k+kw] this rank's rows need
        lr0, lr1 = (a0, mloc) if lower else (0, a1)
        t_rep = cols_along_rows(idx, a.local, lr0, lr1, k, kw)
        t11_mine = t_rep[a0 - lr0:a1 - lr0]
        t11, x1 = rows_along_cols(idx, [t11_mine, X[a0:a1]], k, kw)
        if not unit_diagonal:
            zero = np.nonzero(np.diagonal(t11) == 0)[0]
            if zero.size:
                j = k + int(zero[0])
                raise SingularMatrixError(f"singular matrix: the diagonal entry ({j}, {j}) of "
                                          f"the triangular matrix is exactly zero")
        x1 = sla.solve_triangular(t11, x1, lower=lower, unit_diagonal=unit_diagonal,
                                  check_finite=False, overwrite_b=True)
        x1 = np.ascontiguousarray(x1)
        ri = idx.myrows[a0:a1] - k
        X[a0:a1] = x1[ri]
        if lower:
            gemm_update(X[a1:], t_rep[a1 - lr0:], x1)
        else:
            gemm_update(X[:a0], t_rep[:a0], x1)
