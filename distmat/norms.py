"""Matrix norms of distributed matrices (layer 3)."""

from __future__ import annotations

from typing import Any

import numpy as np
from mpi4py import MPI

from . import comm as _c
from .matrix import DistMatrix

__all__ = ["norm"]

_ORDS = {None: "fro", "fro": "fro", "f": "fro", 1: "1", np.inf: "inf", "inf": "inf",
         "max": "max"}


def _max_over(comm: MPI.Comm, value: float) -> float:
    """Max over ``comm`` that propagates NaN like numpy (MPI's MAX may drop it)."""
    buf = np.array([np.inf if np.isnan(value) else value, float(np.isnan(value))])
    _c.allreduce(comm, buf, MPI.MAX)
    return float("nan") if buf[1] else float(buf[0])


def norm(A: DistMatrix, ord: Any = None) -> float:
    """A matrix norm, on every rank. Collective over the grid.

    Parameters
    ----------
    A : DistMatrix
        The matrix.
    ord : {None, 'fro', 1, inf, 'max'}
        Frobenius (None or 'fro'), maximum absolute column sum (1), maximum absolute row sum
        (``numpy.inf`` or ``'inf'``), or largest absolute entry ('max') **(global)**.

    Returns
    -------
    float
        The norm (0.0 for an empty matrix); NaN if any entry is NaN.
    """
    if not isinstance(A, DistMatrix):
        raise TypeError(f"A must be a DistMatrix, got {type(A).__name__} (use numpy.linalg.norm "
                        f"for local arrays)")
    try:
        kind = _ORDS[ord]
    except (KeyError, TypeError):
        raise ValueError(f"ord must be None, 'fro', 1, inf or 'max', got {ord!r}") from None
    grid = A.grid
    x = np.abs(A.local)
    with _c.operation("norm"):
        if kind == "max":
            return _max_over(grid.comm, float(x.max()) if x.size else 0.0)
        if kind == "fro":
            scale = _max_over(grid.comm, float(x.max()) if x.size else 0.0)
            if scale == 0.0 or not np.isfinite(scale):
                return scale
            ssq = np.array([np.sum(np.square(x / scale, dtype=np.float64))])
            _c.allreduce(grid.comm, ssq)
            return float(scale * np.sqrt(ssq[0]))
        axis, sub = (0, grid.col_comm) if kind == "1" else (1, grid.row_comm)
        sums = np.ascontiguousarray(x.sum(axis=axis, dtype=np.float64))
        _c.allreduce(sub, sums)
        return _max_over(grid.comm, float(sums.max()) if sums.size else 0.0)
