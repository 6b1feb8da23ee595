"""Distributed block-sparse matrices (``dm.sparse``): storage, conversions, products, solvers.

>>> S = dm.sparse.random((4096, 4096), blocksize=32, density=0.01, seed=1, grid=grid)
>>> X = dm.random((4096, 16), seed=2, grid=grid, block=(32, 16))
>>> Y = S @ X                                  # SpMM, a DistMatrix
>>> x, info = dm.sparse.linalg.cg(A, b, M=dm.sparse.linalg.block_jacobi(A))
"""

from . import linalg
from .bsr import BlockSparseMatrix
from .construct import eye, from_coo, random
from .convert import from_dense, from_scipy, gather, todense, transpose
from .generators import block_operator, poisson2d, poisson3d
from .norms import norm
from .spgemm import matmul
from .spmm import spmm

__all__ = [
    "BlockSparseMatrix",
    "from_scipy",
    "from_coo",
    "from_dense",
    "random",
    "eye",
    "poisson2d",
    "poisson3d",
    "block_operator",
    "gather",
    "todense",
    "transpose",
    "spmm",
    "matmul",
    "norm",
    "linalg",
]
