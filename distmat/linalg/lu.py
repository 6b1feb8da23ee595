"""LU factorization with partial pivoting of a block-cyclic matrix (the pdgetrf scheme).

Right-looking and blocked by an algorithmic panel width ``w`` that is independent of the
storage block.  Step ``k`` of ``w`` columns:

1. the column panel ``A[k:, k:k+w]`` is gathered on the rank owning ``A[k, k]``, which
   factors it with LAPACK ``getrf`` (partial pivoting over the whole remaining column, so
   block-local pivoting never happens) and broadcasts the factored panel and its pivots;
   a zero pivot is therefore seen by every rank at once;
2. the panel's row interchanges are applied to all columns, whole rows moving between process
   rows in one all-to-all per process column;
3. the row panel ``U12 = L11^{-1} A12`` is assembled along each process column and solved
   there;
4. the trailing matrix gets one local GEMM, ``A22 -= L21 U12``, with ``L21`` taken from the
   broadcast panel (the broadcast along grid rows of pdgetrf) and ``U12`` from step 3 (the
   broadcast along grid columns).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy.linalg import lapack

from .. import comm as _c
from ..layout import panels
from ..matrix import DistMatrix
from . import _checks
from . import triangular as _tri
from ._kernels import gemm_update, trsm_inplace
from ._panels import Index, default_panel, exchange_rows, ipiv_to_perm, panel_to_root
from .lu_row import getrf_row, lookahead_panel, zero_pivot
from .triangular import local_part, replicate, trsm, trsm_replicated

__all__ = ["LUFactor", "lu_factor", "lu_solve"]


class LUFactor:
    """The result of :func:`lu_factor`: ``A[perm, :] = L @ U``.

    Attributes
    ----------
    lu : DistMatrix
        ``L`` (unit lower, below the diagonal) and ``U`` (on and above) in one matrix, with
        the layout of ``A``.
    piv : ndarray
        LAPACK-style pivots, 0-based as in scipy: row ``i`` was interchanged with row
        ``piv[i]`` (the same on every rank).
    perm : ndarray
        The row permutation: row ``i`` of ``L @ U`` is row ``perm[i]`` of ``A``.

    ``lu, piv = lu_factor(A)`` unpacks like scipy's pair.
    """

    def __init__(self, lu: DistMatrix, piv: np.ndarray, perm: np.ndarray,
                 panel: int | None = None):
        self.lu = lu
        self.piv = piv
        self.perm = perm
        self.panel = panel

    @property
    def shape(self) -> tuple[int, int]:
        return self.lu.shape

    @property
    def dtype(self) -> np.dtype:
        return self.lu.dtype

    def __iter__(self) -> Iterator[object]:
        return iter((self.lu, self.piv))

    def solve(self, b: DistMatrix, trans: int | str = 0, check_finite: bool = True
              ) -> DistMatrix:
        """Solve ``A x = b`` (``trans=0``), ``A^T x = b`` (1) or ``A^H x = b`` (2).

        Collective over the grid; see :func:`lu_solve`.
        """
        return lu_solve(self, b, trans=trans, check_finite=check_finite)

    def __repr__(self) -> str:
        return f"LUFactor(shape={self.shape}, dtype={self.dtype}, block={self.lu.block})"


def lu_factor(a: DistMatrix, *, check_finite: bool = True, panel: int | None = None
              ) -> LUFactor:
    """LU factorization with partial pivoting, ``A[perm] = L U``. Collective over the grid.

    Parameters
    ----------
    a : DistMatrix
        Square ``n x n`` matrix **(global)**; not modified.
    check_finite : bool
        Raise ValueError if ``a`` holds NaN or Inf (one all-reduce) **(global)**.
    panel : int, optional
        Columns factored per step **(global)**; default 128 (any value works, independent
        of the storage block; wider panels make the trailing GEMM larger).

    Returns
    -------
    LUFactor
        ``.lu`` (DistMatrix), ``.piv`` and ``.perm`` (global pivot data), ``.solve(b)``.

    Raises
    ------
    ValueError
        On every rank, before any message, if ``a`` is not square; after one all-reduce if it
        holds NaN or Inf.
    SingularMatrixError
        On every rank if a pivot is exactly zero, naming its global column.
    """
    _checks.require_square(a, "a")
    panel = _checks.check_panel(panel)
    with _c.operation("lu_factor"):
        if check_finite:
            _checks.check_finite((a, "a"))
        dtype = _checks.common_dtype(a)
        local = np.array(a.local, dtype=dtype, order="C")
        lu = DistMatrix._wrap(local, a.shape, a.block, a.grid)
        piv, perm = getrf(lu, panel)
    return LUFactor(lu, piv, perm, panel)


def getrf(a: DistMatrix, panel: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Factor ``a`` in place; return ``(piv, perm)``. Collective over the grid (internal)."""
    n = a.shape[0]
    grid = a.grid
    idx = Index(a.layout, grid)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    w_ahead = lookahead_panel(a, panel)
    if w_ahead:
        return getrf_row(a, idx, w_ahead)
    A = a.local
    w = panel or default_panel(n)
    perm = np.arange(n, dtype=np.int64)
    piv = np.arange(n, dtype=np.int64)
    getrf_ = lapack.get_lapack_funcs("getrf", dtype=A.dtype)
    rows, cols = idx.myrows, idx.mycols
    for k, kw in panels(n, w):
        root = idx.owner_rank(k, k)
        pan = panel_to_root(idx, A, k, k, kw, root)
        head = np.zeros(kw + 1, dtype=np.int64)
        if grid.rank == root:
            lu_p, ip, info = getrf_(pan, overwrite_a=True)
            head[0] = info
            head[1:] = ip[:kw]
            pan = np.ascontiguousarray(lu_p)
        else:
            pan = np.empty((n - k, kw), dtype=A.dtype)
        if grid.size > 1:
            _c.bcast(grid.comm, head, root)
        info = int(head[0])
        if info < 0:  # pragma: no cover - LAPACK argument error, a bug here
            raise RuntimeError(f"getrf: illegal argument {-info}")
        if info > 0:
            raise zero_pivot(k + info - 1)
        if grid.size > 1:
            _c.bcast(grid.comm, pan, root)
        # 2. row interchanges over all local columns
        ip = head[1:]
        p_loc = ipiv_to_perm(ip, n - k)
        moved = np.nonzero(p_loc != np.arange(n - k))[0]
        exchange_rows(idx, A, k + moved, k + p_loc[moved])
        perm[k:] = perm[k:][p_loc]
        piv[k:k + kw] = k + ip
        # write the factored panel back
        lr0, lr1 = idx.row_start(k), idx.row_start(k + kw)
        lc0, lc1 = idx.col_start(k), idx.col_start(k + kw)
        if lc1 > lc0 and lr0 < rows.size:
            A[lr0:, lc0:lc1] = pan[np.ix_(rows[lr0:] - k, cols[lc0:lc1] - k)]
        ntr = cols.size - lc1
        if ntr == 0:
            continue  # the same on every rank of this process column
        # 3. U12 = L11^{-1} A12 on every rank of the process column
        if grid.shape[0] == 1:
            u12 = np.array(A[k:k + kw, lc1:])
        else:
            u12 = np.zeros((kw, ntr), dtype=A.dtype)
            u12[rows[lr0:lr1] - k] = A[lr0:lr1, lc1:]
            _c.allreduce(grid.col_comm, u12)
        trsm_inplace(u12, pan[:kw], left=True, lower=True, unit_diagonal=True)
        A[lr0:lr1, lc1:] = u12[rows[lr0:lr1] - k]
        # 4. trailing update with one GEMM
        if lr1 < rows.size:
            if grid.shape[0] == 1:
                l21 = pan[kw:]
            else:
                l21 = pan[rows[lr1:] - k]
            gemm_update(A[lr1:, lc1:], l21, u12)
    return piv, perm


