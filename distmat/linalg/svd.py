"""Thin SVD of a tall-skinny (or short-wide) matrix through TSQR and the SVD of the small R.

``A = Q R`` by TSQR, ``R = U_r S V^H`` by LAPACK on rank 0 (broadcast, so every rank holds
the same ``s`` and ``V^H``), and ``U = Q U_r`` formed on the way down the TSQR tree (the
tree's coefficients start from ``U_r`` instead of the identity, so ``Q`` itself is never
stored).  A wide matrix is handled as ``A^H``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
from mpi4py import MPI

from .. import comm as _c
from ..matrix import DistMatrix
from . import _checks
from .tsqr import RowSlabs, TSQRTree

__all__ = ["svd", "SVD_MAX_K", "replicated_svd"]

#: Largest ``min(m, n)`` :func:`svd` accepts: its ``R`` (``k x k``) is replicated on every
#: rank and factored on one (``O(k^3)``); beyond this use :func:`distmat.linalg.svds`.
SVD_MAX_K = 4096


def replicated_svd(comm: MPI.Comm, R: np.ndarray, compute_uv: bool
                   ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """SVD of a small matrix held by every rank, computed on rank 0. Collective.

    Returns ``(U_r, s, Vh)``: ``s`` and ``Vh`` are broadcast (bitwise the same on every
    rank), ``U_r`` is returned on rank 0 only (None elsewhere).  A LAPACK failure on rank 0
    raises the same LinAlgError everywhere.
    """
    k, n = R.shape
    kk = min(k, n)
    real = np.finfo(R.dtype).dtype
    u = vh = None
    s = np.empty(kk, dtype=real)
    with _c.agreed(comm):
        if comm.Get_rank() == 0:
            if compute_uv:
                u, s[...], vh = sla.svd(R, full_matrices=False, check_finite=False,
                                        lapack_driver="gesdd")
            else:
                s[...] = sla.svdvals(R, check_finite=False)
    if comm.Get_size() > 1 and kk:
        _c.bcast(comm, s, 0)
    if not compute_uv:
        return None, s, None
    if comm.Get_rank() != 0:
        vh = np.empty((kk, n), dtype=R.dtype)
    vh = np.ascontiguousarray(vh)
    if comm.Get_size() > 1 and vh.size:
        _c.bcast(comm, vh, 0)
    return u, s, vh


def svd(a: DistMatrix, full_matrices: bool = False, compute_uv: bool = True, *,
        check_finite: bool = True):
    """Thin singular value decomposition ``a = U diag(s) Vh``. Collective over the grid.

    For tall-skinny ``a`` (``m >= n``, ``n`` up to :data:`SVD_MAX_K`): TSQR, then the SVD of
    the small ``n x n`` ``R``.  Wide ``a`` is factored as ``a^H``.  The large factor is
    distributed, the small ones are numpy arrays, the same on every rank.

    Parameters
    ----------
    a : DistMatrix
        ``m x n`` matrix **(global)**; not modified.
    full_matrices : bool
        Must be False (the thin SVD); True raises NotImplementedError **(global)**.
    compute_uv : bool
        Also compute the singular vectors **(global)**.
    check_finite : bool
        Raise ValueError if ``a`` holds NaN or Inf (one all-reduce) **(global)**.

    Returns
    -------
    m >= n, compute_uv=True : (U, s, Vh)
        ``U`` DistMatrix ``m x n`` on ``a``'s grid with ``a``'s block; ``s`` ndarray (``n``,
        descending, real); ``Vh`` ndarray ``n x n``.  ``s`` and ``Vh`` on every rank.
    m < n, compute_uv=True : (U, s, Vh)
        ``U`` ndarray ``m x m`` on every rank; ``s`` ndarray (``m``); ``Vh`` DistMatrix
        ``m x n`` on ``a``'s grid.
    compute_uv=False : s
        ndarray of the ``min(m, n)`` singular values on every rank.

    Raises
    ------
    TypeError
        If ``a`` is not a DistMatrix.
    NotImplementedError
        For ``full_matrices=True``.
    ValueError
        If ``min(m, n) > SVD_MAX_K`` (a square-ish large matrix: use
        :func:`distmat.linalg.svds` for its leading singular triplets), or for NaN/Inf.
    numpy.linalg.LinAlgError
        On every rank if LAPACK's SVD of ``R`` does not converge.
    """
    _checks.require_matrix(a, "a")
    if full_matrices:
        raise NotImplementedError("svd(full_matrices=True) is not implemented: the complete "
                                  "m x m (or n x n) basis of a tall matrix is rarely wanted and "
                                  "large; use full_matrices=False")
    m, n = a.shape
    if min(m, n) > SVD_MAX_K:
        raise ValueError(f"svd handles tall-skinny or short-wide matrices (min(m, n) <= "
                         f"{SVD_MAX_K}); a has shape {a.shape}, whose small side would be "
                         f"factored on one rank. Use dm.linalg.svds(a, k) for its leading "
                         f"singular triplets")
    with _c.operation("svd"):
        if check_finite:
            _checks.check_finite((a, "a"))
        if m < n:
            out = _svd_tall(a.H, bool(compute_uv))
            if not compute_uv:
                return out
            u, s, vh = out
            return vh.conj().T.copy(), s, u.H
        return _svd_tall(a, bool(compute_uv))


def _svd_tall(a: DistMatrix, compute_uv: bool):
    m, n = a.shape
    dtype = _checks.common_dtype(a)
    comm = a.grid.comm
    real = np.finfo(dtype).dtype
    if n == 0:
        s = np.zeros(0, dtype=real)
        if not compute_uv:
            return s
        U = DistMatrix._wrap(np.zeros((a.local.shape[0], 0), dtype=dtype), a.shape, a.block,
                             a.grid)
        return U, s, np.zeros((0, 0), dtype=dtype)
    slabs = RowSlabs.for_matrix(a)
    rows = slabs.rows_of(a)
    if rows.dtype != dtype:
        rows = rows.astype(dtype)
    tree = TSQRTree(comm, rows, slabs.counts, n, compute_uv)
    R = tree.r_replicated()
    u_r, s, vh = replicated_svd(comm, R, compute_uv)
    if not compute_uv:
        return s
    c_root = np.diag(tree.signs()) @ u_r if comm.Get_rank() == 0 else None
    U = slabs.to_matrix(tree.q_rows(c_root, n), n, a.block)
    return U, s, vh
