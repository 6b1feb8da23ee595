"""The solvers' internal layout: contiguous row slabs with a halo exchange (PETSc style).

A Krylov iteration is dominated by one matrix-vector product and a few vector updates and
inner products.  On a 2D grid an ``n x 1`` DistMatrix lives on one process column only, so the
solvers move the operator once into a 1D layout over *all* ranks: rank ``r`` owns the
contiguous block rows ``[r c, (r + 1) c)`` (``c = ceil(nblock_rows / p)``), which is exactly a
DistMatrix with block ``(c bs, 1)`` on a ``p x 1`` grid.  Each rank keeps its rows as a local
scipy matrix whose columns are its own rows followed by a halo (the other ranks' rows its
blocks touch); a product is one all-to-all of halo values (precomputed counts, only the rows
that stored blocks need) and one local sparse kernel.  Vectors are plain numpy arrays of the
local rows, padded to whole blocks (the padding stays zero).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ... import comm as _c
from ...grid import ProcessGrid
from ...matrix import DistMatrix
from .._exchange import exchange_bytes, route_blocks
from ..bsr import BlockSparseMatrix, nblocks

__all__ = ["RowOperator", "RowLayout"]


class RowLayout:
    """The contiguous row-slab layout of ``n`` rows in blocks of ``bs`` over the ranks of a
    grid (collective to build: it creates a ``p x 1`` grid over the same processes; call
    :meth:`free` when done)."""

    def __init__(self, grid: ProcessGrid, n: int, bs: int):
        self.grid0 = grid
        self.n, self.bs = n, bs
        self.p = grid.size
        self.nbr = nblocks(n, bs)
        self.c = max(1, -(-self.nbr // self.p))
        self.rank = grid.rank
        self.lo = min(self.rank * self.c, self.nbr)
        self.hi = min((self.rank + 1) * self.c, self.nbr)
        self.nloc = (self.hi - self.lo) * bs                       # padded local length
        self.nrows = max(0, min(self.hi * bs, n) - self.lo * bs)   # real local rows
        self.grid1 = ProcessGrid(grid.comm, (self.p, 1))

    def owner(self, I: np.ndarray) -> np.ndarray:
        """Rank owning block row(s) ``I``."""
        return np.asarray(I, dtype=np.int64) // self.c

    def from_dist(self, v: DistMatrix) -> np.ndarray:
        """The local padded slab of an ``n x k`` DistMatrix (collective redistribution):
        shape ``(nloc,)`` for ``k = 1``, else ``(nloc, k)``."""
        k = v.shape[1]
        w = v.redistribute(block=(self.c * self.bs, max(k, 1)), grid=self.grid1)
        out = np.zeros((self.nloc, k), dtype=v.dtype)
        out[:self.nrows] = w.local
        return out[:, 0] if k == 1 else out

    def to_dist(self, x: np.ndarray, block: tuple[int, int], grid: ProcessGrid) -> DistMatrix:
        """An ``n x k`` DistMatrix with ``block`` on ``grid`` from local slabs (collective)."""
        x2 = x[:, None] if x.ndim == 1 else x
        k = x2.shape[1]
        w = DistMatrix._wrap(np.ascontiguousarray(x2[:self.nrows]), (self.n, k),
                             (self.c * self.bs, max(k, 1)), self.grid1)
        return w.redistribute(block=block, grid=grid)

    def free(self) -> None:
        self.grid1.free()


class RowOperator:
    """``y = A x`` on row slabs; built once from a BlockSparseMatrix (collective)."""

    def __init__(self, A: BlockSparseMatrix, lay: RowLayout, dtype: np.dtype):
        grid, bs = A.grid, A.bs
        self.lay, self.dtype = lay, dtype
        bi, bj = A.block_coords()
        with _c.operation("sparse.solver_setup"):
            bi, bj, data = route_blocks(grid.comm, lay.owner(bi), bi, bj, A.data, bs, A.dtype)
            lo, hi = lay.lo, lay.hi
            halo = np.unique(bj[(bj < lo) | (bj >= hi)])
            own = lay.owner(halo)
            order = np.argsort(own, kind="stable")
            halo, own = halo[order], own[order]
            # ask the owners for the halo block rows; they answer every product
            reqs = exchange_bytes(grid.comm, [halo[own == r].view(np.uint8)
                                              for r in range(lay.p)])
        self.send_blocks = [reqs[r].view(np.int64) - lo for r in range(lay.p)]
        ar = np.arange(bs, dtype=np.int64)
        self.send_idx = np.concatenate([(J[:, None] * bs + ar[None, :]).reshape(-1)
                                        for J in self.send_blocks])
        self.sendcounts = np.array([J.size * bs for J in self.send_blocks], dtype=np.int64)
        self.recvcounts = np.array([np.count_nonzero(own == r) * bs for r in range(lay.p)],
                                   dtype=np.int64)
        nown = hi - lo
        col = np.where((bj >= lo) & (bj < hi), bj - lo, 0)
        outside = (bj < lo) | (bj >= hi)
        col[outside] = nown + np.searchsorted(halo, bj[outside]) if halo.size else 0
        li = bi - lo
        okey = np.lexsort((col, li))
        li, col, data = li[okey], col[okey], data[okey]
        indptr = np.zeros(nown + 1, dtype=np.int64)
        np.cumsum(np.bincount(li, minlength=nown), out=indptr[1:])
        L = sp.bsr_array((data.astype(dtype, copy=False), col, indptr),
                         shape=(nown * bs, (nown + halo.size) * bs))
        if bs < 8:
            L = L.tocsr()
            L.eliminate_zeros()
        self.L = L
        self.next = (nown + halo.size) * bs
        self.nloc = nown * bs
        self.diag = (li, col, data)  # for preconditioners: blocks with col == li are diagonal

    def matvec(self, x: np.ndarray) -> np.ndarray:
        xe = np.empty(self.next, dtype=self.dtype)
        xe[:self.nloc] = x
        sendbuf = np.ascontiguousarray(x[self.send_idx])
        _c.alltoallv(self.lay.grid0.comm, sendbuf, self.sendcounts, xe[self.nloc:],
                     self.recvcounts)
        return self.L @ xe

    def diagonal_blocks(self) -> np.ndarray:
        """``(nown, bs, bs)`` diagonal blocks of the local rows (zero where not stored)."""
        li, col, data = self.diag
        bs = self.lay.bs
        out = np.zeros((self.lay.hi - self.lay.lo, bs, bs), dtype=data.dtype)
        sel = li == col
        out[li[sel]] = data[sel]
        return out