def lu_solve(lu_and_piv: LUFactor, b: DistMatrix, trans: int | str = 0,
             check_finite: bool = True, panel: int | None = None) -> DistMatrix:
    """Solve ``A x = b`` from an :func:`lu_factor` result (scipy.linalg.lu_solve).

    Collective over the grid.

    Parameters
    ----------
    lu_and_piv : LUFactor
        The factorization **(global)**.
    b : DistMatrix
        ``n x k`` right-hand sides on the grid of the factor **(global)**.
    trans : {0, 1, 2, 'N', 'T', 'C'}
        Solve ``A x = b``, ``A^T x = b`` or ``A^H x = b`` **(global)**.
    check_finite : bool
        Raise ValueError if ``b`` holds NaN or Inf **(global)**.

    Returns
    -------
    DistMatrix
        ``x`` with the shape, block and (promoted) dtype of ``b``.
    """
    if not isinstance(lu_and_piv, LUFactor):
        raise TypeError(f"lu_and_piv must be the LUFactor returned by lu_factor, got "
                        f"{type(lu_and_piv).__name__}")
    f = lu_and_piv
    lu = f.lu
    _checks.require_rhs(lu, b, "the factor", "b")
    tr = {0: 0, 1: 1, 2: 2, "N": 0, "T": 1, "C": 2}.get(trans, None) \
        if not isinstance(trans, bool) else None
    if tr is None:
        raise ValueError(f"trans must be 0, 1, 2, 'N', 'T' or 'C', got {trans!r}")
    panel = _checks.check_panel(panel) or f.panel
    with _c.operation("lu_solve"):
        if check_finite:
            _checks.check_finite((b, "b"))
        dtype = _checks.common_dtype(lu, b)
        if lu.dtype != dtype:
            lu = lu.astype(dtype)
        n = lu.shape[0]
        if b.shape[1] <= _tri.REPLICATE_NRHS:
            idx = Index(lu.layout, lu.grid)
            full = replicate(b, dtype)
            kw = {"panel": panel, "idx": idx}
            if tr == 0:
                full = full[f.perm]
                full = trsm_replicated(lu, full, lower=True, unit_diagonal=True, **kw)
                full = trsm_replicated(lu, full, lower=False, unit_diagonal=False, **kw)
            else:
                t = "C" if tr == 2 else "T"
                full = trsm_replicated(lu, full, lower=False, trans=t, unit_diagonal=False, **kw)
                full = trsm_replicated(lu, full, lower=True, trans=t, unit_diagonal=True, **kw)
                out = np.empty_like(full)
                out[f.perm] = full
                full = out
            return local_part(full, b)
        if tr == 0:
            x = _checks.rhs_aligned(b, lu.block[0], dtype)
            idx = Index(lu.layout, lu.grid)
            _permute(Index(x.layout, x.grid), x, f.perm)
            trsm(lu, x, lower=True, unit_diagonal=True, panel=panel, idx=idx)
            trsm(lu, x, lower=False, unit_diagonal=False, panel=panel, idx=idx)
        else:
            lt = lu.H if (tr == 2 and dtype.kind == "c") else lu.T
            x = _checks.rhs_aligned(b, lt.block[0], dtype)
            ti = Index(lt.layout, lt.grid)
            trsm(lt, x, lower=True, unit_diagonal=False, panel=panel, idx=ti)
            trsm(lt, x, lower=False, unit_diagonal=True, panel=panel, idx=ti)
            inv = np.empty(n, dtype=np.int64)
            inv[f.perm] = np.arange(n, dtype=np.int64)
            _permute(Index(x.layout, x.grid), x, inv)
        if x.block != b.block:
            x = x.redistribute(block=b.block)
    return x


def _permute(idx: Index, x: DistMatrix, perm: np.ndarray) -> None:
    """Row ``i`` of ``x`` becomes its old row ``perm[i]`` (collective over process columns)."""
    moved = np.nonzero(perm != np.arange(perm.size))[0]
    exchange_rows(idx, x.local, moved, perm[moved])
