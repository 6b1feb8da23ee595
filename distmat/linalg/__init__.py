"""Distributed dense solvers on block-cyclic matrices (scipy.linalg names and meanings).

>>> lu = dm.linalg.lu_factor(A)                 # partial pivoting, global pivots
>>> X = lu.solve(B)                             # or dm.linalg.solve(A, B)
>>> X = dm.linalg.solve(A, B, assume_a="pos")   # Cholesky
>>> X = dm.linalg.solve(A, B, refine="mixed")   # float32 factor + float64 refinement
"""

from .lu import LUFactor, lu_factor, lu_solve
from .triangular import solve_triangular

__all__ = ["LUFactor", "lu_factor", "lu_solve", "solve_triangular"]
