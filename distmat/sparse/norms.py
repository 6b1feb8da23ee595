"""Norms of block-sparse matrices."""

from __future__ import annotations

from typing import Any

import numpy as np
from mpi4py import MPI

from .. import comm as _c
from .bsr import BlockSparseMatrix

__all__ = ["norm"]


def norm(S: BlockSparseMatrix, ord: Any = "fro") -> float:
    """A matrix norm of ``S``: ``'fro'`` (default), ``1``, ``inf`` or ``'max'``.

    Collective over the grid; every rank gets the value.  Meanings as in
    ``scipy.sparse.linalg.norm`` (``'max'``: largest absolute entry).
    """
    if not isinstance(S, BlockSparseMatrix):
        raise TypeError(f"S must be a BlockSparseMatrix, got {type(S).__name__}")
    grid = S.grid
    A = np.abs(S.data)
    with _c.operation("sparse.norm"):
        if ord in ("fro", "f", None):
            buf = np.array([float(np.sum(A.astype(np.float64) ** 2))])
            _c.allreduce(grid.comm, buf)
            return float(np.sqrt(buf[0]))
        if ord == "max":
            buf = np.array([float(A.max()) if A.size else 0.0])
            _c.allreduce(grid.comm, buf, op=MPI.MAX)
            return float(buf[0])
        if ord in (1, np.inf, float("inf")):
            bi, bj = S.block_coords()
            if ord == 1:
                # column sums of the local block columns, summed down each process column
                nl = S._local_nblocks(S.shape, S.bs, grid)[1]
                idx, part, comm = S.indices, A.sum(axis=1), grid.col_comm
            else:
                nl = S.indptr.size - 1
                idx = np.repeat(np.arange(nl, dtype=np.int64), np.diff(S.indptr))
                part, comm = A.sum(axis=2), grid.row_comm
            sums = np.zeros((nl, S.bs))
            np.add.at(sums, idx, part)
            _c.allreduce(comm, sums)
            buf = np.array([float(sums.max()) if sums.size else 0.0])
            _c.allreduce(grid.comm, buf, op=MPI.MAX)
            return float(buf[0])
    raise ValueError(f"ord must be 'fro', 1, inf or 'max', got {ord!r}")
