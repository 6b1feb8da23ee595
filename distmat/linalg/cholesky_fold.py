"""Cholesky on two ranks in a folded layout (layer 3; used by :mod:`.cholesky`).

On a ``1 x 2`` grid with column block ``w`` the block columns alternate between the ranks:
even blocks (class 0, ``n0`` rows and columns) on rank 0, odd blocks (class 1, ``n1 <= n0``)
on rank 1.  Grouping the lower triangle by the classes of its rows and columns gives three
pieces of about the same size:

* ``A00 = A[0, 0]`` and ``A11 = A[1, 1]``: Hermitian, one triangle of each matters;
* ``X = A[1, 0]`` (odd rows, even columns), ``n1 x n0``, all of it.  One block triangle of
  ``X`` holds entries of ``A``'s stored triangle; the other holds ``A[0, 1]^H``, which by
  symmetry stands for the stored entries with even rows and odd columns (for ``lower``, the
  lower block triangle is read from rank 0's rows and the strict upper one from rank 1's
  rows, transposed; the other way round for the upper triangle).

Rank 0 keeps ``A00`` and ``A11`` (as upper triangles, factored into ``U = L^H``) and updates
them with SYRK (HERK); rank 1 keeps ``X`` and updates it with GEMM.  Those are the shapes BLAS
runs fastest (a ``1 x 2`` right-looking update is a staircase of narrow GEMMs instead), and
both ranks do the same flops.  Step ``j`` factors block column ``j`` of class ``c``: rank 0
factors the diagonal block and sends it; rank 0 solves the panel rows of class ``c`` (a row
block of its piece), rank 1 those of the other class (in ``X``: a column block when
``c = 0``, a row block of ``L^H`` when ``c = 1``); they swap the solved rows as rows of
``L^H``.  Each rank stacks the rows of two consecutive panels and applies them in one call
(inner dimension ``2 w``), after first updating what the next panel needs, and runs the rest
while the other rank solves.

Moving into and out of the fold costs one exchange of half of each rank's rows each way
(datatype-driven, no packing) plus blockwise transposes on rank 1.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import lapack

from .. import comm as _c
from ..matrix import DistMatrix
from ._kernels import copy_tiled, gemm_update, syrk_update, trsm_inplace

__all__ = ["applies", "factor"]

_TAG = 7300


def applies(a: DistMatrix, w: int) -> bool:
    """True when :func:`factor` handles ``a`` with panel width ``w``.

    A ``1 x 2`` grid whose column block is ``w`` (at least 32) and at least two blocks, with a
    BLAS dtype.
    """
    n = a.shape[0]
    nb = a.block[1]
    return (a.grid.shape == (1, 2) and w == nb and nb >= 32 and n > nb
            and np.dtype(a.dtype).char in "fdFD")


def _blocks(n: int, w: int, c: int) -> list[tuple[int, int]]:
    """``(first_row, rows)`` of the global row blocks of class ``c`` (block ``j``: ``j % 2``)."""
    return [(j, min(w, n - j)) for j in range(c * w, n, 2 * w)]


def factor(a: DistMatrix, w: int, dtype: np.dtype, lower: bool = True) -> np.ndarray:
    """The local part of the Cholesky factor of ``a``, with zeros in the other triangle.

    Collective over the two ranks.  ``lower``: ``L`` from the lower triangle of ``a``, else
    ``U = L^H`` from the upper triangle (the pieces are mirrored on the way in and out; the
    factorization itself is the same).  ``a`` is not modified.  Raises LinAlgError on both
    ranks naming the order of the first leading minor that is not positive.
    """
    n = a.shape[0]
    comm = a.grid.comm
    me = a.grid.rank
    A = np.ascontiguousarray(a.local, dtype=dtype)
    even, odd = _blocks(n, w, 0), _blocks(n, w, 1)
    n0 = sum(c for _, c in even)
    n1 = sum(c for _, c in odd)
    if me == 0:
        # A00 lives in the first n0 rows of the result (same row length), so the only
        # temporary is A11; fresh memory costs page faults, at worst huge-page compaction
        out = np.empty((n, n0), dtype=dtype)
        D = [out[:n0], np.empty((n1, n1), dtype=dtype)]
        _c.sendrecv_rows(comm, A, odd, 1, D[1], None, 1, _TAG)
        for q, (r, c) in enumerate(even):
            D[0][q * w:q * w + c] = A[r:r + c]
        del A
        if lower:   # rank 0 works on upper triangles
            _mirror(D[0], w, to_lower=False)
            _mirror(D[1], w, to_lower=False)
        _rank0(comm, D, n, w)
        if lower:
            _mirror(D[0], w, to_lower=True)
            _mirror(D[1], w, to_lower=True)
        for q in range(len(even) - 1, 0, -1):   # A00's row blocks down to their places
            r, c = even[q]
            out[r:r + c] = out[q * w:q * w + c]
        _c.sendrecv_rows(comm, D[1], None, 1, out, odd, 1, _TAG + 1)
        _zero_other(out, n, w, 0, lower)
        for a_, (r, c) in enumerate(odd):   # the part of X that held the other triangle
            if lower:
                out[r:r + c, (a_ + 1) * w:] = 0
            else:
                out[r:r + c, :(a_ + 1) * w] = 0
        return out
    X = np.empty((n1, n0), dtype=dtype)
    _c.sendrecv_rows(comm, A, odd, 0, X, None, 0, _TAG)
    # zero pages come free from the system: the other triangle of the even rows is never
    # written, everything else is
    out = np.zeros((n, n1), dtype=dtype)
    for b, (r, c) in enumerate(even):
        if lower and b:    # X[a, b] for a < b is A[2b, 2a + 1]^H (lower triangle of A)
            copy_tiled(X[:b * w, b * w:b * w + c], A[r:r + c, :b * w].T, conj=True)
        elif not lower:    # X[a, b] for a >= b is A[2b, 2a + 1]^H (upper triangle of A)
            copy_tiled(X[b * w:, b * w:b * w + c], A[r:r + c, b * w:].T, conj=True)
    del A
    _rank1(comm, X, n, w, out, lower)
    _c.sendrecv_rows(comm, X, None, 0, out, odd, 0, _TAG + 1)
    _zero_other(out, n, w, 1, lower)
    return out


def _mirror(D: np.ndarray, w: int, to_lower: bool) -> None:
    """Copy one triangle of square ``D`` onto the other, conjugate-transposed, by block strips."""
    for q in range(0, D.shape[0], w):
        e = min(q + w, D.shape[0])
        if to_lower:
            D[q:e, :q] = D[:q, q:e].conj().T
        else:
            copy_tiled(D[:q, q:e], D[q:e, :q].T, conj=True)
        d = D[q:e, q:e]
        d[...] = d.conj().T   # the triangle not copied to is not read afterwards


def _zero_other(out: np.ndarray, n: int, w: int, c: int, lower: bool) -> None:
    """Zero the other triangle in the rows of class-``c`` blocks of ``out`` (whose columns
    are the class-``c`` blocks): around and inside the same-class diagonal blocks."""
    for q, (r, cnt) in enumerate(_blocks(n, w, c)):
        if lower:
            out[r:r + cnt, q * w + cnt:] = 0
            d = out[r:r + cnt, q * w:q * w + cnt]
            d[np.triu_indices(cnt, 1)] = 0
        else:
            out[r:r + cnt, :q * w] = 0
            d = out[r:r + cnt, q * w:q * w + cnt]
            d[np.tril_indices(cnt, -1)] = 0


def _raise(j: int, w: int, info: int) -> None:
    raise np.linalg.LinAlgError(f"the matrix is not positive definite: the leading minor of "
                                f"order {j * w + info} is not positive")


def _rank0(comm, D: list[np.ndarray], n: int, w: int) -> None:
    """Rank 0: the two symmetric pieces ``D[0] = A00`` and ``D[1] = A11``, in place.

    They are held as upper triangles and factored into ``U = L^H``: the panel rows are then
    row blocks, whose triangular solve runs at the faster BLAS rate.
    """
    nblk = -(-n // w)
    dt = D[0].dtype
    potrf = lapack.get_lapack_funcs("potrf", dtype=dt)
    sends: list = []
    # Panel j's rows of one class reach the other class's piece twice: its own solved row
    # block U12 and, one step later, rank 1's rows of panel j + 1.  Both are stacked (rows of
    # the same length) and applied together, so every update has 2 w rows of inner dimension.
    # Stack j is written by fac(j - 1) and by the receive of step j; three rotate.
    width = max(D[0].shape[0], D[1].shape[0])
    bufs = [np.empty(2 * w * width, dtype=dt) for _ in range(3)]
    busy: list = [None, None, None]   # the send still reading each stack

    def fac(j: int) -> None:
        """Factor diagonal block ``j``, send it, solve the class row block, send it."""
        c, q = j % 2, j // 2
        r = q * w
        z = min(w, n - j * w)
        Dc = D[c]
        d = Dc[r:r + z, r:r + z]
        u11, info = potrf(d, lower=0, clean=1)
        head = np.array([info], dtype=np.int64)
        reqs = [_c.isend(comm, head, 1, _TAG + 10)]
        if info == 0:
            d[...] = u11
            reqs.append(_c.isend(comm, np.ascontiguousarray(d), 1, _TAG + 11))
        else:
            _c.waitall(reqs)
            _raise(j, w, int(info))
        right = Dc[r:r + z, r + z:]   # U12 = U11^{-H} A12
        trsm_inplace(right, d, left=True, lower=False, trans="C")
        b = (j + 1) % 3
        if busy[b] is not None:
            busy[b].wait()
        top = bufs[b][:right.size].reshape(right.shape)   # top of stack j + 1
        top[...] = right
        busy[b] = _c.isend(comm, top, 1, _TAG + 12)
        sends.extend(reqs)

    pending = None
    try:
        fac(0)
        for j in range(nblk):
            c, q = j % 2, j // 2
            r = q * w
            z = min(w, n - j * w)
            Do = D[1 - c]
            if pending is not None:   # the previous step's trailing update, while rank 1
                syrk_update(*pending, upper=True, adjoint=True)   # solves its panel rows
                pending = None
            # the other class's trailing piece gets U12 of panel j - 1 (same class) and
            # rank 1's rows of panel j, both as rows of L^H
            s0 = r if c == 0 else r + w          # first trailing row of the other class
            m = Do.shape[0] - s0
            zt = min(w, n - (j - 1) * w) if j else 0
            S = bufs[j % 3][:(zt + z) * m].reshape(zt + z, m)
            _c.waitall([_c.irecv(comm, S[zt:], 1, _TAG + 13)])
            z1 = min(w, n - (j + 1) * w) if j + 1 < nblk else 0
            # look-ahead: the next diagonal block's row first
            syrk_update(Do[s0:s0 + z1, s0:s0 + z1], S[:, :z1], upper=True, adjoint=True)
            gemm_update(Do[s0:s0 + z1, s0 + z1:], S[:, :z1], S[:, z1:], a_adjoint=True)
            if z1:
                fac(j + 1)
            pending = (Do[s0 + z1:, s0 + z1:], S[:, z1:])
            sends[:] = [s for s in sends if not s.test()]
        if pending is not None:
            syrk_update(*pending, upper=True, adjoint=True)
    finally:   # complete before the buffers go, also when a block fails
        _c.waitall(sends + [b for b in busy if b is not None])


def _rank1(comm, X: np.ndarray, n: int, w: int, out: np.ndarray, lower: bool) -> None:
    """Rank 1: the square ``X = A[1, 0]`` (upper block triangle: ``A[0, 1]^H``), in place.

    Rank 0 sends ``U11`` and its solved row block ``U12 = L21^H``.  The updates of panels
    ``2q - 1`` and ``2q`` are applied together (inner dimension ``2 w``): stacked rows of
    ``L_odd^H`` (``U12`` of panel ``2q - 1`` over the solved column block of ``2q``) and of
    ``L_even^H`` (the solved row block of ``2q - 1`` over ``U12`` of ``2q``).  The row block
    the next panel needs goes first; the rest runs in two halves while rank 0 factors.  The
    factor's entries in the rows of even blocks of the result ``out`` are final once their
    column is solved and go straight there: ``L[even, odd]`` from the solved row blocks of
    ``X`` (``lower``), ``U[even, odd] = L[odd, even]^H`` from its solved column blocks.
    """
    even = _blocks(n, w, 0)
    nblk = -(-n // w)
    dt = X.dtype
    n1, n0 = X.shape
    sends: list = []
    abuf = [np.empty(2 * w * max(n1, 1), dtype=dt) for _ in range(3)]
    bbuf = [np.empty(2 * w * max(n0, 1), dtype=dt) for _ in range(3)]
    busy: list = [None, None, None]   # the send still reading each abuf
    halves: list = []
    row = None

    def filler() -> None:
        if halves:
            gemm_update(*halves.pop(0), a_adjoint=True)

    def recv_head(j: int, z: int) -> np.ndarray:
        head = np.zeros(1, dtype=np.int64)
        _c.waitall([_c.irecv(comm, head, 0, _TAG + 10)])
        if head[0] != 0:
            _raise(j, w, int(head[0]))
        u11 = np.empty((z, z), dtype=dt)
        _c.waitall([_c.irecv(comm, u11, 0, _TAG + 11)])
        return u11

    try:
        for j in range(nblk):
            c, q = j % 2, j // 2
            r = q * w
            z = min(w, n - j * w)
            if c == 0:   # odd rows >= block j: a column block of X, L21 = A21 U11^{-1}
                k = q % 3
                zt = w if j else 0
                ma, mb = n1 - r, n0 - r - z
                if busy[k] is not None:
                    busy[k].wait()
                A = abuf[k][:(zt + z) * ma].reshape(zt + z, ma)     # top: U12 of panel j - 1
                B = bbuf[k][:(zt + z) * mb].reshape(zt + z, mb)     # top: row block of j - 1
                u11 = recv_head(j, z)
                col = X[r:, r:r + z]
                colh = A[zt:]                                        # rows of L^H
                if lower:   # the solved column block stays in X (rank 0's result reads it)
                    if zt:   # panel j - 1's update of this column block
                        gemm_update(col, A[:zt], row[:, :z], a_adjoint=True)
                    trsm_inplace(col, u11, left=False, lower=False, trans="N")
                    copy_tiled(colh, col.T, conj=True)
                else:       # only L^H is needed: solve it as a row block (the faster form)
                    copy_tiled(colh, col.T, conj=True)
                    if zt:
                        gemm_update(colh, row[:, :z], A[:zt], a_adjoint=True)
                    trsm_inplace(colh, u11, left=True, lower=False, trans="C")
                busy[k] = _c.isend(comm, colh, 0, _TAG + 13)
                if not lower:   # U[2q, 2a + 1] = L[2a + 1, 2q]^H for odd blocks a >= q
                    g = even[q][0]
                    out[g:g + z, r:] = colh
                _c.waitall([_c.irecv(comm, B[zt:], 0, _TAG + 12)])
                # X[r:, r + z:] -= A^H B: the next panel's row block first, the rest later
                zq = min(w, ma)
                gemm_update(X[r:r + zq, r + z:], A[:, :zq], B, a_adjoint=True)
                mid = r + zq + (ma - zq) // 2
                halves = [(X[r + zq:mid, r + z:], A[:, zq:mid - r], B),
                          (X[mid:, r + z:], A[:, mid - r:], B)]
            else:        # even rows after block j: a row block of X, L21^H = U11^{-H} A21^H
                filler()
                u11 = recv_head(j, z)
                row = X[r:r + z, r + w:]
                trsm_inplace(row, u11, left=True, lower=False, trans="C")
                sends.append(_c.isend(comm, np.ascontiguousarray(row), 0, _TAG + 13))
                for b in range(q + 1, len(even) if lower else 0):
                    g, cnt = even[b]
                    o = (b - q - 1) * w
                    copy_tiled(out[g:g + cnt, r:r + z], row[:, o:o + cnt].T, conj=True)
                filler()
                k1 = (q + 1) % 3   # tops of the next stacks
                ma1 = n1 - r - z
                mb1 = max(n0 - r - 2 * w, 0) if j + 1 < nblk else 0
                if busy[k1] is not None:
                    busy[k1].wait()
                    busy[k1] = None
                bbuf[k1][:z * mb1].reshape(z, mb1)[...] = row[:, w:w + mb1]
                _c.waitall([_c.irecv(comm, abuf[k1][:z * ma1].reshape(z, ma1), 0, _TAG + 12)])
            sends = [s for s in sends if not s.test()]
        while halves:
            filler()
    finally:
        _c.waitall(sends + [b for b in busy if b is not None])
