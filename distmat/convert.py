"""Scatter, gather, transpose and redistribution of dense matrices (layer 2).

All four are the same operation, :func:`distmat.redistribute.exchange`, between two layouts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import comm as _c
from .grid import ProcessGrid, as_grid
from .layout import Layout, check_block
from .matrix import DistMatrix, check_dtype, default_block
from .redistribute import exchange

__all__ = ["from_global", "gather", "transpose", "redistribute"]


def _one_proc(shape: tuple[int, int]) -> Layout:
    return Layout(shape, (max(1, shape[0]), max(1, shape[1])), (1, 1))


def _check_root(root: Any, grid: ProcessGrid, allow_none: bool = True) -> None:
    if root is None and allow_none:
        return
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)) \
            or not 0 <= root < grid.size:
        raise ValueError(f"root must be a rank in 0..{grid.size - 1}"
                         f"{' or None' if allow_none else ''}, got {root!r}")


def _as_2d(a: Any, dtype: Any) -> np.ndarray:
    if a is None:
        raise ValueError("a is None on the rank that must hold the matrix (root, or every "
                         "rank with root=None); pass the 2-D array there")
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ValueError(f"a must be a 2-D array, got an array of shape {arr.shape}")
    if dtype is None:
        if arr.dtype.kind in "biu":
            dtype = np.float64
        elif arr.dtype.kind not in "fc":
            raise TypeError(f"a has unsupported dtype {arr.dtype}")
        else:
            dtype = arr.dtype
    return np.asarray(arr, dtype=check_dtype(dtype))


def from_global(a: np.ndarray | None, grid: ProcessGrid | None = None,
                block: tuple[int, int] | None = None, root: int | None = 0,
                dtype: Any = None) -> DistMatrix:
    """Distribute a global ndarray. Collective over the grid.

    Parameters
    ----------
    a : array_like or None
        The 2-D global matrix on ``root`` **(local)**; other ranks pass None (or anything: it
        is ignored).  With ``root=None`` every rank passes the same matrix.
    grid : ProcessGrid, optional
        Target grid **(global)**; default :meth:`ProcessGrid.default`.
    block : tuple of int, optional
        Block size **(global)**; default :func:`distmat.matrix.default_block`.
    root : int or None
        Rank in ``grid.comm`` that holds ``a`` **(global)**, or None when every rank does
        (then no data moves).
    dtype : dtype, optional
        Element type of the result; default the array's (integers become float64).

    Raises
    ------
    ValueError, TypeError
        On every rank, if ``a`` on ``root`` is not a 2-D array of a supported type, or (with
        ``root=None``) if the ranks pass different shapes.
    """
    grid = as_grid(grid)
    _check_root(root, grid)
    if root is None:
        with _c.agreed(grid.comm):
            arr = _as_2d(a, dtype)
        _c.check_same(grid.comm, (*arr.shape, arr.dtype.num), "from_global(root=None): "
                      "the shape and dtype of a")
        shape = arr.shape
        block = check_block(block) if block is not None else default_block(shape, grid.shape)
        lay = Layout(shape, block, grid.shape)
        local = np.ascontiguousarray(arr[np.ix_(lay.rows(grid.myrow), lay.cols(grid.mycol))])
        return DistMatrix._wrap(local, shape, block, grid)

    meta: Any = None
    arr = None
    if grid.rank == root:
        try:
            arr = _as_2d(a, dtype)
            meta = (arr.shape, arr.dtype.str)
        except (TypeError, ValueError) as e:
            meta = (type(e), str(e))
    meta = grid.comm.bcast(meta, root=root)  # cold metadata
    if isinstance(meta[0], type):
        raise meta[0](f"{meta[1]} [on root rank {root}]")
    shape, dt = tuple(meta[0]), np.dtype(meta[1])
    block = check_block(block) if block is not None else default_block(shape, grid.shape)
    dst = Layout(shape, block, grid.shape)
    with _c.operation("scatter"):
        local = exchange(grid.comm, arr, _one_proc(shape), np.array([[root]]), dst,
                         grid.ranks(), dtype=dt)
    return DistMatrix._wrap(local, shape, block, grid)


def gather(A: DistMatrix, root: int | None = 0) -> np.ndarray | None:
    """The global matrix as an ndarray on ``root`` (every rank for None). Collective."""
    grid = A.grid
    _check_root(root, grid)
    with _c.operation("gather"):
        out = exchange(grid.comm, A.local, A.layout, grid.ranks(), _one_proc(A.shape),
                       np.array([[0 if root is None else root]]), dtype=A.dtype)
        if root is None:
            if out is None:
                out = np.empty(A.shape, dtype=A.dtype)
            _c.bcast(grid.comm, out, 0)
    return out


def transpose(A: DistMatrix) -> DistMatrix:
    """``A.T`` as a new matrix on the same grid, block ``(nb, mb)``. Collective."""
    grid = A.grid
    dst = A.layout.transposed()
    with _c.operation("transpose"):
        local = exchange(grid.comm, A.local, A.layout, grid.ranks(), dst, grid.ranks(),
                         transpose=True, dtype=A.dtype)
    return DistMatrix._wrap(local, dst.shape, dst.block, grid)


def redistribute(A: DistMatrix, block: tuple[int, int] | None = None,
                 grid: ProcessGrid | None = None) -> DistMatrix:
    """``A`` under a new block size and/or a grid over the same processes. Collective.

    Raises
    ------
    ValueError
        On every rank if ``grid`` does not span the same processes as ``A.grid``.
    """
    src_grid = A.grid
    dst_grid = src_grid if grid is None else as_grid(grid)
    block = A.block if block is None else check_block(block)
    if dst_grid is not src_grid and (dst_grid.size != src_grid.size
                                     or not src_grid.same_processes(dst_grid)):
        raise ValueError(f"redistribute: the target grid {dst_grid.shape} must span the same "
                         f"processes as the matrix's grid {src_grid.shape}")
    dst = Layout(A.shape, block, dst_grid.shape)
    if dst_grid is src_grid and block == A.block:
        return A.copy()
    with _c.operation("redistribute"):
        local = exchange(src_grid.comm, A.local, A.layout, src_grid.ranks(), dst,
                         dst_grid.ranks_in(src_grid.comm), dtype=A.dtype)
    return DistMatrix._wrap(local, A.shape, block, dst_grid)
