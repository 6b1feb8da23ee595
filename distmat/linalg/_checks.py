"""Argument checks shared by the dense solvers (decided from global metadata, or agreed)."""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from .. import comm as _c
from ..errors import ShapeMismatchError
from ..matrix import DistMatrix, check_same_grid

__all__ = ["require_matrix", "require_square", "require_rhs", "check_finite", "common_dtype",
           "rhs_aligned", "check_panel"]


def require_matrix(x: object, name: str) -> DistMatrix:
    """TypeError (from metadata) unless ``x`` is a DistMatrix."""
    if not isinstance(x, DistMatrix):
        raise TypeError(f"{name} must be a distmat.DistMatrix, got {type(x).__name__}")
    return x


def require_square(a: DistMatrix, name: str = "a") -> None:
    """ValueError naming the shape unless ``a`` is a square DistMatrix (no message sent)."""
    require_matrix(a, name)
    if a.shape[0] != a.shape[1]:
        raise ShapeMismatchError(f"{name} must be a square matrix, got shape {a.shape}")


def require_rhs(a: DistMatrix, b: DistMatrix, aname: str = "a", bname: str = "b") -> None:
    """Check that ``b`` (n x k) conforms with the square ``a`` and lives on its grid."""
    require_matrix(b, bname)
    if b.shape[0] != a.shape[0]:
        raise ShapeMismatchError(f"{bname} with shape {b.shape} does not conform with {aname} "
                                 f"of shape {a.shape}: {bname} needs {a.shape[0]} rows")
    check_same_grid(a, b, f"{aname} and {bname}")


def check_panel(panel: object) -> int | None:
    """Validate the algorithmic panel width (None or a positive integer)."""
    if panel is None:
        return None
    if isinstance(panel, bool) or not isinstance(panel, (int, np.integer)) or panel < 1:
        raise ValueError(f"panel must be a positive integer or None, got {panel!r}")
    return int(panel)


def check_finite(*named: tuple[DistMatrix, str]) -> None:
    """ValueError on every rank if any of the matrices holds NaN or Inf. Collective.

    One all-reduce decides for all of them; the message names the first offending argument.
    """
    grid = named[0][0].grid
    flags = np.array([0 if _all_finite(m.local) else 1 for m, _ in named], dtype=np.int32)
    _c.allreduce(grid.comm, flags, MPI.MAX)
    for (_, name), bad in zip(named, flags, strict=True):
        if bad:
            raise ValueError(f"{name} must not contain infs or NaNs (check_finite=True)")


def _all_finite(x: np.ndarray) -> bool:
    """True if ``x`` holds no NaN or Inf.

    A finite sum proves it without a boolean temporary the size of ``x`` (NaN and Inf
    propagate through a sum); only an infinite or NaN sum, which overflow of large finite
    values can also give, needs the element-wise test.
    """
    if x.size == 0:
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(x.sum()):
            return True
    return bool(np.isfinite(x).all())


def common_dtype(*mats: DistMatrix) -> np.dtype:
    """The floating dtype the solvers compute in for these operands."""
    return np.result_type(np.float32, *[m.dtype for m in mats])


def rhs_aligned(b: DistMatrix, mb: int, dtype: np.dtype) -> DistMatrix:
    """``b`` cast to ``dtype`` with row block ``mb`` (a private copy). Collective if moved."""
    if b.block[0] != mb:
        b = b.redistribute(block=(mb, b.block[1]))
        if b.dtype != dtype:
            b = b.astype(dtype)
        return b
    return b.astype(dtype)
