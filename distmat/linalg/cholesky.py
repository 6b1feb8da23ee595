"""Cholesky factorization of a block-cyclic symmetric (Hermitian) positive definite matrix.

Right-looking and blocked by an algorithmic panel width.  Step ``k``: the column panel
``A[k:, k:k+w]`` is gathered on the rank owning ``A[k, k]``, which factors the diagonal block
(``potrf``; a failure is broadcast with the panel, so every rank raises at once), solves the
panel below it and broadcasts the factored panel; then every rank updates the lower part of
its local trailing block, ``A22 -= L21 L21^H``, with local GEMMs over column chunks (only the
blocks that touch the lower triangle, so the flop count stays ``n^3 / 3``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.linalg as sla
from scipy.linalg import lapack

from .. import comm as _c
from ..layout import panels
from ..matrix import DistMatrix
from . import _checks
from . import cholesky_fold as _fold
from . import triangular as _tri
from ._kernels import gemm_update, trsm_inplace
from ._panels import Index, default_panel, panel_to_root
from .lu import lookahead_panel
from .triangular import local_part, replicate, trsm, trsm_replicated

__all__ = ["CholeskyFactor", "cholesky", "cho_factor", "cho_solve"]


class CholeskyFactor:
    """The result of :func:`cho_factor`: ``A = L L^H`` (``lower``) or ``A = U^H U``.

    ``c, lower = cho_factor(A)`` unpacks like scipy's pair.  Unlike scipy, the unused
    triangle of ``c`` holds zeros.
    """

    def __init__(self, c: DistMatrix, lower: bool, panel: int | None = None):
        self.c = c
        self.lower = lower
        self.panel = panel

    def __iter__(self) -> Iterator[object]:
        return iter((self.c, self.lower))

    def solve(self, b: DistMatrix, check_finite: bool = True) -> DistMatrix:
        """Solve ``A x = b``. Collective over the grid; see :func:`cho_solve`."""
        return cho_solve(self, b, check_finite=check_finite)

    def __repr__(self) -> str:
        return (f"CholeskyFactor(shape={self.c.shape}, dtype={self.c.dtype}, "
                f"lower={self.lower})")


def cholesky(a: DistMatrix, lower: bool = False, *, check_finite: bool = True,
             panel: int | None = None) -> DistMatrix:
    """Cholesky factor of a symmetric (Hermitian) positive definite matrix.

    Collective over the grid.  As scipy.linalg.cholesky: ``lower=False`` (default) returns
    upper ``U`` with ``A = U^H U`` and reads the upper triangle of ``a``; ``lower=True``
    returns ``L`` with ``A = L L^H`` and reads the lower triangle.

    Parameters
    ----------
    a : DistMatrix
        Square ``n x n`` matrix **(global)**; not modified.
    lower : bool
        Which factor to return (and which triangle to read) **(global)**.
    check_finite : bool
        Raise ValueError if ``a`` holds NaN or Inf (one all-reduce) **(global)**.
    panel : int, optional
        Columns factored per step **(global)**; default 128.  On one rank LAPACK's
        ``potrf`` factors the local matrix in place and chooses its own blocking.  On a
        ``1 x 2`` grid with a column block of at least 32 and ``n`` above it, the default
        (or ``panel`` equal to the block) takes the two-rank folded layout of
        :mod:`distmat.linalg.cholesky_fold`; another ``panel`` takes the general path.

    Returns
    -------
    DistMatrix
        The triangular factor (zeros in the other triangle), with the layout of ``a``.

    Raises
    ------
    ValueError
        Non-square ``a`` (before any message) or NaN/Inf.
    numpy.linalg.LinAlgError
        On every rank if ``a`` is not positive definite, naming the order of the leading
        minor that fails.
    """
    return cho_factor(a, lower=lower, check_finite=check_finite, panel=panel).c


def cho_factor(a: DistMatrix, lower: bool = False, *, check_finite: bool = True,
               panel: int | None = None) -> CholeskyFactor:
    """Cholesky factorization for :func:`cho_solve` (see :func:`cholesky`).

    Collective over the grid.  Returns a :class:`CholeskyFactor` (``c, lower = ...``).
    """
    _checks.require_square(a, "a")
    panel = _checks.check_panel(panel)
    with _c.operation("cholesky"):
        if check_finite:
            _checks.check_finite((a, "a"))
        dtype = _checks.common_dtype(a)
        if a.grid.size == 1:   # LAPACK in place, either triangle
            local = np.array(a.local, dtype=dtype, order="C")
            _potrf_one_rank(local, lower=bool(lower))
            c = DistMatrix._wrap(local, a.shape, a.block, a.grid)
        elif _fold.applies(a, panel or a.block[1]):
            local = _fold.factor(a, a.block[1], dtype, lower=bool(lower))
            c = DistMatrix._wrap(local, a.shape, a.block, a.grid)
        elif lower:
            local = np.array(a.local, dtype=dtype, order="C")
            c = DistMatrix._wrap(local, a.shape, a.block, a.grid)
            potrf(c, panel)
        else:
            # the upper triangle of a is the lower triangle of a^H
            c = a.astype(dtype)
            c = c.H if dtype.kind == "c" else c.T
            potrf(c, panel)
            c = c.H if dtype.kind == "c" else c.T
            if c.block != a.block:
                c = c.redistribute(block=a.block)
    return CholeskyFactor(c, bool(lower), panel)


def potrf(a: DistMatrix, panel: int | None = None) -> None:
    """Overwrite ``a`` with its lower Cholesky factor (upper part zeroed). Collective."""
    n = a.shape[0]
    grid = a.grid
    A = a.local
    if grid.size == 1:
        _potrf_one_rank(A)
        return
    idx = Index(a.layout, grid)
    w_ahead = lookahead_panel(a, panel) if n else None
    if w_ahead:
        _potrf_row_lookahead(a, idx, w_ahead)
        return
    w = panel or default_panel(n)
    chunk = max(w, 64)
    rows, cols = idx.myrows, idx.mycols
    potrf_ = lapack.get_lapack_funcs("potrf", dtype=A.dtype)
    conj = A.dtype.kind == "c"
    for k, kw in panels(n, w):
        root = idx.owner_rank(k, k)
        pan = panel_to_root(idx, A, k, k, kw, root)
        head = np.zeros(1, dtype=np.int64)
        if grid.rank == root:
            l11, info = potrf_(pan[:kw], lower=1, clean=1, overwrite_a=False)
            head[0] = info
            if info == 0:
                out = np.empty((n - k, kw), dtype=A.dtype)
                out[:kw] = l11
                if n - k > kw:
                    # L21 = A21 L11^{-H}  <=>  L11 L21^H = A21^H
                    rhs = pan[kw:].conj().T if conj else pan[kw:].T
                    y = sla.solve_triangular(l11, rhs, lower=True, check_finite=False)
                    out[kw:] = y.conj().T if conj else y.T
                pan = out
        if grid.size > 1:
            _c.bcast(grid.comm, head, root)
        info = int(head[0])
        if info > 0:
            order = k + info
            raise np.linalg.LinAlgError(f"the matrix is not positive definite: the leading "
                                        f"minor of order {order} is not positive")
        if info < 0:  # pragma: no cover - LAPACK argument error, a bug here
            raise RuntimeError(f"potrf: illegal argument {-info}")
        if grid.rank != root:
            pan = np.empty((n - k, kw), dtype=A.dtype)
        if grid.size > 1:
            _c.bcast(grid.comm, pan, root)
        lr0, lr1 = idx.row_start(k), idx.row_start(k + kw)
        lc0, lc1 = idx.col_start(k), idx.col_start(k + kw)
        if lc1 > lc0 and lr0 < rows.size:
            A[lr0:, lc0:lc1] = pan[np.ix_(rows[lr0:] - k, cols[lc0:lc1] - k)]
        if lc1 == cols.size or lr1 == rows.size:
            continue
        # trailing update of the lower triangle: column chunks of the local trailing block
        lrows = pan[rows[lr1:] - k] if grid.shape[0] > 1 else pan[kw:]
        lcols = pan[cols[lc1:] - k]
        if conj:
            lcols = lcols.conj()
        for j0 in range(0, cols.size - lc1, chunk):
            j1 = min(j0 + chunk, cols.size - lc1)
            g = int(cols[lc1 + j0])           # first global column of the chunk
            r = max(idx.row_start(g), lr1)     # rows at or below it
            if r == rows.size:
                break
            gemm_update(A[r:, lc1 + j0:lc1 + j1], lrows[r - lr1:], lcols[j0:j1],
                        b_transposed=True)
    zero_upper(A, rows, cols)


def _potrf_one_rank(A: np.ndarray, lower: bool = True) -> None:
    """LAPACK ``potrf`` in place on the whole (C-ordered) matrix held by one rank.

    The C-ordered array is the Fortran-ordered transpose ``A^T``, whose upper (lower)
    triangle is the lower (upper) triangle of ``A``.  Factoring ``A^T = U'^H U'`` stores
    ``U'^T = L`` (``lower``); factoring ``A^T = L' L'^H`` stores ``L'^T = U`` with
    ``A = U^H U``.  Either way the other triangle is zeroed.
    """
    if A.size == 0:
        return
    potrf_ = lapack.get_lapack_funcs("potrf", dtype=A.dtype)
    c, info = potrf_(A.T, lower=0 if lower else 1, clean=1, overwrite_a=1)
    if info == 0 and not np.shares_memory(c, A):   # LAPACK worked on a copy
        A[...] = c.T
    if info > 0:
        raise np.linalg.LinAlgError(f"the matrix is not positive definite: the leading "
                                    f"minor of order {info} is not positive")
    if info < 0:  # pragma: no cover - LAPACK argument error, a bug here
        raise RuntimeError(f"potrf: illegal argument {-info}")


def _potrf_row_lookahead(a: DistMatrix, idx: Index, w: int) -> None:
    """Cholesky on a ``1 x P`` grid with look-ahead (internal; see :func:`lookahead_panel`).

    The owner of panel ``s + 1`` updates those columns first, factors them (``potrf`` and
    the triangular solve below the diagonal block) and starts their broadcast before updating
    the rest of its trailing matrix.
    """
    n = a.shape[0]
    grid = a.grid
    A = a.local
    cols = idx.mycols
    me = grid.mycol
    conj = A.dtype.kind == "c"
    potrf_ = lapack.get_lapack_funcs("potrf", dtype=A.dtype)
    chunk = max(w, 128)
    steps = list(panels(n, w))
    # Buffers allocated once: the panel being applied and the next one alternate between
    # two, and the panel rows matching my columns go to a third.  A fresh multi-megabyte
    # array each step would pay its page faults every step.
    slots = [np.empty(n * w, dtype=A.dtype) for _ in range(2)]
    lbuf = np.empty(cols.size * w, dtype=A.dtype)

    def start(k: int, kw: int, slot: int) -> tuple[np.ndarray, np.ndarray, list]:
        owner = int(idx.layout.col_owner(k))
        head = np.zeros(1, dtype=np.int64)
        pan = slots[slot][:(n - k) * kw].reshape(n - k, kw)
        if me == owner:   # factor in place in my columns, then copy out for the broadcast
            lc0 = idx.col_start(k)
            d = A[k:k + kw, lc0:lc0 + kw]
            l11, info = potrf_(d, lower=1, clean=1)
            head[0] = info
            if info == 0:
                d[...] = l11
                if n - k > kw:   # L21 = A21 L11^{-H}
                    trsm_inplace(A[k + kw:, lc0:lc0 + kw], d, left=False, lower=True,
                                 trans="C" if conj else "T")
                pan[...] = A[k:, lc0:lc0 + kw]
        return head, pan, [_c.ibcast(grid.comm, head, owner), _c.ibcast(grid.comm, pan, owner)]

    def update(k: int, kw: int, pan: np.ndarray, j0: int, j1: int, poll: list) -> None:
        """Lower-triangle update of my local columns j0:j1 (all >= k + kw) by panel k.

        Column ``c`` needs rows ``cols[c]:`` only.  Splitting the columns in halves, the
        left half's rows below the right half's first column form one full rectangle, so
        most of the flops run as a few wide GEMMs (a 128-column GEMM reaches about 2/3 of
        the rate of a 1024-column one) while no flop above the diagonal is spent beyond
        ``chunk``-wide steps.  Between GEMMs it tests the requests in ``poll``: MPI moves
        a large broadcast only while its ranks call into it, so the owner of the next
        panel keeps sending it while busy here.
        """
        if j1 <= j0:
            return
        # the panel rows matching my columns, gathered once
        lcs = np.take(pan, cols[j0:j1] - k, axis=0, mode="clip",   # "raise" would buffer
                      out=lbuf[:(j1 - j0) * kw].reshape(j1 - j0, kw))
        if conj:
            np.conjugate(lcs, out=lcs)

        def gemm(c0: int, c1: int, r0: int, r1: int) -> None:
            if r1 > r0 and c1 > c0:
                gemm_update(A[r0:r1, c0:c1], pan[r0 - k:r1 - k], lcs[c0 - j0:c1 - j0],
                            b_transposed=True)
                poll[:] = [r for r in poll if not r.test()]

        def stair(c0: int, c1: int, rend: int) -> None:
            if c1 - c0 <= chunk:
                gemm(c0, c1, int(cols[c0]), rend)
                return
            mid = (c0 + c1) // 2
            gm = int(cols[mid])
            stair(mid, c1, rend)
            gemm(c0, mid, gm, rend)
            stair(c0, mid, gm)

        stair(j0, j1, n)

    pending = start(*steps[0], 0)
    for s, (k, kw) in enumerate(steps):
        head, pan, reqs = pending
        _c.waitall(reqs)
        info = int(head[0])
        if info > 0:
            raise np.linalg.LinAlgError(f"the matrix is not positive definite: the leading "
                                        f"minor of order {k + info} is not positive")
        lc1 = idx.col_start(k + kw)
        done = lc1
        nxt = steps[s + 1] if s + 1 < len(steps) else None
        if nxt is not None:
            nk, nkw = nxt
            if int(idx.layout.col_owner(nk)) == me:
                ln1 = idx.col_start(nk + nkw)
                update(k, kw, pan, lc1, ln1, [])
                done = ln1
            pending = start(nk, nkw, (s + 1) % 2)
        update(k, kw, pan, done, cols.size, list(pending[2]) if nxt is not None else [])
    zero_upper(A, np.arange(n), cols)


def zero_upper(A: np.ndarray, rows: np.ndarray, cols: np.ndarray, width: int = 128) -> None:
    """Zero the local entries above the diagonal (``rows``/``cols``: their global indices).

    Works ``width`` local columns at a time: the local rows above the first of them are
    zeroed whole and only the rows of a ``width``-wide band go through a mask.
    """
    for c0 in range(0, cols.size, width):
        c1 = min(c0 + width, cols.size)
        g = cols[c0:c1]
        r0 = int(np.searchsorted(rows, g[0]))
        r1 = int(np.searchsorted(rows, g[-1]))
        A[:r0, c0:c1] = 0
        band = A[r0:r1, c0:c1]
        band[rows[r0:r1, None] < g[None, :]] = 0


def cho_solve(c_and_lower: CholeskyFactor | tuple[DistMatrix, bool], b: DistMatrix,
              check_finite: bool = True, panel: int | None = None) -> DistMatrix:
    """Solve ``A x = b`` from a :func:`cho_factor` result (scipy.linalg.cho_solve).

    Collective over the grid.

    Parameters
    ----------
    c_and_lower : CholeskyFactor or (DistMatrix, bool)
        The factor and which triangle holds it **(global)**.
    b : DistMatrix
        ``n x k`` right-hand sides on the grid of the factor **(global)**.
    check_finite : bool
        Raise ValueError if ``b`` holds NaN or Inf **(global)**.

    Returns
    -------
    DistMatrix
        ``x`` with the shape and block of ``b``.
    """
    try:
        c, lower = c_and_lower
    except (TypeError, ValueError):
        raise TypeError("c_and_lower must be the result of cho_factor or a pair "
                        "(c, lower)") from None
    _checks.require_square(c, "c")
    _checks.require_rhs(c, b, "c", "b")
    panel = _checks.check_panel(panel) or getattr(c_and_lower, "panel", None)
    with _c.operation("cho_solve"):
        if check_finite:
            _checks.check_finite((b, "b"))
        dtype = _checks.common_dtype(c, b)
        if c.dtype != dtype:
            c = c.astype(dtype)
        if b.shape[1] <= _tri.REPLICATE_NRHS:
            idx = Index(c.layout, c.grid)
            full = replicate(b, dtype)
            t = "C" if dtype.kind == "c" else "T"
            kw = {"panel": panel, "idx": idx, "unit_diagonal": False}
            if lower:   # L y = b, L^H x = y
                full = trsm_replicated(c, full, lower=True, **kw)
                full = trsm_replicated(c, full, lower=True, trans=t, **kw)
            else:       # U^H y = b, U x = y
                full = trsm_replicated(c, full, lower=False, trans=t, **kw)
                full = trsm_replicated(c, full, lower=False, **kw)
            return local_part(full, b)
        ch = c.H if dtype.kind == "c" else c.T
        if lower:   # L y = b, L^H x = y
            first, second = c, ch
        else:       # U^H y = b, U x = y
            first, second = ch, c
        x = _checks.rhs_aligned(b, first.block[0], dtype)
        trsm(first, x, lower=True, unit_diagonal=False, panel=panel)
        if second.block[0] != first.block[0]:
            x = x.redistribute(block=(second.block[0], x.block[1]))
        trsm(second, x, lower=False, unit_diagonal=False, panel=panel)
        if x.block != b.block:
            x = x.redistribute(block=b.block)
    return x
