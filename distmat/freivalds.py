"""Freivalds' check of a distributed product (``dm.matmul(..., verify=True)``), layer 3.

For ``C = alpha op(A) op(B) + beta C0`` and a random vector ``x`` (the same on every rank),
compare ``C x`` with ``alpha op(A) (op(B) x) + beta C0 x``: four matrix-vector products,
``O(mn + nk + km)`` work and one all-reduce of a vector per product, never a gather.

Each product runs on the local pieces (``local @ x[my columns]``, scattered into a vector of
global length) followed by one all-reduce over the grid, so every rank ends with the same
vectors and takes the same decision.  The tolerance is the componentwise rounding bound:
``|r_i| <= 4 (k + n + 4) eps (|alpha| |op(A)| (|op(B)| |x|) + |beta| |C0| |x| + |C| |x|)_i``,
which a correct product always meets and a wrong panel, a lost update or NaN does not.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from . import comm as _c
from .errors import DistmatError
from .matrix import DistMatrix

__all__ = ["VerificationError", "Freivalds", "matvec"]


class VerificationError(DistmatError, ArithmeticError):
    """A product failed its random-projection check (raised on every rank)."""


def matvec(M: DistMatrix, x: np.ndarray, op: str = "N", absolute: bool = False) -> np.ndarray:
    """``op(M) @ x`` for a vector ``x`` held by every rank; every rank gets the result.

    Collective over the grid.  With ``absolute``, ``|op(M)| @ x`` (for rounding bounds).
    """
    rows, cols = M.global_rows, M.global_cols
    loc = np.abs(M.local) if absolute else M.local
    if op == "N":
        y = np.zeros(M.shape[0], dtype=np.result_type(loc, x))
        if loc.size:
            y[rows] = loc @ x[cols]
    else:
        y = np.zeros(M.shape[1], dtype=np.result_type(loc, x))
        if loc.size:
            lt = loc.T.conj() if op == "C" else loc.T
            y[cols] = lt @ x[rows]
    return _c.allreduce(M.grid.comm, y, MPI.SUM)


class Freivalds:
    """Random-projection check of one product (built before the product overwrites C0)."""

    def __init__(self, A: DistMatrix, B: DistMatrix, ta: str, tb: str, alpha: complex,
                 beta: complex, C0: DistMatrix | None, dtype: np.dtype):
        comm = A.grid.comm
        seed = np.zeros(1, dtype=np.int64)
        if comm.Get_rank() == 0:
            seed[0] = np.random.SeedSequence().entropy % (2 ** 62)
        _c.bcast(comm, seed, 0)
        n = B.shape[0] if tb != "N" else B.shape[1]
        gen = np.random.default_rng(int(seed[0]))
        x = gen.uniform(-1.0, 1.0, n)
        if dtype.kind == "c":
            x = x + 1j * gen.uniform(-1.0, 1.0, n)
        self.x = x.astype(dtype)
        self.ax = np.abs(self.x)
        k = A.shape[0] if ta != "N" else A.shape[1]
        self.scale = 4.0 * (k + n + 4) * float(np.finfo(dtype).eps)
        # everything that reads the operands happens now, before the product may overwrite
        # them (out= may alias A, B or C0)
        self.want = alpha * matvec(A, matvec(B, self.x, tb), ta)
        self.bound = abs(alpha) * matvec(A, matvec(B, self.ax, tb, True), ta, True)
        if C0 is not None and beta != 0:
            self.want = self.want + beta * matvec(C0, self.x)
            self.bound = self.bound + abs(beta) * matvec(C0, self.ax, absolute=True)

    def ratio(self, C: DistMatrix) -> float:
        """Largest ``|r_i| / tolerance_i`` (<= 1 passes; NaN counts as inf). Collective."""
        r, tol = self._residual(C)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(r <= tol, np.where(tol > 0, r / np.where(tol > 0, tol, 1), 0.0), np.inf)
        return float(q.max()) if q.size else 0.0

    def _residual(self, C: DistMatrix) -> tuple[np.ndarray, np.ndarray]:
        got = matvec(C, self.x)
        bound = self.bound + matvec(C, self.ax, absolute=True)
        return np.abs(got - self.want), self.scale * bound

    def verify(self, C: DistMatrix) -> None:
        """Raise VerificationError on every rank if ``C`` fails the check. Collective."""
        r, tol = self._residual(C)
        bad = ~(r <= tol)
        flag = np.array([int(np.count_nonzero(bad))], dtype=np.int64)
        _c.allreduce(C.grid.comm, flag, MPI.MAX)
        if flag[0]:
            i = int(np.argmax(np.where(bad, r - tol, -np.inf))) if bad.any() else -1
            where = (f"; worst row {i}: |Cx - expected| = {r[i]:.3e} > tolerance {tol[i]:.3e}"
                     if i >= 0 else "")
            raise VerificationError(
                f"matmul verify: Freivalds' check failed for {int(flag[0])} of {r.size} rows "
                f"of C x (C is {C.shape}, {C.dtype}){where}")
