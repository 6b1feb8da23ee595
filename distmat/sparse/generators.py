"""Test operators: 2D/3D Poisson (optionally with convection) and a block operator.

Each rank generates the rows of a contiguous slice of grid points and the matrix is assembled
with :func:`distmat.sparse.from_coo` (one all-to-all), so no rank ever holds the whole
operator.  All collective over the grid.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..grid import ProcessGrid, as_grid
from ..matrix import check_dtype
from .bsr import BlockSparseMatrix
from .construct import from_coo

__all__ = ["poisson2d", "poisson3d", "block_operator", "stencil_triplets"]


def _my_slice(npts: int, grid: ProcessGrid) -> np.ndarray:
    lo = npts * grid.rank // grid.size
    hi = npts * (grid.rank + 1) // grid.size
    return np.arange(lo, hi, dtype=np.int64)


def stencil_triplets(pts: np.ndarray, dims: tuple[int, ...], convection: float = 0.0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ``pts`` of the standard ``2d+1``-point Laplacian on a grid of ``dims`` points.

    Point ``p`` has coordinates ``np.unravel_index(p, dims)``, the last fastest.  The diagonal
    is ``2 * len(dims)`` and each neighbour ``-1`` (Dirichlet boundary).  ``convection``
    adds the first-order upwind term ``c * (u_p - u_west)`` along the last axis (making the
    operator non-symmetric, still an M-matrix).
    """
    coords = np.unravel_index(pts, dims)
    rows = [pts]
    cols = [pts]
    vals = [np.full(pts.size, 2.0 * len(dims) + convection)]
    stride = 1
    strides = []
    for d in reversed(dims):
        strides.append(stride)
        stride *= d
    strides = strides[::-1]
    for ax, (d, st) in enumerate(zip(dims, strides, strict=True)):
        x = coords[ax]
        for step in (-1, 1):
            ok = (x + step >= 0) & (x + step < d)
            w = -1.0 - (convection if (step == -1 and ax == len(dims) - 1) else 0.0)
            rows.append(pts[ok])
            cols.append(pts[ok] + step * st)
            vals.append(np.full(int(ok.sum()), w))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)


def _laplacian(dims: tuple[int, ...], blocksize: Any, grid: ProcessGrid | None, dtype: Any,
               convection: float) -> BlockSparseMatrix:
    grid = as_grid(grid)
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
            raise ValueError(f"grid dimensions must be positive integers, got {dims}")
    n = int(np.prod(dims))
    r, c, v = stencil_triplets(_my_slice(n, grid), tuple(int(d) for d in dims), convection)
    return from_coo(r, c, v, (n, n), blocksize=blocksize, grid=grid, dtype=check_dtype(dtype))


def poisson2d(nx: int, ny: int | None = None, *, blocksize: Any = None, convection: float = 0.0,
              dtype: Any = np.float64, grid: ProcessGrid | None = None) -> BlockSparseMatrix:
    """The 5-point Laplacian on an ``nx x ny`` grid (``n = nx * ny`` unknowns).

    Same matrix as ``scipy.sparse.kronsum`` of two 1-D second differences.  ``convection``
    adds an upwind first-derivative term along x (see :func:`stencil_triplets`).
    Collective over the grid.
    """
    return _laplacian((ny if ny is not None else nx, nx), blocksize, grid, dtype, convection)


def poisson3d(nx: int, ny: int | None = None, nz: int | None = None, *, blocksize: Any = None,
              convection: float = 0.0, dtype: Any = np.float64,
              grid: ProcessGrid | None = None) -> BlockSparseMatrix:
    """The 7-point Laplacian on an ``nx x ny x nz`` grid. Collective over the grid."""
    ny = nx if ny is None else ny
    nz = nx if nz is None else nz
    return _laplacian((nz, ny, nx), blocksize, grid, dtype, convection)


def spd_block(ncomp: int, seed: int = 0) -> np.ndarray:
    """A well-conditioned dense SPD ``ncomp x ncomp`` block (same on every rank for a seed)."""
    g = np.random.default_rng(seed)
    Q = g.standard_normal((ncomp, ncomp)) / np.sqrt(ncomp)
    return Q @ Q.T + np.eye(ncomp)


def block_operator(nx: int, ny: int | None = None, *, ncomp: int = 8, blocksize: Any = None,
                   seed: int = 0, dtype: Any = np.float64, grid: ProcessGrid | None = None
                   ) -> BlockSparseMatrix:
    """``kron(poisson2d(nx, ny), B)`` with ``B`` a dense SPD ``ncomp x ncomp`` block.

    A multi-component PDE system: SPD, dense ``ncomp x ncomp`` coupling per grid point.  The
    default ``blocksize`` is ``ncomp`` so every stored block is exactly one coupling block.
    Collective over the grid.
    """
    grid = as_grid(grid)
    ny = nx if ny is None else ny
    B = spd_block(ncomp, seed)
    npts = nx * ny
    pr, pc, pv = stencil_triplets(_my_slice(npts, grid), (ny, nx))
    a = np.arange(ncomp, dtype=np.int64)
    rows = (pr[:, None, None] * ncomp + a[None, :, None]) + 0 * a[None, None, :]
    cols = (pc[:, None, None] * ncomp + a[None, None, :]) + 0 * a[None, :, None]
    vals = pv[:, None, None] * B[None, :, :]
    n = npts * ncomp
    return from_coo(rows.ravel(), cols.ravel(), vals.ravel(), (n, n),
                    blocksize=ncomp if blocksize is None else blocksize, grid=grid,
                    dtype=check_dtype(dtype))
