"""Matrix norms of distributed matrices (layer 3)."""

from __future__ import annotations

from collections.abc import Iterator
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
    x = A.local
    with _c.operation("norm"):
        if kind == "max":
            return _max_over(grid.comm, _local_max(x))
        if kind == "fro":
            scale = _max_over(grid.comm, _local_max(x))
            if scale == 0.0 or not np.isfinite(scale):
                return scale
            ssq = np.zeros(1)
            for _, blk in _abs_rows(x):
                np.divide(blk, scale, out=blk)
                ssq[0] += np.sum(np.square(blk, out=blk), dtype=np.float64)
            _c.allreduce(grid.comm, ssq)
            return float(scale * np.sqrt(ssq[0]))
        if kind == "1":
            sums = np.zeros(x.shape[1])
            for _, blk in _abs_rows(x):
                sums += blk.sum(axis=0, dtype=np.float64)
            sub = grid.col_comm
        else:
            sums = np.zeros(x.shape[0])
            for r, blk in _abs_rows(x):
                sums[r:r + blk.shape[0]] = blk.sum(axis=1, dtype=np.float64)
            sub = grid.row_comm
        _c.allreduce(sub, sums)
        return _max_over(grid.comm, float(sums.max()) if sums.size else 0.0)


#: Rows of the local array per chunk in the norms: ``|A|`` is formed a chunk at a time in one
#: reused buffer, not as a temporary the size of the local array (fresh memory costs page
#: faults and a second pass through main memory).
ROWS = 256


def _abs_rows(x: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """``(first_row, |x[rows]|)`` for chunks of :data:`ROWS` rows; the array is reused."""
    if x.size == 0:
        return
    exact = x.dtype.kind in "fc"   # else integers or booleans: |x| in float64
    dt = np.abs(x[:0]).dtype if exact else np.dtype(np.float64)
    buf = np.empty((min(ROWS, x.shape[0]), x.shape[1]), dtype=dt)
    for r in range(0, x.shape[0], ROWS):
        blk = x[r:r + ROWS]
        out = buf[:blk.shape[0]]
        if not exact:   # convert first: |-128| of an int8 is not 128 in int8
            np.copyto(out, blk, casting="unsafe")
            blk = out
        yield r, np.abs(blk, out=out)


def _local_max(x: np.ndarray) -> float:
    """Largest ``|x|`` entry (0 if empty, NaN if any is NaN)."""
    best = 0.0
    for _, blk in _abs_rows(x):
        best = float(np.maximum(best, blk.max()))
    return best
