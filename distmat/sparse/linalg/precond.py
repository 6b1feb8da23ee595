"""Preconditioners for the Krylov solvers: Jacobi and block Jacobi.

Both invert diagonal pieces of ``A`` once, on the ranks that own the diagonal blocks, and send
the inverses along the grid rows to every rank holding the matching rows of a vector with row
block ``bs``, so applying them is a local batched product with no message.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import comm as _c
from ...errors import SingularMatrixError
from ...matrix import DistMatrix
from .._exchange import route_blocks
from ..bsr import BlockSparseMatrix, nblocks

__all__ = ["BlockJacobi", "block_jacobi", "jacobi"]


class BlockJacobi:
    """``z = D^{-1} r`` with ``D`` the block diagonal (or the diagonal) of ``A``.

    Callable on an ``n x k`` DistMatrix ``r`` on ``A``'s grid; returns a DistMatrix like ``r``.
    Build with :func:`block_jacobi` or :func:`jacobi`.

    Attributes
    ----------
    blocks : ndarray
        ``(nlbr, bs, bs)`` inverses for this rank's block rows **(local)** (replicated along
        the grid row, so any column layout of ``r`` is served without messages).
    """

    def __init__(self, A: BlockSparseMatrix, *, pointwise: bool = False):
        if not isinstance(A, BlockSparseMatrix):
            raise TypeError(f"A must be a BlockSparseMatrix, got {type(A).__name__}")
        if A.shape[0] != A.shape[1]:
            raise ValueError(f"a Jacobi preconditioner needs a square matrix, got {A.shape}")
        grid, bs, n = A.grid, A.bs, A.shape[0]
        pr, pc = grid.shape
        self.grid, self.bs, self.n, self.pointwise = grid, bs, n, pointwise
        I_, D = A.diagonal_blocks()
        inv = np.empty_like(D)
        kind = "diagonal entry" if pointwise else "diagonal block"
        with _c.agreed(grid.comm):
            idx = np.arange(bs)
            for t in range(I_.size):
                blk = D[t].copy()
                pad = I_[t] * bs + idx >= n
                blk[pad, pad] = 1.0  # padding of an edge block: identity, stripped below
                if pointwise:
                    d = np.diagonal(blk).copy()
                    if np.any(d == 0) or not np.all(np.isfinite(d)):
                        bad = I_[t] * bs + int(np.flatnonzero((d == 0) | ~np.isfinite(d))[0])
                        raise SingularMatrixError(f"Jacobi: the {kind} of row {bad} is zero")
                    inv[t] = np.diag(1.0 / d)
                else:
                    try:
                        inv[t] = np.linalg.inv(blk)
                    except np.linalg.LinAlgError:
                        raise SingularMatrixError(f"block Jacobi: the {kind} of block row "
                                                  f"{int(I_[t])} is singular") from None
                inv[t][pad, :] = 0
                inv[t][:, pad] = 0
        self._I, self._inv = I_, inv
        nstored = np.array([I_.size], dtype=np.int64)
        _c.allreduce(grid.comm, nstored)
        if int(nstored[0]) != nblocks(n, bs):
            raise SingularMatrixError(f"{'Jacobi' if pointwise else 'block Jacobi'}: some "
                                      f"diagonal blocks of A are not stored (zero)")
        with _c.operation("sparse.precond"):
            dest = np.concatenate([(I_ % pr) * pc + c for c in range(pc)])
            gi, _, gd = route_blocks(grid.comm, dest, np.tile(I_, pc), np.tile(I_, pc),
                                     np.concatenate([inv] * pc), bs, inv.dtype)
        nlbr = max(0, -(-(nblocks(n, bs) - grid.myrow) // pr))
        self.blocks = np.zeros((nlbr, bs, bs), dtype=inv.dtype)
        if gi.size:
            self.blocks[gi // pr] = gd

    def __call__(self, r: DistMatrix) -> DistMatrix:
        if not isinstance(r, DistMatrix) or r.shape[0] != self.n \
                or not r.grid.compatible(self.grid):
            raise ValueError(f"the preconditioner applies to a DistMatrix with {self.n} rows "
                             f"on its grid, got {r!r}")
        if r.block[0] != self.bs:
            return self._apply(r.redistribute(block=(self.bs, r.block[1]))).redistribute(
                block=r.block)
        return self._apply(r)

    def slab(self, lay: Any) -> np.ndarray:
        """The inverses for the row slabs of a solver's :class:`~.rowop.RowLayout`
        (``(nown, bs, bs)``; collective, once per solve)."""
        with _c.operation("sparse.solver_setup"):
            gi, _, gd = route_blocks(self.grid.comm, lay.owner(self._I), self._I, self._I,
                                     self._inv, self.bs, self._inv.dtype)
        out = np.zeros((lay.hi - lay.lo, self.bs, self.bs), dtype=self._inv.dtype)
        if gi.size:
            out[gi - lay.lo] = gd
        return out

    def _apply(self, r: DistMatrix) -> DistMatrix:
        lr, lc = r.local.shape
        bs = self.bs
        out = np.zeros_like(r.local, dtype=np.result_type(r.dtype, self.blocks.dtype))
        if lr and lc:
            nl = nblocks(lr, bs)
            rp = np.zeros((nl * bs, lc), dtype=r.dtype)
            rp[:lr] = r.local
            z = np.matmul(self.blocks[:nl], rp.reshape(nl, bs, lc))
            out[:] = z.reshape(nl * bs, lc)[:lr]
        return DistMatrix._wrap(out, r.shape, r.block, r.grid)


def block_jacobi(A: BlockSparseMatrix) -> BlockJacobi:
    """Block-Jacobi preconditioner: the inverses of ``A``'s ``bs x bs`` diagonal blocks.

    Collective over the grid.  Raises :class:`~distmat.SingularMatrixError` on every rank if
    a diagonal block is singular or missing.
    """
    return BlockJacobi(A)


def jacobi(A: BlockSparseMatrix) -> BlockJacobi:
    """Jacobi preconditioner ``z = r / diag(A)``. Collective; SingularMatrixError on a zero
    diagonal entry."""
    return BlockJacobi(A, pointwise=True)
