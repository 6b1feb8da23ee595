"""Krylov solvers ``cg``, ``gmres`` (restarted) and ``bicgstab`` with scipy's conventions.

``A`` is a :class:`~distmat.sparse.BlockSparseMatrix` (or a dense DistMatrix, converted to
block-sparse storage once), ``b`` an ``n x 1`` DistMatrix.  Internally the operator is moved
once to contiguous row slabs over all ranks (:mod:`.rowop`): every vector is a numpy array of
this rank's rows, a product is one halo all-to-all plus a local scipy kernel, vector updates
are local numpy and each inner product is a local ``vdot`` plus one all-gather of the parts
(:func:`distmat.comm.allsum`, summed in rank order).  ``x`` comes back with ``b``'s layout.
Every convergence and breakdown decision is taken from these sums, which are bitwise the same
on every rank, so all ranks leave the loop together.

Preconditioners: :func:`block_jacobi` / :func:`jacobi` objects and matrices are moved to the
slabs once (no message per application); any other callable is called as ``M(r)`` with ``r``
an ``n x 1`` DistMatrix in ``b``'s layout (two redistributions per application).

The iterations follow ``scipy.sparse.linalg`` (same recurrences, same stopping test
``||b - A x|| <= max(rtol * ||b||, atol)``), so iteration counts agree with scipy's for the
same preconditioner up to rounding.

``info``: 0 converged; ``> 0`` the iteration limit was reached (the value of ``maxiter``);
``< 0`` breakdown:

- ``cg``: -10 when ``p^H A p`` is zero, negative (``A`` or ``M`` not positive definite) or
  not finite, or ``r^H z`` is not finite;
- ``bicgstab``: -10 when ``rho`` vanishes, -11 when ``omega`` or ``rtilde^H v`` vanishes (as
  scipy), -12 when a quantity becomes non-finite;
- ``gmres``: -10 when the residual becomes non-finite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.linalg import get_lapack_funcs

from ... import comm as _c
from ...errors import GridMismatchError, ShapeMismatchError
from ...matrix import DistMatrix
from ..bsr import BlockSparseMatrix
from ..convert import from_dense
from .precond import BlockJacobi
from .rowop import RowLayout, RowOperator

__all__ = ["cg", "gmres", "bicgstab"]


class _System:
    """The operator, right-hand side, preconditioner and reduced inner products of one solve.

    Vectors are numpy arrays of this rank's row slab (see :mod:`.rowop`).  Collective to
    build; :meth:`finish` frees the internal grid.
    """

    def __init__(self, A: Any, b: Any, x0: Any, M: Any, name: str):
        if isinstance(A, DistMatrix):
            if A.shape[0] != A.shape[1]:
                raise ShapeMismatchError(f"{name}: A must be square, got shape {A.shape}")
            A = from_dense(A)
        if not isinstance(A, BlockSparseMatrix):
            raise TypeError(f"{name}: A must be a BlockSparseMatrix or a DistMatrix, got "
                            f"{type(A).__name__}")
        n = A.shape[0]
        if A.shape[0] != A.shape[1]:
            raise ShapeMismatchError(f"{name}: A must be square, got shape {A.shape}")
        if not isinstance(b, DistMatrix):
            raise TypeError(f"{name}: b must be an n x 1 DistMatrix, got {type(b).__name__}")
        if b.shape[0] != n or b.shape[1] < 1:
            raise ShapeMismatchError(f"{name}: b must have shape ({n}, k) with k >= 1 for A of "
                                     f"shape {A.shape}, got {b.shape}")
        if not A.grid.compatible(b.grid):
            raise GridMismatchError(f"{name}: A and b live on different grids")
        if x0 is not None:
            if not isinstance(x0, DistMatrix):
                raise TypeError(f"{name}: x0 must be a DistMatrix or None")
            if x0.shape != b.shape:
                raise ShapeMismatchError(f"{name}: x0 must have the shape of b {b.shape}, got "
                                         f"{x0.shape}")
        if M is not None and not callable(M) and \
                not isinstance(M, (BlockSparseMatrix, DistMatrix)):
            raise TypeError(f"{name}: M must be None, a matrix or a callable M(r) -> z")
        if isinstance(M, (BlockSparseMatrix, DistMatrix)) and M.shape != (n, n):
            raise ShapeMismatchError(f"{name}: M must have shape {(n, n)}, got {M.shape}")
        bad = np.array([0 if np.all(np.isfinite(b.local)) else 1], dtype=np.int64)
        _c.allreduce(A.grid.comm, bad)
        if bad[0]:
            raise ValueError(f"{name}: the right-hand side b contains NaN or inf")
        self.name = name
        self.A, self.grid, self.n, self.bs = A, A.grid, n, A.bs
        self.b_block, self.b_grid = b.block, b.grid
        self.dtype = np.result_type(A.dtype, b.dtype, np.float32)
        self.lay = RowLayout(A.grid, n, A.bs)
        self.op = RowOperator(A, self.lay, self.dtype)
        self.k = b.shape[1]
        self.b = self.lay.from_dist(b).astype(self.dtype).reshape(self.lay.nloc, self.k)
        if x0 is None:
            self.x = np.zeros_like(self.b)
            self.x_is_zero = np.ones(self.k, dtype=bool)
        else:
            self.x = self.lay.from_dist(x0).astype(self.dtype).reshape(self.lay.nloc, self.k)
            flag = np.any(self.x, axis=0).astype(np.int64)
            _c.allreduce(self.grid.comm, flag)
            self.x_is_zero = flag == 0
        self.psolve = self._make_psolve(M)

    def _make_psolve(self, M: Any) -> Callable[[np.ndarray], np.ndarray]:
        bs = self.bs
        if M is None:
            return lambda r: r.copy()
        if isinstance(M, BlockJacobi) and M.n == self.n and M.bs == bs:
            blocks = M.slab(self.lay).astype(self.dtype, copy=False)
            nown = blocks.shape[0]
            return lambda r: np.matmul(blocks, r.reshape(nown, bs, 1)).reshape(-1)
        if isinstance(M, (BlockSparseMatrix, DistMatrix)):
            Mop = from_dense(M, blocksize=bs) if isinstance(M, DistMatrix) else M
            if Mop.bs != bs:
                Mop = from_dense(Mop.todense(), blocksize=bs)
            mop = RowOperator(Mop, self.lay, self.dtype)
            return mop.matvec

        def apply(r: np.ndarray) -> np.ndarray:
            rd = self.dist(r)
            z = M(rd)
            if not isinstance(z, DistMatrix) or z.shape != rd.shape:
                raise ValueError(f"{self.name}: M(r) must return a DistMatrix of shape "
                                 f"{rd.shape}, got {z!r}")
            return self.lay.from_dist(z).astype(self.dtype, copy=False)

        return apply

    def matvec(self, v: np.ndarray) -> np.ndarray:
        return self.op.matvec(v)

    def dot(self, u: np.ndarray, v: np.ndarray) -> complex | float:
        """``u^H v`` over the grid, bitwise the same on every rank (one all-gather)."""
        buf = np.array([np.vdot(u, v)], dtype=self.dtype)
        _c.allsum(self.grid.comm, buf)
        return buf[0]

    def dots(self, *pairs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """Several inner products ``u^H v`` in one all-gather, the same bits on every rank."""
        buf = np.array([np.vdot(u, v) for u, v in pairs], dtype=self.dtype)
        _c.allsum(self.grid.comm, buf)   # the same bits everywhere: they steer the loop
        return buf

    def norm(self, u: np.ndarray) -> float:
        buf = np.array([np.vdot(u, u).real])
        _c.allsum(self.grid.comm, buf)
        return float(np.sqrt(buf[0]))

    def dist(self, x: np.ndarray) -> DistMatrix:
        """A slab vector as an ``n x 1`` DistMatrix with ``b``'s row block (collective)."""
        return self.lay.to_dist(x, (self.b_block[0], 1), self.b_grid)

    def solve_columns(self, one: Callable[..., tuple[np.ndarray, int]],
                      callback: Any) -> tuple[DistMatrix, int]:
        """Run ``one`` on each column of ``b``; ``x`` in ``b``'s layout and the combined info.

        Columns are solved one after the other with the same operator and preconditioner
        (moved to the slabs once).  The combined ``info`` is the most negative breakdown
        code if any column broke down, else the largest (``maxiter`` if any column did not
        converge, 0 when all did).
        """
        X = np.empty_like(self.x)
        infos = []
        try:
            for j in range(self.k):
                xj, info = one(self.b[:, j].copy(), self.x[:, j].copy(),
                               bool(self.x_is_zero[j]), callback)
                X[:, j] = xj
                infos.append(int(info))
            out = self.lay.to_dist(X, self.b_block, self.b_grid)
        finally:
            self.lay.free()
        info = min(infos) if min(infos) < 0 else max(infos)
        return out, info


