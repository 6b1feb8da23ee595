"""Krylov solvers and preconditioners for distributed matrices (scipy.sparse.linalg names).

>>> x, info = dm.sparse.linalg.cg(A, b, rtol=1e-8, M=dm.sparse.linalg.block_jacobi(A))
"""

from .krylov import bicgstab, cg, gmres
from .precond import BlockJacobi, block_jacobi, jacobi

__all__ = ["cg", "gmres", "bicgstab", "block_jacobi", "jacobi", "BlockJacobi"]
