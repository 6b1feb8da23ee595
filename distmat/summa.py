"""Distributed matrix multiply: ``dm.matmul`` and ``A @ B`` (SUMMA, layer 3).

``C = alpha * op(A) @ op(B) + beta * C`` for dense block-cyclic matrices on one grid.  The
work is done by the SUMMA kernels of :mod:`distmat.summa_kernels`; this module checks the
arguments (from global metadata, before any message), lines the distributions up, picks the
variant for the operand form and optionally verifies the result (:mod:`distmat.freivalds`).

Which variant runs
------------------
- ``A @ B``: stationary C (broadcast A's column panels along grid rows and B's row panels
  down grid columns).
- ``A^T @ B`` / ``A^H @ B``: stationary B (broadcast A's column panels along grid rows,
  reduce the C row panels down grid columns).  No transpose of A.
- ``A @ B^T`` / ``A @ B^H``: stationary A (broadcast B's row panels down grid columns,
  reduce the C column panels along grid rows).  No transpose of B.
- ``A^T @ B^T``: ``op(B)^T @ op(A)^T`` by stationary C, then one distributed transpose of
  the ``m x n`` result.

Blocks
------
The result gets block ``(row block of op(A), column block of op(B))``.  Where the shared
dimensions' blocks differ (or ``out`` has another block), the operand that disagrees is
redistributed first (one all-to-all of that operand, counted under ``matmul`` in the ledger);
the panel plan handles differing blocks along the inner dimension of ``A @ B`` without any
redistribution.

Compressed communication
------------------------
With ``comm_dtype=`` the operands are rounded once, elementwise, to the narrower format
(:class:`distmat.summa_kernels.Codec`) and their panels travel in it (their redistribution
too, when blocks must be lined up); every rank decodes each panel, its own included, back to
the product dtype before the GEMM, so the product is that of the rounded operands whatever the
grid, accumulated in the product dtype.  The partial C panels reduced by the ``A^T B`` and
``A B^T`` variants and the final transpose of ``A^T B^T`` are results, not operands: they
travel in the product dtype (rounding them would make the result depend on the grid).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import comm as _c
from .convert import redistribute, transpose
from .errors import ShapeMismatchError
from .matrix import SUPPORTED_DTYPES, DistMatrix, _is_scalar, check_same_grid
from .summa_kernels import Codec, comm_codec, stationary_a, stationary_b, stationary_c
from .summa_plan import DEFAULT_PANEL
from .threads import ensure_blas_threads

__all__ = ["matmul"]


def _op(flag: Any, name: str) -> str:
    """Normalise a trans flag to ``"N"``, ``"T"`` or ``"C"``."""
    if flag is False or flag is None:
        return "N"
    if flag is True:
        return "T"
    if isinstance(flag, str) and flag.upper() in ("N", "T", "C", "H"):
        return "C" if flag.upper() in ("C", "H") else flag.upper()
    raise ValueError(f"{name} must be False/'N' (none), True/'T' (transpose) or 'C' "
                     f"(conjugate transpose), got {flag!r}")


def _opshape(X: DistMatrix, op: str) -> tuple[int, int]:
    return X.shape if op == "N" else X.shape[::-1]


def _opblock(X: DistMatrix, op: str) -> tuple[int, int]:
    return X.block if op == "N" else X.block[::-1]


def _local(X: DistMatrix, dtype: np.dtype, out: DistMatrix | None) -> np.ndarray:
    """``X.local`` as a C-ordered array of ``dtype``, never sharing memory with ``out``."""
    x = np.ascontiguousarray(X.local, dtype=dtype)
    if out is not None and np.may_share_memory(x, out.local):
        x = x.copy()
    return x


def _with_block(X: DistMatrix, block: tuple[int, int]) -> DistMatrix:
    return X if X.block == block else redistribute(X, block=block)


def matmul(A: DistMatrix, B: DistMatrix, *, trans_a: bool | str = False,
           trans_b: bool | str = False, alpha: complex = 1.0, beta: complex = 0.0,
           out: DistMatrix | None = None, panel: int | None = None,
           verify: bool = False, comm_dtype: Any = None) -> DistMatrix:
    """``alpha * op(A) @ op(B) + beta * out``, distributed (SUMMA). Collective over the grid.

    Parameters
    ----------
    A, B : DistMatrix
        The operands, on the same grid **(global)**.
    trans_a, trans_b : bool or {"N", "T", "C"}
        ``op``: False or ``"N"`` for none, True or ``"T"`` for the transpose, ``"C"`` (or
        ``"H"``) for the conjugate transpose (the same as ``"T"`` for real types) **(global)**.
    alpha, beta : scalar
        Scale factors **(global)**.  With ``beta == 0`` the old ``out`` is never read (NaN in
        it does not reach the result).
    out : DistMatrix, optional
        Where to write the result **(global)**: an ``m x n`` matrix on the same grid with the
        result's dtype.  Required for ``beta != 0``.  Any block size is accepted (operands are
        redistributed to match it).  The result is written into ``out.local`` in place.
    panel : int, optional
        Panel width: how many indices of the looped dimension one SUMMA step handles
        **(global)**; default :data:`distmat.summa_plan.DEFAULT_PANEL` (1024).  Independent of
        the block size.
    verify : bool
        Check the result with Freivalds' random projection (``O(n^2)`` extra work, no
        gather) and raise :class:`distmat.VerificationError` on every rank if it fails
        **(global)**.  With ``comm_dtype`` the tolerance includes its rounding (below).
    comm_dtype : dtype or "bfloat16", optional
        Compressed communication **(global)**; default None (off; never on by default).  The
        operand panels travel in a narrower format, halving or quartering their bytes:
        ``float32`` or ``float16`` for a float64 product, ``float16`` or ``"bfloat16"`` for a
        float32 product, ``complex64`` for a complex128 product.  ``"bfloat16"`` is a float32
        rounded to nearest-even on its upper 16 bits (8 significand bits, float32's range;
        numpy has no such type), sent as uint16.  The product's own dtype means off.  Every
        operand entry is rounded once (the owner's panels too), so the result depends on the
        operands and ``comm_dtype`` only, not on the grid; accumulation is in the product
        dtype.  See Notes for the error bound.

    Returns
    -------
    DistMatrix
        ``out`` when given, else a new ``m x n`` matrix with block
        ``(row block of op(A), column block of op(B))``, dtype
        ``numpy.result_type(A.dtype, B.dtype, alpha, beta)`` (and ``out.dtype``).

    Raises
    ------
    ShapeMismatchError
        (a ValueError) if the inner dimensions differ, naming both shapes, or ``out`` has
        the wrong shape.  Raised on every rank before any message.
    GridMismatchError
        If the operands (or ``out``) live on different grids.
    TypeError
        If an operand is not a DistMatrix or ``out`` has another dtype than the result; if
        ``comm_dtype`` is not a floating type or is real for a complex product (or complex for
        a real one).
    ValueError
        If ``comm_dtype`` is wider than the product dtype (or not one of the narrowings
        listed above).
    OverflowError
        With ``comm_dtype=float16``, if an operand has a finite entry beyond float16's range
        (|x| > 65504); raised on every rank (one extra all-reduce of a flag).
    VerificationError
        With ``verify=True``, if the check fails.

    Notes
    -----
    Variants and costs are described in :mod:`distmat.summa`; the bytes the SUMMA model
    predicts are :func:`distmat.summa_plan.model_bytes` (``comm_itemsize=`` for compressed
    panels).  BLAS threads are limited once per process as described in
    :mod:`distmat.threads`.

    **Error bound with comm_dtype.**  Let ``u_c`` be the unit roundoff of ``comm_dtype``
    (float32 and complex64 ``2^-24``, float16 ``2^-11``, bfloat16 ``2^-8``), ``u`` that of
    the product dtype and ``gamma_k = k u / (1 - k u)``.  The operands are rounded to
    ``A + dA``, ``B + dB`` with ``|dA| <= u_c |A|``, ``|dB| <= u_c |B|`` and then multiplied
    in the product dtype, so for ``alpha = 1``, ``beta = 0``, elementwise::

        |C - op(A) op(B)| <= (2 u_c + u_c^2 + gamma_k (1 + u_c)^2) |op(A)| |op(B)|

    (for complex products replace ``gamma_k`` by ``sqrt(2) gamma_{k+2}``; for other
    ``alpha`` and ``beta`` the usual rounding of the scaling adds ``gamma_2`` relative to
    ``|alpha| |op(A)| |op(B)| + |beta| |C0|``).  It holds while the rounded entries stay in
    the format's normal range: float16 flushes ``|x| < 2^-24`` to zero and rounds
    ``|x| < 2^-14`` with an absolute error up to ``2^-25`` (add ``2^-25 (|op(A)| 1 1^T +
    1 1^T |op(B)|)`` to the bound), and raises OverflowError above 65504; bfloat16 rounds
    the float32 entries within 0.2% of float32's largest (``|x| >= 3.3961e38``) to
    infinity, without an error.

    Examples
    --------
    >>> C = A @ B
    >>> G = dm.matmul(X, D, trans_a=True)              # X^T D without transposing X
    >>> dm.matmul(A, B, alpha=2.0, beta=1.0, out=C)    # C = 2 A B + C, in place
    """
    if not isinstance(A, DistMatrix) or not isinstance(B, DistMatrix):
        raise TypeError(f"matmul operands must be DistMatrix, got {type(A).__name__} and "
                        f"{type(B).__name__}")
    ta, tb = _op(trans_a, "trans_a"), _op(trans_b, "trans_b")
    for name, v in (("alpha", alpha), ("beta", beta)):
        if not _is_scalar(v) or isinstance(v, bool):
            raise TypeError(f"{name} must be a number, got {v!r}")
    if panel is not None and (isinstance(panel, bool) or not isinstance(panel, (int, np.integer))
                              or panel < 1):
        raise ValueError(f"panel must be a positive integer, got {panel!r}")
    width = DEFAULT_PANEL if panel is None else int(panel)
    check_same_grid(A, B, "matmul(A, B)")
    (m, ka), (kb, n) = _opshape(A, ta), _opshape(B, tb)
    if ka != kb:
        raise ShapeMismatchError(
            f"matmul: inner dimensions differ: op(A) is {m} x {ka} (A {A.shape}, trans_a="
            f"{ta!r}) and op(B) is {kb} x {n} (B {B.shape}, trans_b={tb!r})")
    dts = [A.dtype, B.dtype]
    if out is not None:
        if not isinstance(out, DistMatrix):
            raise TypeError(f"out must be a DistMatrix or None, got {type(out).__name__}")
        check_same_grid(A, out, "matmul(..., out=)")
        if out.shape != (m, n):
            raise ShapeMismatchError(f"matmul: out has shape {out.shape} but op(A) @ op(B) is "
                                     f"{(m, n)} (A {A.shape}, B {B.shape})")
        dts.append(out.dtype)
    elif beta != 0:
        raise ValueError("matmul: beta != 0 needs out= (the matrix beta scales)")
    dtype = np.result_type(*dts, alpha, beta)
    if dtype not in SUPPORTED_DTYPES:
        dtype = np.result_type(dtype, np.float64)
    if out is not None and out.dtype != dtype:
        raise TypeError(f"matmul: out has dtype {out.dtype} but the result is {dtype} "
                        f"(from {A.dtype}, {B.dtype}, alpha={alpha!r}, beta={beta!r})")
    codec = comm_codec(comm_dtype, dtype)
    k = ka
    grid = A.grid
    ensure_blas_threads(grid.comm)
    if dtype.kind != "c":
        ta, tb = ta.replace("C", "T"), tb.replace("C", "T")
        alpha, beta = float(np.real(alpha)), float(np.real(beta))

    with _c.operation("matmul"):
        check = None
        if verify:
            from .freivalds import Freivalds

            check = Freivalds(A, B, ta, tb, alpha, beta, out, dtype)
            if codec is not None:  # allow the rounding of the operands (see Notes)
                uc = codec.unit_roundoff
                check.scale += 2.0 * (2.0 * uc + uc * uc)
                if codec.name == "float16":  # and its underflow term (absolute, 2^-25)
                    from .freivalds import matvec

                    under = 2.0 * 2.0 ** -25 * abs(alpha) * (
                        matvec(A, np.ones(k), ta, True) * check.ax.sum()
                        + matvec(B, check.ax, tb, True).sum())
                    check.bound = check.bound + under / check.scale
        C = _product(A, B, ta, tb, alpha, beta, out, dtype, (m, n, k), width, codec)
        if check is not None:
            check.verify(C)
    return C


def _start(out: DistMatrix | None, block: tuple[int, int], shape: tuple[int, int], grid,
           dtype: np.dtype, beta: complex) -> DistMatrix:
    """The result matrix, already holding ``beta * out`` (zeros when ``beta == 0``)."""
    if out is None:
        from .layout import Layout

        local = np.zeros(Layout(shape, block, grid.shape).local_shape(*grid.coords), dtype)
        return DistMatrix._wrap(local, shape, block, grid)
    if not out.local.flags.c_contiguous:  # the kernels need C order: swap in a C copy
        out.local = np.ascontiguousarray(out.local)
    if beta == 0:
        out.local[...] = 0
    elif beta != 1:
        out.local *= beta
    return out


def _encode(A: DistMatrix, B: DistMatrix, dtype: np.dtype, codec: Codec
            ) -> tuple[DistMatrix, DistMatrix]:
    """A and B rounded to the codec's format, as matrices of wire arrays (same layouts)."""
    def enc(X: DistMatrix) -> DistMatrix:
        return DistMatrix._wrap(codec.encode(np.asarray(X.local, dtype=dtype)), X.shape,
                                X.block, X.grid)

    if codec.name != "float16":
        return enc(A), enc(B)
    with _c.agreed(A.grid.comm):  # float16 overflows above 65504: fail on every rank
        Aw, Bw = enc(A), enc(B)
        for X, W in ((A, Aw), (B, Bw)):
            if codec.overflowed(X.local, W.local):
                big = float(np.max(np.abs(X.local[np.isfinite(X.local)])))
                raise OverflowError(
                    f"matmul: comm_dtype=float16 overflows: an operand has entries of "
                    f"magnitude up to {big:.4g} but float16 holds at most 65504; scale the "
                    f"operands or use comm_dtype=float32 or 'bfloat16'")
    return Aw, Bw


def _operand(X: DistMatrix, dtype: np.dtype, out: DistMatrix | None, codec: Codec | None,
             travels: bool) -> np.ndarray:
    """The local array a kernel gets: the product-dtype copy, or with a codec the wire array
    (travelling operand) or its rounded product-dtype value (stationary operand)."""
    if codec is None:
        return _local(X, dtype, out)
    if travels:
        return np.ascontiguousarray(X.local)
    return codec.decode(X.local, np.empty(X.local.shape, dtype=dtype))


def _product(A: DistMatrix, B: DistMatrix, ta: str, tb: str, alpha: complex, beta: complex,
             out: DistMatrix | None, dtype: np.dtype, mnk: tuple[int, int, int],
             width: int, codec: Codec | None = None) -> DistMatrix:
    m, n, k = mnk
    grid = A.grid
    if ta != "N" and tb != "N":
        return _product_tt(A, B, ta, tb, alpha, beta, out, dtype, mnk, width, codec)
    want = (_opblock(A, ta)[0], _opblock(B, tb)[1]) if out is None else out.block
    if codec is not None:  # round once; redistributions below then move the narrow format
        A, B = _encode(A, B, dtype, codec)
    if ta == "N" and tb == "N":
        A = _with_block(A, (want[0], A.block[1]))
        B = _with_block(B, (B.block[0], want[1]))
        a, b = _operand(A, dtype, out, codec, True), _operand(B, dtype, out, codec, True)
        C = _start(out, want, (m, n), grid, dtype, beta)
        stationary_c(grid, a, b, C.local, alpha, k, A.block[1], B.block[0], width, codec)
    elif tb == "N":  # op(A) = A^T or A^H: A is k x m
        B = _with_block(B, (B.block[0], want[1]))
        A = _with_block(A, (B.block[0], A.block[1]))
        a, b = _operand(A, dtype, out, codec, True), _operand(B, dtype, out, codec, False)
        C = _start(out, want, (m, n), grid, dtype, beta)
        stationary_b(grid, a, b, C.local, alpha, m, A.block[1], want[0], ta == "C", width,
                     codec)
    else:  # op(B) = B^T or B^H: B is n x k
        A = _with_block(A, (want[0], A.block[1]))
        B = _with_block(B, (B.block[0], A.block[1]))
        a, b = _operand(A, dtype, out, codec, False), _operand(B, dtype, out, codec, True)
        C = _start(out, want, (m, n), grid, dtype, beta)
        stationary_a(grid, a, b, C.local, alpha, n, B.block[0], want[1], tb == "C", width,
                     codec)
    return C


def _product_tt(A: DistMatrix, B: DistMatrix, ta: str, tb: str, alpha: complex, beta: complex,
                out: DistMatrix | None, dtype: np.dtype, mnk: tuple[int, int, int],
                width: int, codec: Codec | None = None) -> DistMatrix:
    """``op(A) op(B) = (op(B)^T op(A)^T)^T``: one stationary-C product, one transpose."""
    m, n, k = mnk
    grid = A.grid
    Bx = B.conj() if tb == "C" else B  # op(B)^T, an n x k matrix
    Ax = A.conj() if ta == "C" else A  # op(A)^T, a k x m matrix
    D = _product(Bx, Ax, "N", "N", alpha, 0.0, None, dtype, (n, m, k), width, codec)
    T = transpose(D)
    if out is None:
        return T
    T = _with_block(T, out.block)
    C = _start(out, out.block, (m, n), grid, dtype, beta)
    C.local += T.local
    return C