def _check_tols(name: str, atol: float, rtol: float) -> None:
    for v, what in ((atol, "atol"), (rtol, "rtol")):
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"{name}: {what} must be a finite number >= 0, got {v!r}")


def _tolerance(name: str, bnrm2: float, atol: float, rtol: float) -> float:
    return max(float(atol), float(rtol) * bnrm2)


def cg(A: Any, b: DistMatrix, x0: DistMatrix | None = None, *, rtol: float = 1e-5,
       atol: float = 0.0, maxiter: int | None = None, M: Any = None,
       callback: Callable[[DistMatrix], Any] | None = None) -> tuple[DistMatrix, int]:
    """Conjugate gradients for Hermitian positive definite ``A``. Collective over the grid.

    Parameters
    ----------
    A : BlockSparseMatrix or DistMatrix
        ``n x n`` **(global)**.
    b : DistMatrix
        ``n x 1`` right-hand side, or ``n x k`` for ``k`` systems solved one after the other
        with the same operator set-up **(global)**; NaN or inf raises ValueError on every rank.
    x0 : DistMatrix, optional
        Starting guess of ``b``'s shape; default zero.
    rtol, atol : float
        Converged when ``||b - A x|| <= max(rtol * ||b||, atol)`` **(global)**.
    maxiter : int, optional
        Iteration limit; default ``10 n``.
    M : callable, matrix or None
        Preconditioner approximating ``A^{-1}``: a callable ``M(r) -> z`` on ``n x 1``
        DistMatrix objects (e.g. :func:`block_jacobi`), or a matrix applied as ``M @ r``.
    callback : callable, optional
        Called as ``callback(x)`` after each iteration on every rank (``x`` an ``n x 1``
        DistMatrix: the current column's iterate).

    Returns
    -------
    x : DistMatrix
        Shape and layout of ``b``.
    info : int
        0 converged, ``maxiter`` if not converged, -10 on breakdown (see module notes).  With
        several columns: the most negative code if any broke down, else the largest.
    """
    _check_tols("cg", atol, rtol)
    s = _System(A, b, x0, M, "cg")
    return s.solve_columns(lambda bj, xj, zero, cb: _cg_one(
        s, bj, xj, zero, rtol, atol, maxiter, cb), callback)


