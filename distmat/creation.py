"""Constructors of dense distributed matrices (layer 2). Each is collective over the grid."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import comm as _c
from . import rng
from .grid import ProcessGrid, as_grid
from .layout import Layout, check_block
from .matrix import DistMatrix, _check_shape, check_dtype, default_block

__all__ = ["zeros", "ones", "full", "eye", "random", "from_function", "empty"]


def _setup(shape: Any, grid: ProcessGrid | None, block: Any, dtype: Any
           ) -> tuple[tuple[int, int], tuple[int, int], ProcessGrid, np.dtype, Layout]:
    shape = _check_shape(shape)
    grid = as_grid(grid)
    block = check_block(block) if block is not None else default_block(shape, grid.shape)
    dt = check_dtype(dtype)
    return shape, block, grid, dt, Layout(shape, block, grid.shape)


def full(shape: tuple[int, int], fill_value: complex, *, dtype: Any = np.float64,
         grid: ProcessGrid | None = None, block: tuple[int, int] | None = None) -> DistMatrix:
    """A matrix with every entry ``fill_value``.

    Parameters
    ----------
    shape : tuple of int
        Global shape ``(m, n)`` **(global)**.
    fill_value : scalar
        The value **(global)**.
    dtype : dtype
        float32, float64 (default), complex64 or complex128 **(global)**.
    grid : ProcessGrid, optional
        Default :meth:`ProcessGrid.default` **(global)**.
    block : tuple of int, optional
        Block size; default :func:`distmat.matrix.default_block` **(global)**.
    """
    shape, block, grid, dt, lay = _setup(shape, grid, block, dtype)
    local = np.full(lay.local_shape(*grid.coords), fill_value, dtype=dt)
    return DistMatrix._wrap(local, shape, block, grid)


def empty(shape: tuple[int, int], *, dtype: Any = np.float64, grid: ProcessGrid | None = None,
          block: tuple[int, int] | None = None) -> DistMatrix:
    """A matrix with uninitialised entries (see :func:`full` for the parameters)."""
    shape, block, grid, dt, lay = _setup(shape, grid, block, dtype)
    return DistMatrix._wrap(np.empty(lay.local_shape(*grid.coords), dtype=dt), shape, block,
                            grid)


def zeros(shape: tuple[int, int], *, dtype: Any = np.float64, grid: ProcessGrid | None = None,
          block: tuple[int, int] | None = None) -> DistMatrix:
    """A matrix of zeros (see :func:`full` for the parameters)."""
    return full(shape, 0, dtype=dtype, grid=grid, block=block)


def ones(shape: tuple[int, int], *, dtype: Any = np.float64, grid: ProcessGrid | None = None,
         block: tuple[int, int] | None = None) -> DistMatrix:
    """A matrix of ones (see :func:`full` for the parameters)."""
    return full(shape, 1, dtype=dtype, grid=grid, block=block)


def eye(n: int, m: int | None = None, k: int = 0, *, dtype: Any = np.float64,
        grid: ProcessGrid | None = None, block: tuple[int, int] | None = None) -> DistMatrix:
    """An ``n x m`` matrix with ones on the ``k``-th diagonal (numpy.eye's meaning)."""
    m = n if m is None else m
    shape, block, grid, dt, lay = _setup((n, m), grid, block, dtype)
    rows, cols = lay.rows(grid.myrow), lay.cols(grid.mycol)
    local = (rows[:, None] + k == cols[None, :]).astype(dt)
    return DistMatrix._wrap(local, shape, block, grid)


def _global_seed(seed: Any, grid: ProcessGrid) -> int:
    if seed is None:
        buf = np.array([np.random.SeedSequence().entropy & 0x7FFFFFFFFFFFFFFF], dtype=np.int64)
        _c.bcast(grid.comm, buf, 0)
        return int(buf[0])
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    return int(seed)


def random(shape: tuple[int, int], distribution: str = "uniform", *, seed: int | None = None,
           low: float = 0.0, high: float = 1.0, loc: float = 0.0, scale: float = 1.0,
           dtype: Any = np.float64, grid: ProcessGrid | None = None,
           block: tuple[int, int] | None = None) -> DistMatrix:
    """A random matrix that is the same for a given seed on any grid, rank count or block size.

    Entry ``(i, j)`` is computed from ``(seed, i, j)`` alone by a counter-based generator, so
    each rank does work proportional to its local piece and a result can be reproduced on a
    machine of any size.

    Parameters
    ----------
    shape : tuple of int
        Global shape **(global)**.
    distribution : {"uniform", "normal"}
        Uniform on ``[low, high)`` or normal with mean ``loc`` and standard deviation
        ``scale`` **(global)**.  Complex dtypes draw real and imaginary parts independently.
    seed : int, optional
        Non-negative integer **(global)**.  None draws one on rank 0 and broadcasts it.
    low, high, loc, scale : float
        Distribution parameters **(global)**.
    dtype, grid, block
        As for :func:`full`.
    """
    if distribution not in ("uniform", "normal"):
        raise ValueError(f"distribution must be 'uniform' or 'normal', got {distribution!r}")
    shape, block, grid, dt, lay = _setup(shape, grid, block, dtype)
    s = _global_seed(seed, grid)
    rows, cols = lay.rows(grid.myrow), lay.cols(grid.mycol)

    def draw(stream: int) -> np.ndarray:
        if distribution == "uniform":
            return low + (high - low) * rng.uniform01(rows, cols, shape[1], s, stream)
        return loc + scale * rng.standard_normal(rows, cols, shape[1], s, stream)

    if dt.kind == "c":
        local = (draw(0) + 1j * draw(1)).astype(dt)
    else:
        local = draw(0).astype(dt)
    return DistMatrix._wrap(local, shape, block, grid)


def from_function(f: Callable[[np.ndarray, np.ndarray], Any], shape: tuple[int, int], *,
                  dtype: Any = np.float64, grid: ProcessGrid | None = None,
                  block: tuple[int, int] | None = None) -> DistMatrix:
    """A matrix whose entry ``(i, j)`` is ``f(i, j)``, evaluated on whole index arrays.

    ``f`` receives the global row indices as a column (shape ``(mloc, 1)``) and the global
    column indices as a row (shape ``(1, nloc)``) and returns an array broadcastable to
    ``(mloc, nloc)``: ``f = lambda i, j: 1.0 / (i + j + 1)`` builds a Hilbert matrix.
    An exception in ``f`` on any rank is raised on every rank.
    """
    shape, block, grid, dt, lay = _setup(shape, grid, block, dtype)
    rows, cols = lay.rows(grid.myrow), lay.cols(grid.mycol)
    local = None
    with _c.agreed(grid.comm):
        val = np.asarray(f(rows[:, None], cols[None, :]))
        local = np.array(np.broadcast_to(val, (rows.size, cols.size)), dtype=dt)
    return DistMatrix._wrap(local, shape, block, grid)
