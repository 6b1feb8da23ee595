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
        if b.shape[1] <= REPLICATE_NRHS:
            x = trsm_replicated(a, replicate(b, dtype), lower=bool(lower), trans=t,
                                unit_diagonal=bool(unit_diagonal), panel=panel)
            return local_part(x, b)
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


#: Right-hand sides up to this count are solved replicated (see :func:`trsm_replicated`).
REPLICATE_NRHS = 128
#: Default block width of the replicated solve: each step costs one all-reduce, so wide.
REPLICATE_PANEL = 256


def _solved_terms(out: np.ndarray, A: np.ndarray, x: np.ndarray, idx: Index, k: int,
                  arows: tuple[int, int], acols: tuple[int, int], tr: bool, conj: bool,
                  forward: bool) -> None:
    """This rank's part of ``op(a)[block, solved] x[solved]`` for the block at ``k``, into its
    rows of ``out`` (rank-local; ``arows`` / ``acols``: the block's local row / column range).
    """
    rows, cols = idx.myrows, idx.mycols
    a0, a1 = arows
    c0, c1 = acols
    if not tr:   # a[block, j] for the solved columns j held here
        q0, q1 = (0, c0) if forward else (c1, cols.size)
        if a1 > a0 and q1 > q0:
            out[rows[a0:a1] - k] = A[a0:a1, q0:q1] @ x[cols[q0:q1]]
    else:        # a[j, block]^T (^H) for the solved rows j held here
        q0, q1 = (0, a0) if forward else (a1, rows.size)
        if c1 > c0 and q1 > q0:
            xs = x[rows[q0:q1]]
            blk = A[q0:q1, c0:c1].T
            out[cols[c0:c1] - k] = (blk @ xs.conj()).conj() if conj else blk @ xs


def replicate(b: DistMatrix, dtype: np.dtype) -> np.ndarray:
    """The whole of ``b`` on every rank (one all-reduce of ``n x k`` words). Collective."""
    full = np.zeros(b.shape, dtype=dtype)
    full[np.ix_(b.global_rows, b.global_cols)] = b.local
    if b.grid.size > 1 and full.size:
        _c.allreduce(b.grid.comm, full)
    return full


def local_part(full: np.ndarray, like: DistMatrix) -> DistMatrix:
    """The DistMatrix with ``like``'s layout whose global matrix is ``full`` (no message)."""
    local = np.ascontiguousarray(full[np.ix_(like.global_rows, like.global_cols)])
    return DistMatrix._wrap(local, like.shape, like.block, like.grid)


def trsm_replicated(a: DistMatrix, x: np.ndarray, *, lower: bool, trans: str = "N",
                    unit_diagonal: bool, panel: int | None = None,
                    idx: Index | None = None) -> np.ndarray:
    """Solve ``op(a) y = x`` for a right-hand side ``x`` held whole on every rank.

    Collective over the grid; returns ``y`` (the same on every rank) and may overwrite ``x``.
    For few right-hand sides: instead of moving panels of ``a`` (``n w`` words per step), each
    rank forms the terms ``op(a)[block, solved] y[solved]`` of the next block from its own
    part of ``a``, and one all-reduce of ``w x (k + w)`` words per step sums them and
    assembles the block's diagonal block.  ``trans`` is "N", "T" or "C"; ``op(a)`` is never
    formed.  The terms are formed in whichever order keeps most ranks busy:

    - eagerly (right-looking): once a block is solved, the ranks holding ``op(a)``'s block
      column add its products into the terms of every block still to solve.  Those are one
      process column (a row for ``trans``), so this order suits tall grids;
    - lazily (left-looking): just before a block is solved, the ranks holding ``op(a)``'s block
      row multiply it by everything solved so far.  Those are one process row (a column for
      ``trans``), so this order suits wide grids, where eagerly only one rank would work.
    """
    n = a.shape[0]
    nrhs = x.shape[1]
    if n == 0 or nrhs == 0:
        return x
    w = panel or REPLICATE_PANEL
    grid = a.grid
    if idx is None:
        idx = Index(a.layout, grid)
    A = a.local
    rows, cols = idx.myrows, idx.mycols
    tr = trans != "N"
    conj = trans == "C" and A.dtype.kind == "c"
    forward = lower != tr            # op(a) is lower triangular: solve from the top
    pr, pc = grid.shape
    lazy = pc > pr if not tr else pr > pc
    acc = None if lazy else np.zeros_like(x)
    steps = list(panels(n, w))
    if not forward:
        steps.reverse()
    code = {"N": 0, "T": 1, "C": 2}[trans]
    for k, kw in steps:
        a0, a1 = idx.row_start(k), idx.row_start(k + kw)
        c0, c1 = idx.col_start(k), idx.col_start(k + kw)
        buf = np.zeros((kw, nrhs + kw), dtype=x.dtype)
        if lazy:
            _solved_terms(buf[:, :nrhs], A, x, idx, k, (a0, a1), (c0, c1), tr, conj, forward)
        else:
            buf[:, :nrhs] = acc[k:k + kw]
        if a1 > a0 and c1 > c0:
            ri, ci = rows[a0:a1] - k, nrhs + cols[c0:c1] - k
            if ri[-1] - ri[0] == ri.size - 1 and ci[-1] - ci[0] == ci.size - 1:  # contiguous
                buf[ri[0]:ri[-1] + 1, ci[0]:ci[-1] + 1] = A[a0:a1, c0:c1]
            else:
                buf[np.ix_(ri, ci)] = A[a0:a1, c0:c1]
        if grid.size > 1:
            _c.allreduce(grid.comm, buf)
        d = buf[:, nrhs:]
        if not unit_diagonal:
            zero = np.nonzero(np.diagonal(d) == 0)[0]
            if zero.size:
                j = k + int(zero[0])
                raise SingularMatrixError(f"singular matrix: the diagonal entry ({j}, {j}) of "
                                          f"the triangular matrix is exactly zero")
        rhs = x[k:k + kw] - buf[:, :nrhs]
        y1 = sla.solve_triangular(d, rhs, lower=lower, trans=code, unit_diagonal=unit_diagonal,
                                  check_finite=False, overwrite_b=True)
        x[k:k + kw] = y1
        if lazy:
            continue
        if not tr:
            # acc[i] += a[i, block] y1 for my rows i still to solve
            r0, r1 = (a1, rows.size) if forward else (0, a0)
            if r1 > r0 and c1 > c0:
                ys = np.ascontiguousarray(y1[cols[c0:c1] - k])
                part = acc[rows[r0:r1]] if grid.shape[0] > 1 else acc[r0:r1]
                gemm_update(part, A[r0:r1, c0:c1], ys, alpha=1.0)
                if grid.shape[0] > 1:
                    acc[rows[r0:r1]] = part
        else:
            # acc[i] += op(a)[i, block] y1 = a[block, i]^T y1 for my columns i still to solve
            q0, q1 = (c1, cols.size) if forward else (0, c0)
            if q1 > q0 and a1 > a0:
                blk = A[a0:a1, q0:q1]
                blk = blk.conj() if conj else blk
                acc[cols[q0:q1]] += blk.T @ y1[rows[a0:a1] - k]
    return x
