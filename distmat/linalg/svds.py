"""Randomized truncated SVD ``A ~ U diag(s) Vh`` (``dm.linalg.svds``, layer 3).

The range finder of Halko, Martinsson and Tropp (2011, algorithms 4.4 and 5.1) with every
large step distributed and nothing of size ``m x n`` moved or anything of size ``m`` or
``n`` replicated on every rank:

1. ``Omega`` (``n x l``, ``l = k + oversample`` capped at ``min(m, n)``) holds the entries
   of ``dm.random((n, l), "normal", seed=seed)``: the same sketch on any grid, and each rank
   draws only the rows it needs;
2. ``Y = A Omega``;
3. ``power_iters`` times: ``Q = qr(Y)``, ``Z = A^H Q``, ``Q_z = qr(Z)``, ``Y = A Q_z``
   (re-orthonormalised subspace iteration, so the small singular values are not lost to
   rounding);
4. ``Q = qr(Y)`` (``m x l``), ``B^H = A^H Q`` (``n x l``);
5. ``B^H = Q_b R_b`` by TSQR, and the SVD of the small ``l x l`` ``R_b^H = U_r S V_r^H``
   (LAPACK on rank 0, broadcast), so ``B = U_r S (Q_b V_r)^H``;
6. ``U = Q U_r[:, :k]`` and ``V = Q_b V_r[:, :k]``, ``Vh = V^H``.  Each singular pair is
   scaled by the sign (phase) that makes the largest entry of its column of ``U`` real
   positive (scikit-learn's ``svd_flip`` convention), so the vectors depend neither on sign
   choices inside LAPACK nor on the grid.

Products with ``A`` use :mod:`distmat.linalg._local_operator`: the thin ``m x l`` matrices
live as ``[MC,*]`` (this process row's rows, every column) and the ``n x l`` ones as
``[MR,*]``, so ``A Omega`` is one local GEMM (or block-sparse product) and one all-reduce of
``(m / pr) l`` numbers along the grid row, and ``A^H Q`` one local GEMM and one all-reduce
down the grid column; ``A`` itself never moves (SUMMA would broadcast ``A``'s panels for
these thin products).  Every QR is :func:`distmat.linalg.tsqr.tsqr` of a tall ``? x l``
DistMatrix built from the replicated rows without messages (``Z`` through one distributed
transpose); its ``R`` has a non-negative diagonal, so ``Q`` is unique and the result does
not depend on the grid beyond rounding.  Cost: ``2 + 2 power_iters`` local products with
``A`` (``4 m n l / p`` flops in all per pass pair) and as many TSQRs of ``? x l`` matrices.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mpi4py import MPI

from .. import comm as _c
from ..layout import Layout
from ..matrix import DistMatrix, default_block
from ..rng import standard_normal
from ..sparse.bsr import BlockSparseMatrix
from ._local_operator import LocalOperator
from .svd import replicated_svd
from .tsqr import tsqr

__all__ = ["svds"]


def _check_int(v: Any, name: str, lo: int, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo \
            or (hi is not None and v > hi):
        what = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ValueError(f"{name} must be an integer {what}, got {v!r}")
    return int(v)


def _rows_times(X: DistMatrix, M: np.ndarray) -> np.ndarray:
    """This process row's rows of ``X @ M`` (all columns), for a replicated ``M``.

    ``X`` is ``r x l`` distributed, ``M`` is ``l x k`` on every rank.  Each rank multiplies
    its piece by the rows of ``M`` of its columns; one all-reduce along the grid row sums
    them, so the ranks of a grid row hold the same rows.  Collective.
    """
    part = np.ascontiguousarray(X.local @ M[X.global_cols])
    if X.grid.shape[1] > 1:
        _c.allreduce(X.grid.row_comm, part)
    return part


def _wrap_rows(part: np.ndarray, X: DistMatrix) -> DistMatrix:
    """The ``r x k`` DistMatrix with ``X``'s row block whose rows here are ``part``."""
    grid = X.grid
    r, k = X.shape[0], part.shape[1]
    block = (X.block[0], default_block((r, k), grid.shape)[1])
    cols = Layout((r, k), block, grid.shape).cols(grid.mycol)
    return DistMatrix._wrap(np.ascontiguousarray(part[:, cols]), (r, k), block, grid)