def _cg_one(s: _System, b: np.ndarray, x: np.ndarray, x_is_zero: bool, rtol: float,
            atol: float, maxiter: int | None, callback: Any) -> tuple[np.ndarray, int]:
    """cg on one right-hand side: numpy slabs in, numpy slab and info out."""
    bnrm2 = s.norm(b)
    tol = _tolerance("cg", bnrm2, atol, rtol)
    if bnrm2 == 0:
        return (b.copy(), 0)
    maxiter = 10 * s.n if maxiter is None else int(maxiter)
    r = b - s.matvec(x) if not x_is_zero else b.copy()
    rho_prev = 1.0
    p = None
    for it in range(maxiter):
        # ||r||^2 and r^H z in one all-reduce (z is formed before the convergence test)
        z = s.psolve(r)
        rr, rho = s.dots((r, r), (r, z))
        if np.sqrt(abs(rr)) < tol:
            return (x, 0)
        if not np.isfinite(rho):
            return (x, -10)
        if it > 0:
            p *= rho / rho_prev
            p += z
        else:
            p = z.copy()
        q = s.matvec(p)
        pq = s.dot(p, q)
        if not np.isfinite(pq) or pq.real <= 0:
            return (x, -10)
        alpha = rho / pq
        x += alpha * p
        r -= alpha * q
        rho_prev = rho
        if callback is not None:
            callback(s.dist(x))
    return (x, maxiter)


