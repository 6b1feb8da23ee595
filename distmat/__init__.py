"""distmat: distributed dense and block-sparse matrices over MPI.

>>> import distmat as dm
>>> grid = dm.ProcessGrid(MPI.COMM_WORLD)          # collective
>>> A = dm.random((1000, 1000), seed=1, grid=grid)
>>> print(dm.norm(A.T - A, "fro"))
"""

from . import (
    decomposition,  # layer 3: NMF (dm.decomposition.nmf)
    linalg,  # layer 3: dense solvers (dm.linalg.solve, ...)
    optim,  # layer 3: optimizers updating DistMatrix parameters in place (dm.optim.SGD, ...)
    sparse,  # layers 2-3: block-sparse matrices, products, Krylov solvers (dm.sparse)
)
from .convert import from_global, gather, redistribute, transpose
from .creation import empty, eye, from_function, full, ones, random, zeros
from .errors import (
    DistmatError,
    GridMismatchError,
    RemoteError,
    ShapeMismatchError,
    SingularMatrixError,
)
from .freivalds import VerificationError
from .grid import ProcessGrid
from .io import load, save
from .layout import Layout
from .matrix import DistMatrix
from .norms import norm
from .profile import profile
from .summa import matmul
from .threads import blas_info, set_blas_threads

__version__ = "0.1.0"

__all__ = [
    "ProcessGrid",
    "DistMatrix",
    "Layout",
    "zeros",
    "ones",
    "full",
    "empty",
    "eye",
    "random",
    "from_global",
    "from_function",
    "gather",
    "transpose",
    "redistribute",
    "norm",
    "profile",
    "sparse",
    "linalg",
    "decomposition",
    "optim",
    "save",
    "load",
    "DistmatError",
    "ShapeMismatchError",
    "GridMismatchError",
    "SingularMatrixError",
    "RemoteError",
    "matmul",
    "VerificationError",
    "set_blas_threads",
    "blas_info",
]