def _phases(part: np.ndarray, rows: np.ndarray, grid) -> np.ndarray:
    """Unit scalars ``c`` that make the largest entry of each column of ``U c`` real positive.

    ``part`` holds this process row's rows (global indices ``rows``, increasing) of ``U``,
    the same on the ranks of a grid row.  Ties in magnitude go to the smallest row index.
    Three all-reduces of ``k`` numbers down the grid column.  Collective.
    """
    k = part.shape[1]
    mag = np.abs(part)
    amax = mag.max(axis=0).astype(np.float64) if part.shape[0] else np.zeros(k)
    _c.allreduce(grid.col_comm, amax, MPI.MAX)
    none = np.iinfo(np.int64).max
    idx = np.full(k, none, dtype=np.int64)
    if part.shape[0]:
        hit = mag == amax
        has = hit.any(axis=0)
        idx[has] = rows[np.argmax(hit, axis=0)[has]]
    _c.allreduce(grid.col_comm, idx, MPI.MIN)
    val = np.zeros(k, dtype=part.dtype)
    pos = np.searchsorted(rows, idx)
    mine = (pos < rows.size) & (idx != none)
    mine[mine] = rows[pos[mine]] == idx[mine]
    val[mine] = part[pos[mine], np.flatnonzero(mine)]
    _c.allreduce(grid.col_comm, val)
    c = np.ones(k, dtype=part.dtype)
    nz = np.abs(val) > 0
    c[nz] = np.conj(val[nz]) / np.abs(val[nz])
    return c