def bicgstab(A: Any, b: DistMatrix, x0: DistMatrix | None = None, *, rtol: float = 1e-5,
             atol: float = 0.0, maxiter: int | None = None, M: Any = None,
             callback: Callable[[DistMatrix], Any] | None = None) -> tuple[DistMatrix, int]:
    """BiConjugate Gradient Stabilised for general ``A``. Collective over the grid.

    Parameters and return values as for :func:`cg`; ``info`` is -10 (rho breakdown), -11
    (omega breakdown) or -12 (non-finite values) on breakdown.
    """
    _check_tols("bicgstab", atol, rtol)
    s = _System(A, b, x0, M, "bicgstab")
    return s.solve_columns(lambda bj, xj, zero, cb: _bicgstab_one(
        s, bj, xj, zero, rtol, atol, maxiter, cb), callback)


def _bicgstab_one(s: _System, b: np.ndarray, x: np.ndarray, x_is_zero: bool, rtol: float,
                  atol: float, maxiter: int | None, callback: Any) -> tuple[np.ndarray, int]:
    """bicgstab on one right-hand side: numpy slabs in, numpy slab and info out."""
    bnrm2 = s.norm(b)
    tol = _tolerance("bicgstab", bnrm2, atol, rtol)
    if bnrm2 == 0:
        return (b.copy(), 0)
    maxiter = 10 * s.n if maxiter is None else int(maxiter)
    rhotol = float(np.finfo(s.dtype).eps) ** 2
    omegatol = rhotol
    r = b - s.matvec(x) if not x_is_zero else b.copy()
    rtilde = r.copy()
    rho_prev = omega = alpha = 1.0
    p = v = None
    for it in range(maxiter):
        if s.norm(r) < tol:
            return (x, 0)
        rho = s.dot(rtilde, r)
        if not np.isfinite(rho):
            return (x, -12)
        if abs(rho) < rhotol:
            return (x, -10)
        if it > 0:
            if abs(omega) < omegatol:
                return (x, -11)
            beta = (rho / rho_prev) * (alpha / omega)
            p -= omega * v
            p *= beta
            p += r
        else:
            p = r.copy()
        phat = s.psolve(p)
        v = s.matvec(phat)
        rv = s.dot(rtilde, v)
        if rv == 0:
            return (x, -11)
        if not np.isfinite(rv):
            return (x, -12)
        alpha = rho / rv
        r -= alpha * v
        if s.norm(r) < tol:
            x += alpha * phat
            return (x, 0)
        shat = s.psolve(r)
        t = s.matvec(shat)
        tt = s.dot(t, t)
        if tt == 0 or not np.isfinite(tt):
            return (x, -11 if tt == 0 else -12)
        omega = s.dot(t, r) / tt
        x += alpha * phat
        x += omega * shat
        r -= omega * t
        rho_prev = rho
        if callback is not None:
            callback(s.dist(x))
    return (x, maxiter)


def gmres(A: Any, b: DistMatrix, x0: DistMatrix | None = None, *, rtol: float = 1e-5,
          atol: float = 0.0, restart: int | None = None, maxiter: int | None = None,
          M: Any = None, callback: Callable[[Any], Any] | None = None,
          callback_type: str | None = None) -> tuple[DistMatrix, int]:
    """Restarted GMRES with left preconditioning, as ``scipy.sparse.linalg.gmres``.

    Collective over the grid.

    Parameters
    ----------
    A, b, x0, rtol, atol, M
        As for :func:`cg`.
    restart : int, optional
        Krylov dimension between restarts; default 20 (at most ``n``).
    maxiter : int, optional
        Maximum number of restart cycles (scipy's meaning); default ``10 n``.
    callback : callable, optional
        ``callback_type='pr_norm'`` (the default here): called after every inner iteration
        with the preconditioned residual norm relative to ``||b||``; ``'x'``: called with
        ``x`` after every restart cycle.

    Returns
    -------
    x, info
        ``info`` 0 converged, ``maxiter`` not converged, -10 non-finite residual.

    Notes
    -----
    Modified Gram-Schmidt orthogonalisation (one all-reduce per inner product), Givens
    rotations on the small Hessenberg matrix replicated on every rank, and scipy's adaptive
    inner tolerance between restarts.
    """
    if callback_type is None:
        callback_type = "pr_norm"
    if callback_type not in ("pr_norm", "x", "legacy"):
        raise ValueError(f"gmres: callback_type must be 'pr_norm' or 'x', got "
                         f"{callback_type!r}")
    _check_tols("gmres", atol, rtol)
    restart = 20 if restart is None else restart
    if isinstance(restart, bool) or not isinstance(restart, (int, np.integer)) or restart < 1:
        raise ValueError(f"gmres: restart must be a positive integer, got {restart!r}")
    s = _System(A, b, x0, M, "gmres")
    return s.solve_columns(lambda bj, xj, zero, cb: _gmres_one(
        s, bj, xj, zero, rtol, atol, maxiter, cb, restart, callback_type), callback)


