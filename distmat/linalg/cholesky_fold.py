"""Cholesky on two ranks in a folded layout (layer 3; used by :mod:`.cholesky`).

On a ``1 x 2`` grid with column block ``w`` the block columns alternate between the ranks:
even blocks (class 0) on rank 0, odd blocks (class 1) on rank 1.  Grouping the lower triangle
by the classes of its rows and columns gives three pieces of the same size:

* ``A00 = A[0, 0]`` and ``A11 = A[1, 1]``: symmetric, only their lower triangles matter;
* ``X = A[1, 0]`` (odd rows, even columns): a full square.  Its lower block triangle holds
  lower-triangle entries of ``A``; its strict upper block triangle is ``A[0, 1]^H``, which by
  symmetry stands for the lower-triangle entries with even rows and odd columns.

Rank 0 keeps ``A00`` and ``A11`` and updates them with SYRK (HERK); rank 1 keeps ``X`` and
updates it with one GEMM per step.  Those are the shapes BLAS runs fastest (a ``1 x 2``
right-looking update is a staircase of narrow GEMMs instead), and both ranks do the same
flops per step.  Step ``j`` factors block column ``j`` of class ``c``: rank 0 factors the
diagonal block and sends it; rank 0 solves the panel rows of class ``c``, rank 1 those of the
other class (held in ``X``: a column block when ``c = 0``, a row block of ``L^H`` when
``c = 1``); they swap the solved rows and update.  Rank 0 updates the class-``c`` piece while
rank 1 solves its rows, then factors the next diagonal block before the rest of its update.

Moving into and out of the fold costs one exchange of half of each rank's rows each way
(datatype-driven, no packing) plus blockwise transposes on rank 1.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import lapack

from .. import comm as _c
from ..matrix import DistMatrix
from ._kernels import gemm_update, syrk_update, trsm_inplace

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
            X[:b * w, b * w:b * w + c] = A[r:r + c, :b * w].conj().T
        elif not lower:    # X[a, b] for a >= b is A[2b, 2a + 1]^H (upper triangle of A)
            X[b * w:, b * w:b * w + c] = A[r:r + c, b * w:].conj().T
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
            D[:q, q:e] = D[q:e, :q].conj().T
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
        reqs.append(_c.isend(comm, np.ascontiguousarray(right), 1, _TAG + 12))
        sends.extend(reqs)

    try:
        fac(0)
        for j in range(nblk):
            c, q = j % 2, j // 2
            r = q * w
            z = min(w, n - j * w)
            Dc, Do = D[c], D[1 - c]
            # the class-c trailing piece, while rank 1 solves its panel rows
            syrk_update(Dc[r + z:, r + z:], Dc[r:r + z, r + z:], upper=True, adjoint=True)
            # the other class's part of panel j, solved on rank 1: L (c = 0) or L^H (c = 1)
            s0 = r if c == 0 else r + w          # first trailing row of the other class
            m = Do.shape[0] - s0
            po = np.empty((m, z) if c == 0 else (z, m), dtype=dt)
            _c.waitall([_c.irecv(comm, po, 1, _TAG + 13)])
            z1 = min(w, n - (j + 1) * w) if j + 1 < nblk else 0
            lead = Do[s0:s0 + z1, s0:]   # look-ahead: the next diagonal block's row first
            if c == 0:
                syrk_update(lead[:, :z1], po[:z1], upper=True)
                gemm_update(lead[:, z1:], po[:z1], po[z1:], b_transposed=True, b_conj=True)
            else:
                syrk_update(lead[:, :z1], po[:, :z1], upper=True, adjoint=True)
                gemm_update(lead[:, z1:], po[:, :z1], po[:, z1:], a_adjoint=True)
            if z1:
                fac(j + 1)
            rest = Do[s0 + z1:, s0 + z1:]
            if c == 0:
                syrk_update(rest, po[z1:], upper=True)
            else:
                syrk_update(rest, po[:, z1:], upper=True, adjoint=True)
            sends[:] = [s for s in sends if not s.test()]
    finally:   # complete before the buffers go, also when a block fails
        _c.waitall(sends)


def _rank1(comm, X: np.ndarray, n: int, w: int, out: np.ndarray, lower: bool) -> None:
    """Rank 1: the square ``X = A[1, 0]`` (upper block triangle: ``A[0, 1]^H``), in place.

    Rank 0 sends ``U11`` and its solved row block ``U12 = L21^H``.  The factor's entries in
    the rows of even blocks of the result ``out`` are final once their column is solved and
    go straight there: ``L[even, odd]`` from the solved row blocks of ``X`` (``lower``),
    ``U[even, odd] = L[odd, even]^H`` from its solved column blocks.
    """
    even = _blocks(n, w, 0)
    nblk = -(-n // w)
    dt = X.dtype
    n1, n0 = X.shape
    sends: list = []
    for j in range(nblk):
        c, q = j % 2, j // 2
        r = q * w
        z = min(w, n - j * w)
        head = np.zeros(1, dtype=np.int64)
        u11 = np.empty((z, z), dtype=dt)
        nps = (n0 if c == 0 else n1) - r - z
        ps = np.empty((z, nps), dtype=dt)
        _c.waitall([_c.irecv(comm, head, 0, _TAG + 10)])
        if head[0] != 0:
            _raise(j, w, int(head[0]))
        reqs = [_c.irecv(comm, u11, 0, _TAG + 11), _c.irecv(comm, ps, 0, _TAG + 12)]
        reqs[0].wait()
        if c == 0:   # odd rows >= block j: a column block of X, L21 = A21 U11^{-1}
            col = X[r:, r:r + z]
            trsm_inplace(col, u11, left=False, lower=False, trans="N")
            sends.append(_c.isend(comm, np.ascontiguousarray(col), 0, _TAG + 13))
            if not lower:   # U[2q, 2a + 1] = L[2a + 1, 2q]^H for odd blocks a >= q
                g = even[q][0]
                out[g:g + z, r:] = col.conj().T
            reqs[1].wait()
            gemm_update(X[r:, r + w:], col, ps)                # - L_odd L_even^H
        else:        # even rows after block j: a row block of X, L21^H = U11^{-H} A21^H
            row = X[r:r + z, r + w:]
            trsm_inplace(row, u11, left=True, lower=False, trans="C")
            sends.append(_c.isend(comm, np.ascontiguousarray(row), 0, _TAG + 13))
            for b in range(q + 1, len(even) if lower else 0):
                g, cnt = even[b]
                o = (b - q - 1) * w
                out[g:g + cnt, r:r + z] = row[:, o:o + cnt].conj().T
            reqs[1].wait()
            gemm_update(X[r + w:, r + w:], ps, row, a_adjoint=True)   # - L_odd L_even^H
        sends = [s for s in sends if not s.test()]
    _c.waitall(sends)