def svds(A: DistMatrix | BlockSparseMatrix, k: int, *, oversample: int = 10,
         power_iters: int = 2, seed: int = 0
         ) -> tuple[DistMatrix, np.ndarray, DistMatrix]:
    """The ``k`` leading singular triplets by a randomized range finder. Collective.

    Parameters
    ----------
    A : DistMatrix or BlockSparseMatrix
        ``m x n``, any shape, float32, float64, complex64 or complex128 **(global)**.  Not
        modified.
    k : int
        Number of singular triplets, ``1 <= k <= min(m, n)`` **(global)**.  Unlike
        ``scipy.sparse.linalg.svds`` (``k < min(m, n)``), ``k = min(m, n)`` is allowed.
    oversample : int
        Extra sketch columns, ``>= 0`` **(global)**: the sketch has
        ``l = min(k + oversample, m, n)`` columns.
    power_iters : int
        Subspace iterations, ``>= 0`` **(global)**; each costs two products with ``A`` and
        two TSQRs and sharpens the result on slowly decaying spectra.
    seed : int
        Seed of the Gaussian sketch ``dm.random((n, l), "normal", seed=seed)``
        **(global)**; the result does not depend on the grid (up to rounding).

    Returns
    -------
    U : DistMatrix
        ``m x k`` with orthonormal columns, on ``A``'s grid with ``A``'s row block; the entry
        of largest magnitude of each column is real and positive.
    s : ndarray
        The ``k`` singular values (real), in **descending** order, on every rank
        (``scipy.sparse.linalg.svds`` returns them ascending).
    Vh : DistMatrix
        ``k x n`` with orthonormal rows, on ``A``'s grid with ``A``'s column block.

    Raises
    ------
    TypeError
        If ``A`` is not a DistMatrix or BlockSparseMatrix.
    ValueError
        If ``k``, ``oversample``, ``power_iters`` or ``seed`` is out of range (on every rank,
        before any message), or if ``A`` holds NaN or Inf (agreed: one small all-reduce).
    numpy.linalg.LinAlgError
        On every rank if LAPACK's SVD of the small matrix fails.

    Notes
    -----
    The algorithm and its costs are in :mod:`distmat.linalg.svds`.  With ``p =
    oversample`` and ``q = power_iters`` the expected spectral error is within a factor
    ``(1 + 9 sqrt(l min(m, n)))^(1 / (2q + 1))`` or so of the optimal ``s[k]`` (Halko et al.,
    section 10); on matrices whose spectrum decays it is close to optimal.

    Examples
    --------
    >>> U, s, Vh = dm.linalg.svds(A, 10)                 # s[0] >= s[1] >= ...
    >>> approx = U @ dm.from_global(np.diag(s), grid=A.grid, root=None) @ Vh
    """
    if not isinstance(A, (DistMatrix, BlockSparseMatrix)):
        raise TypeError(f"A must be a distmat.DistMatrix or distmat.sparse.BlockSparseMatrix, "
                        f"got {type(A).__name__}")
    m, n = A.shape
    if min(m, n) < 1:
        raise ValueError(f"A must have at least one row and one column, got shape {A.shape}")
    k = _check_int(k, "k", 1, min(m, n))
    oversample = _check_int(oversample, "oversample", 0)
    power_iters = _check_int(power_iters, "power_iters", 0)
    seed = _check_int(seed, "seed", 0)
    grid = A.grid
    comm = grid.comm
    dtype = A.dtype
    l = min(k + oversample, m, n)  # noqa: E741 - Halko et al.'s name for the sketch width
    op = LocalOperator(A)
    mb, nb = op.block
    lb = default_block((max(m, n), l), grid.shape)[1]
    rows_l = Layout((l, n), (lb, nb), grid.shape).rows(grid.myrow)

    def a_times(X_mr: np.ndarray) -> np.ndarray:  # A X: [MR,*] -> [MC,*]
        out = np.ascontiguousarray(op.times(X_mr))
        if grid.shape[1] > 1:
            _c.allreduce(grid.row_comm, out)
        return out

    def ah_times(Y_mc: np.ndarray) -> np.ndarray:  # A^H Y: [MC,*] -> [MR,*]
        out = np.ascontiguousarray(op.h_times(Y_mc))
        if grid.shape[0] > 1:
            _c.allreduce(grid.col_comm, out)
        return out

    def orth_mc(Y_mc: np.ndarray) -> np.ndarray:  # Q of qr(Y) as [MC,*]
        lay = Layout((m, l), (mb, lb), grid.shape)
        Yd = DistMatrix._wrap(np.ascontiguousarray(Y_mc[:, lay.cols(grid.mycol)]), (m, l),
                              (mb, lb), grid)
        Q, _r = tsqr(Yd)
        return _gather_cols(Q.local, lay.cols(grid.mycol), l, grid)

    def orth_mr(Z_mr: np.ndarray, keep: bool = False):  # Q of qr(Z) as [MR,*] (and Q, R)
        Zt = DistMatrix._wrap(np.ascontiguousarray(Z_mr[:, rows_l].T), (l, n), (lb, nb), grid)
        Q, R = tsqr(Zt.T)  # one distributed transpose to the tall n x l
        if keep:
            return Q, R
        Qt = Q.T  # l x n with block (lb, nb): this process column's rows of Q, some columns
        Qmr = np.zeros((n_loc, l), dtype=Q.dtype)
        Qmr[:, rows_l] = Qt.local.T
        if grid.shape[0] > 1:
            _c.allreduce(grid.col_comm, Qmr)
        return Qmr

    n_loc = op.nloc
    with _c.operation("svds"):
        with _c.agreed(comm):  # NaN / Inf on one rank: the same error everywhere
            if not np.isfinite(op.values).all():
                raise ValueError("A must contain only finite values (it holds NaN or Inf)")
        omega = standard_normal(op.cols, np.arange(l), l, seed, 0)
        if dtype.kind == "c":
            omega = omega + 1j * standard_normal(op.cols, np.arange(l), l, seed, 1)
        Y = a_times(omega.astype(dtype))
        for _ in range(power_iters):
            Y = a_times(orth_mr(ah_times(orth_mc(Y))))
        Q = orth_mc(Y)
        Qb, Rb = orth_mr(ah_times(Q), keep=True)  # B^H = A^H Q = Qb Rb, so B = Rb^H Qb^H
        # R_b = U_a S V_a^H, so R_b^H = V_a S U_a^H: U_r = V_a, V_r = U_a
        u_a, s, vh_a = replicated_svd(comm, Rb, compute_uv=True)
        if comm.Get_size() > 1:
            if comm.Get_rank() != 0:
                u_a = np.empty((l, l), dtype=Rb.dtype)
            u_a = np.ascontiguousarray(u_a)
            _c.bcast(comm, u_a, 0)
        Umc = Q @ vh_a[:k].conj().T  # [MC,*]: no message
        c = _phases(Umc, op.rows, grid)  # fix each singular vector's sign / phase
        Umc *= c
        ub = (mb, default_block((m, k), grid.shape)[1])
        U = DistMatrix._wrap(np.ascontiguousarray(
            Umc[:, Layout((m, k), ub, grid.shape).cols(grid.mycol)]), (m, k), ub, grid)
        V = _wrap_rows(_rows_times(Qb, np.ascontiguousarray(u_a[:, :k] * c)), Qb)
        Vh = V.H
    return U, np.array(s[:k]), Vh


def _gather_cols(local: np.ndarray, cols: np.ndarray, ncols: int, grid) -> np.ndarray:
    """Every column of this process row's rows: the pieces summed along the grid row."""
    if grid.shape[1] == 1:
        return np.ascontiguousarray(local)
    full = np.zeros((local.shape[0], ncols), dtype=local.dtype)
    full[:, cols] = local
    _c.allreduce(grid.row_comm, full)
    return full