def _gmres_one(s: _System, b: np.ndarray, x: np.ndarray, x_is_zero: bool, rtol: float,
               atol: float, maxiter: int | None, callback: Any, restart: int,
               callback_type: str) -> tuple[np.ndarray, int]:
    """gmres on one right-hand side: numpy slabs in, numpy slab and info out."""
    n = s.n
    bnrm2 = s.norm(b)
    tol = _tolerance("gmres", bnrm2, atol, rtol)
    if bnrm2 == 0:
        return (b.copy(), 0)
    dt = s.dtype
    eps = float(np.finfo(dt).eps)
    maxiter = 10 * n if maxiter is None else int(maxiter)
    restart = min(int(restart), n)
    Mb_nrm2 = s.norm(s.psolve(b))
    ptol_max_factor = 1.0
    ptol = Mb_nrm2 * min(ptol_max_factor, tol / bnrm2)
    presid = 0.0
    lartg = get_lapack_funcs("lartg", dtype=dt)
    nloc = x.size
    V = np.empty((restart + 1, nloc), dtype=dt)
    h = np.zeros((restart, restart + 1), dtype=dt)
    givens = np.zeros((restart, 2), dtype=dt)
    rnorm = np.inf

    r = b - s.matvec(x) if not x_is_zero else b.copy()
    if s.norm(r) < tol:
        return (x, 0)
    for _ in range(maxiter):
        z = s.psolve(r)
        beta = s.norm(z)
        if not np.isfinite(beta):
            return (x, -10)
        V[0] = z.reshape(-1) / beta if beta else 0.0
        S = np.zeros(restart + 1, dtype=dt)
        S[0] = beta
        breakdown = False
        col = 0
        for col in range(restart):
            w = np.array(s.psolve(s.matvec(V[col])), dtype=dt)
            h0 = s.norm(w)
            for k in range(col + 1):
                tmp = s.dot(V[k], w)
                h[col, k] = tmp
                w -= tmp * V[k]
            h1 = s.norm(w)
            h[col, col + 1] = h1
            V[col + 1] = w
            if h1 <= eps * h0:
                h[col, col + 1] = 0
                breakdown = True
            else:
                V[col + 1] *= 1 / h1
            for k in range(col):
                c, sn = givens[k, 0], givens[k, 1]
                n0, n1 = h[col, k], h[col, k + 1]
                h[col, k], h[col, k + 1] = c * n0 + sn * n1, -np.conj(sn) * n0 + c * n1
            c, sn, mag = lartg(h[col, col], h[col, col + 1])
            givens[col] = [c, sn]
            h[col, col], h[col, col + 1] = mag, 0
            tmp = -np.conj(sn) * S[col]
            S[col], S[col + 1] = c * S[col], tmp
            presid = abs(tmp)
            if callback is not None and callback_type in ("pr_norm", "legacy"):
                callback(presid / bnrm2)
            if not np.isfinite(presid):
                return (x, -10)
            if presid <= ptol or breakdown:
                break
        if h[col, col] == 0:
            S[col] = 0
        y = np.array(S[:col + 1], dtype=dt)
        for k in range(col, 0, -1):
            if y[k] != 0:
                y[k] /= h[k, k]
                y[:k] -= y[k] * h[k, :k]
        if y[0] != 0:
            y[0] /= h[0, 0]
        x += y @ V[:col + 1]
        r = b - s.matvec(x)
        rnorm = s.norm(r)
        if callback is not None and callback_type == "x":
            callback(s.dist(x))
        if not np.isfinite(rnorm):
            return (x, -10)
        if rnorm <= tol or breakdown:
            break
        if presid <= ptol:
            ptol_max_factor = max(eps, 0.25 * ptol_max_factor)
        else:
            ptol_max_factor = min(1.0, 1.5 * ptol_max_factor)
        ptol = presid * min(ptol_max_factor, tol / rnorm)
    return (x, 0 if rnorm <= tol else maxiter)
