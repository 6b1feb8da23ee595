"""Distributed dense solvers on block-cyclic matrices (scipy.linalg names and meanings).

>>> f = dm.linalg.lu_factor(A)                  # partial pivoting, global pivots
>>> X = f.solve(B)                              # or dm.linalg.solve(A, B)
>>> X = dm.linalg.solve(A, B, assume_a="pos")   # Cholesky
>>> X = dm.linalg.solve(A, B, refine="mixed")   # float32 factor + float64 refinement
>>> X.refine_info.iterations
>>> Q, R = dm.linalg.qr(A)                       # blocked Householder, or TSQR when tall-skinny
>>> X, residues, rank, s = dm.linalg.lstsq(A, B)
>>> U, s, Vh = dm.linalg.svd(A)                 # tall-skinny: TSQR + SVD of the small R
>>> U, s, Vh = dm.linalg.svds(A, 10)            # randomized truncated SVD, s descending

``distmat.linalg.tsqr.tsqr(A)`` returns ``(Q, R)`` with ``R`` replicated (a numpy array).

Every function is collective over the grid of its arguments.
"""

from .cholesky import CholeskyFactor, cho_factor, cho_solve, cholesky
from .inverse import det, inv, slogdet
from .lstsq import lstsq
from .lu import LUFactor, lu_factor, lu_solve
from .qr import qr
from .refine import RefineInfo
from .solve import solve
from .svd import svd
from .svds import svds
from .triangular import solve_triangular

__all__ = ["LUFactor", "lu_factor", "lu_solve", "solve", "CholeskyFactor", "cholesky",
           "cho_factor", "cho_solve", "solve_triangular", "inv", "det", "slogdet",
           "RefineInfo", "qr", "lstsq", "svd", "svds"]
