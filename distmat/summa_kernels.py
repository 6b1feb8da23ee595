"""The SUMMA kernels on local arrays (layer 3 internals of :func:`distmat.matmul`).

Three variants, each a loop over panels with one broadcast per panel and side (posted one step
ahead into double buffers) and one local BLAS GEMM that accumulates in place.  MPI moves a
large message only inside MPI calls, so each GEMM is cut into a few chunks of at least 512
rows with a ``Request.test`` of the in-flight messages between them: the next panel travels
while this one is multiplied.  The owner copies its panel out of its local array (columns of
a C-ordered array are strided); receivers get it straight into their contiguous buffer.

- :func:`stationary_c` for ``C += alpha A B``: loop over the inner dimension; the A column
  panel is broadcast along grid rows (``A1_mc_star``), the B row panel down grid columns
  (``B1_star_mr``).
- :func:`stationary_b` for ``C += alpha op(A) B`` with ``op`` = T or C: loop over the rows of
  C; the A column panel is broadcast along grid rows, each rank multiplies it (transposed)
  with its own B, and the partial C row panel is reduced down the grid column onto its owner.
- :func:`stationary_a` for ``C += alpha A op(B)``: loop over the columns of C; the B row panel
  is broadcast down grid columns, each rank multiplies its own A with it (transposed), and the
  partial C column panel is reduced along the grid row onto its owner.

The reductions are flat point-to-point sums (:class:`_FlatReduce`), posted after a panel's GEMM
and completed after the next one.

Local arrays are C-ordered.  A C-ordered ``X`` is the Fortran-ordered ``X.T``, so BLAS sees
``C^T += B^T A^T`` on the same memory: no copies, no temporaries of the size of C.

The callers guarantee the distributions line up (same block sizes along shared dimensions) and
that ``C`` has already been scaled by beta.

Compressed panels (``dm.matmul(..., comm_dtype=)``): the caller encodes the travelling
operands with a :class:`Codec` (their *wire* arrays, float32, complex64 or uint16 bit
patterns) and passes the codec; every panel, the owner's own included, is then decoded into a
work buffer of C's dtype before its GEMM, so every rank multiplies the same rounded numbers.
Without a codec nothing changes (the wire arrays are the product-dtype arrays).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import numpy as np
from mpi4py import MPI
from scipy.linalg import blas as _blas

from . import comm as _c
from .summa_plan import Step, plan

__all__ = ["stationary_c", "stationary_b", "stationary_a", "gemm_into", "gemm_abt", "Codec",
           "comm_codec"]

_GEMM = {np.dtype(np.float32): _blas.sgemm, np.dtype(np.float64): _blas.dgemm,
         np.dtype(np.complex64): _blas.cgemm, np.dtype(np.complex128): _blas.zgemm}


def gemm_into(c: np.ndarray, a: np.ndarray, b: np.ndarray, alpha: complex, beta: float,
              trans_a: int = 0, trans_b: int = 0) -> None:
    """``c = alpha op(a) op(b) + beta c`` in place, with Fortran-ordered ``a``, ``b``, ``c``.

    ``trans_*`` is 0 (none), 1 (transpose) or 2 (conjugate transpose), as in BLAS.  Empty
    products are handled here (``c`` is only scaled).
    """
    if c.size == 0:
        return
    kk = a.shape[0] if trans_a else a.shape[1]
    if kk == 0:
        if beta == 0:
            c[...] = 0
        elif beta != 1:
            c *= beta
        return
    res = _GEMM[c.dtype](alpha, a, b, beta=beta, c=c, trans_a=trans_a, trans_b=trans_b,
                         overwrite_c=1)
    if res is not c and not np.shares_memory(res, c):  # f2py copied c: write back (slow path)
        c[...] = res


# ---- a GEMM on strided row-major views (scipy's BLAS through its exported function pointers):
# f2py's wrappers above need contiguous operands, but the owner of a C column panel wants to
# accumulate straight into ``C[:, cols]``, a block with a leading dimension.
_INT = ctypes.POINTER(ctypes.c_int)
_VOID = ctypes.c_void_p
_GEMM_FN = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, _INT, _INT, _INT, _VOID,
                            _VOID, _INT, _VOID, _INT, _VOID, _VOID, _INT)
_SCALAR = {"f": ctypes.c_float, "d": ctypes.c_double, "F": ctypes.c_float * 2,
           "D": ctypes.c_double * 2}
_gemm_fn: dict[str, object] = {}


def _gemm_pointer(char: str) -> object | None:
    """scipy.linalg.cython_blas's ``?gemm`` for dtype character ``char`` (None if unusable)."""
    if char not in _gemm_fn:
        fn = None
        try:
            from scipy.linalg import cython_blas

            cap = cython_blas.__pyx_capi__["sdcz"["fdFD".index(char)] + "gemm"]
            get_name = ctypes.pythonapi.PyCapsule_GetName
            get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
            get_ptr = ctypes.pythonapi.PyCapsule_GetPointer
            get_ptr.restype, get_ptr.argtypes = ctypes.c_void_p, [ctypes.py_object,
                                                                  ctypes.c_char_p]
            addr = get_ptr(cap, get_name(cap))
            fn = _GEMM_FN(addr) if addr else None
        except Exception:  # noqa: BLE001 - no pointer: the numpy fallback below is used
            fn = None
        _gemm_fn[char] = fn
    return _gemm_fn[char]


def _scalar(char: str, v: complex) -> object:
    return _SCALAR[char](v.real, v.imag) if char in "FD" else _SCALAR[char](v.real)


def _ld(x: np.ndarray) -> int | None:
    """Row stride (elements) of a 2-D view with unit column stride, else None."""
    isz = x.itemsize
    if x.shape[1] > 1 and x.strides[1] != isz or x.strides[0] % isz:
        return None
    return max(1, x.strides[0] // isz, x.shape[1])


def gemm_abt(c: np.ndarray, a: np.ndarray, b: np.ndarray, alpha: complex, beta: float,
             conj: bool) -> None:
    """``c = alpha a op(b)^T + beta c`` for row-major views; ``op`` conjugates if ``conj``.

    ``a`` is ``m x k``, ``b`` ``n x k`` and ``c`` ``m x n``, each with unit column stride
    (``c`` typically a column block of a larger array).  Falls back to numpy otherwise.
    """
    m, n = c.shape
    k = a.shape[1]
    if m == 0 or n == 0:
        return
    char = c.dtype.char
    fn = _gemm_pointer(char) if char in _SCALAR and a.dtype == b.dtype == c.dtype else None
    lda, ldb, ldc = _ld(a), _ld(b), _ld(c)
    if fn is None or k == 0 or None in (lda, ldb, ldc):
        bt = (np.conj(b) if conj else b).T
        c[...] = alpha * (a @ bt) + (beta * c if beta != 0 else 0)
        return
    # column-major view: c^T (n x m, ld ldc) = op'(b) (n x k) a^T (k x m)
    i = ctypes.c_int
    fn(b"C" if conj else b"T", b"N", ctypes.byref(i(n)), ctypes.byref(i(m)),
       ctypes.byref(i(k)), ctypes.cast(ctypes.pointer(_scalar(char, alpha)), _VOID),
       _VOID(b.ctypes.data), ctypes.byref(i(ldb)), _VOID(a.ctypes.data), ctypes.byref(i(lda)),
       ctypes.cast(ctypes.pointer(_scalar(char, beta)), _VOID), _VOID(c.ctypes.data),
       ctypes.byref(i(ldc)))


# ---- compressed panels --------------------------------------------------------------------
class Codec:
    """How panels of a product of dtype ``dtype`` travel in the narrower ``name`` format.

    ``encode`` rounds to nearest (ties to even) into the wire array; ``decode`` widens back
    exactly.  ``unit_roundoff`` is u of the format, so ``|decode(encode(x)) - x| <= u |x|``
    elementwise for results in the format's normal range.

    - ``"float32"``, ``"complex64"``: the numpy type itself on the wire.
    - ``"float16"``: IEEE half, sent as its uint16 bit pattern (u = 2^-11).
    - ``"bfloat16"`` (float32 products only; numpy has no such type): a float32 rounded to
      its upper 16 bits (8 significand bits, float32's exponent range) by integer arithmetic
      on the bit pattern, sent as uint16 (u = 2^-8).  NaN stays NaN.
    """

    def __init__(self, name: str, dtype: np.dtype):
        self.name = name
        self.dtype = np.dtype(dtype)
        self.wire = np.dtype(np.uint16) if name in ("float16", "bfloat16") else np.dtype(name)
        self.unit_roundoff = {"float32": 2.0 ** -24, "complex64": 2.0 ** -24,
                              "float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}[name]

    def encode(self, x: np.ndarray) -> np.ndarray:
        """``x`` (any shape, of the product dtype) rounded into a new C-ordered wire array."""
        if self.name == "bfloat16":
            bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
            lsb = (bits >> np.uint32(16)) & np.uint32(1)
            out = ((bits + (lsb + np.uint32(0x7FFF))) >> np.uint32(16)).astype(np.uint16)
            nan = np.isnan(x)
            if nan.any():  # rounding could carry a NaN payload into inf or zero
                out[nan] = 0x7FC0
            return out
        if self.name == "float16":
            with np.errstate(over="ignore"):  # overflow is reported by the caller
                return np.ascontiguousarray(x).astype(np.float16).view(np.uint16)
        return np.ascontiguousarray(x).astype(self.wire)

    def decode(self, w: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Widen the wire array ``w`` into ``out`` (same shape, the product dtype); return it."""
        if self.name == "bfloat16":
            np.left_shift(w, np.uint32(16), out=out.view(np.uint32))
        elif self.name == "float16":
            np.copyto(out, w.view(np.float16))
        else:
            np.copyto(out, w)
        return out

    def round(self, x: np.ndarray) -> np.ndarray:
        """``x`` rounded through the format, as a new array of the product dtype."""
        return self.decode(self.encode(x), np.empty(np.shape(x), dtype=self.dtype))

    def overflowed(self, x: np.ndarray, w: np.ndarray) -> bool:
        """True if encoding turned a finite entry of ``x`` into an infinity (float16 only)."""
        if self.name != "float16" or w.size == 0:
            return False
        return bool(np.count_nonzero(np.isinf(w.view(np.float16)))
                    != np.count_nonzero(np.isinf(x)))


#: The narrowings comm_dtype may ask for, by product dtype.
_NARROWER = {np.dtype(np.float64): ("float32", "float16"),
             np.dtype(np.float32): ("float16", "bfloat16"),
             np.dtype(np.complex128): ("complex64",),
             np.dtype(np.complex64): ()}


def comm_codec(comm_dtype: object, dtype: np.dtype) -> Codec | None:
    """Validate ``comm_dtype`` for a product of dtype ``dtype``; None when off.

    None or the product's own dtype means no compression.  Raises TypeError for anything that
    is not a floating type, or a real/complex mismatch, and ValueError for a type wider than
    the product (or bfloat16 for a non-float32 product).
    """
    if comm_dtype is None:
        return None
    dtype = np.dtype(dtype)
    if isinstance(comm_dtype, str) and comm_dtype.strip().lower() == "bfloat16":
        name = "bfloat16"
        kind, size = "f", 2
    else:
        try:
            cdt = np.dtype(comm_dtype)
        except TypeError:
            cdt = None
        if cdt is None or cdt.kind not in "fc":
            raise TypeError(f"comm_dtype must be a floating dtype (float32, float16, "
                            f"'bfloat16', complex64) or None, got {comm_dtype!r}")
        name, kind, size = cdt.name, cdt.kind, cdt.itemsize
        if cdt == dtype:
            return None
    if (kind == "c") != (dtype.kind == "c"):
        raise TypeError(f"comm_dtype={name} does not match the {dtype} product: a "
                        f"{'complex' if dtype.kind == 'c' else 'real'} product needs a "
                        f"{'complex' if dtype.kind == 'c' else 'real'} comm_dtype "
                        f"(allowed: {', '.join(_NARROWER[dtype]) or 'none'})")
    if size > dtype.itemsize:
        raise ValueError(f"comm_dtype={name} is wider than the {dtype} product; compressed "
                         f"communication narrows (allowed: {', '.join(_NARROWER[dtype])})")
    if name not in _NARROWER[dtype]:
        raise ValueError(f"comm_dtype={name} is not available for a {dtype} product "
                         f"(allowed: {', '.join(_NARROWER[dtype]) or 'none'})")
    return Codec(name, dtype)


def _take(src: np.ndarray, idx: slice | np.ndarray, axis: int, out: np.ndarray) -> np.ndarray:
    """Copy ``src`` restricted to ``idx`` along ``axis`` into the contiguous ``out``."""
    if isinstance(idx, slice):
        np.copyto(out, src[idx] if axis == 0 else src[:, idx])
    else:
        np.take(src, idx, axis=axis, out=out)
    return out


def _rows(src: np.ndarray, idx: slice | np.ndarray, out: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of a C-ordered ``src`` as a contiguous array (a view when possible)."""
    if isinstance(idx, slice):
        return src[idx]
    return _take(src, idx, 0, out)


class _Buffers:
    """Two flat buffers handed out in turn as contiguous arrays of the asked shape."""

    def __init__(self, size: int, dtype: np.dtype):
        self._size, self._dtype = size, dtype
        self._bufs: list[np.ndarray | None] = [None, None]
        self._i = 0

    def next(self, shape: tuple[int, int]) -> np.ndarray:
        buf = self._bufs[self._i]
        if buf is None:  # allocated on first use
            buf = self._bufs[self._i] = np.empty(self._size, dtype=self._dtype)
        self._i ^= 1
        return buf[:shape[0] * shape[1]].reshape(shape)


def _width(grid, n: int, width: int) -> int:
    """The panel width: on a single process nothing overlaps, so one step does it all."""
    return max(n, 1) if grid.size == 1 else width


def _pipeline(steps: list[Step], post: Callable[[Step], tuple], run: Callable[..., None],
              extra: Callable[[], list] | None = None) -> None:
    """Post step ``i + 1``'s communication, then finish and compute step ``i``.

    ``run(step, poke, *data)`` gets ``poke``, which drives the in-flight messages (the next
    panel's broadcasts and whatever ``extra()`` returns): MPI moves a large message only
    inside MPI calls, so the GEMM is cut into a few chunks with a poke between them and the
    next panel travels while this one is multiplied.
    """
    if not steps:
        return
    pending = post(steps[0])
    for i, st in enumerate(steps):
        nxt = post(steps[i + 1]) if i + 1 < len(steps) else None
        reqs, data = pending
        _c.waitall(reqs)
        flying = list(nxt[0]) if nxt is not None else []

        def poke(flying: list = flying) -> None:
            for r in flying + (extra() if extra is not None else []):
                r.test()

        run(st, poke, *data)
        pending = nxt


def _chunks(n: int, least: int = 512, most: int = 8) -> list[tuple[int, int]]:
    """Cut ``range(n)`` into at most ``most`` pieces of at least ``least`` (GEMM stays fast)."""
    parts = max(1, min(most, n // least))
    step = -(-n // parts) if n else 0
    return [(r, min(r + step, n)) for r in range(0, n, step)] if n else [(0, 0)]


def _panel_bcast(comm: MPI.Comm, me: int, root: int, local: np.ndarray, idx: slice | np.ndarray,
                 axis: int, shape: tuple[int, int], bufs: _Buffers) -> tuple[np.ndarray, list]:
    """A panel of ``local`` (columns for axis 1, rows for axis 0) from ``root`` to ``comm``.

    Returns the panel (contiguous) and the pending requests.  With one process along
    ``comm`` nothing moves; empty panels are not sent (every member agrees they are empty).
    """
    if comm.Get_size() == 1 or me == root:
        if axis == 0:
            panel = _rows(local, idx, bufs.next(shape) if not isinstance(idx, slice) else None)
        elif isinstance(idx, slice) and idx.start == 0 and idx.stop == local.shape[1]:
            panel = local
        else:
            panel = _take(local, idx, 1, bufs.next(shape))
    else:
        panel = bufs.next(shape)
    if comm.Get_size() == 1 or panel.size == 0:
        return panel, []
    return panel, [_c.ibcast(comm, panel, root)]


def stationary_c(grid, A: np.ndarray, B: np.ndarray, C: np.ndarray, alpha: complex,
                 k: int, nb_a: int, mb_b: int, width: int, codec: Codec | None = None) -> None:
    """``C += alpha A B`` (local pieces). Collective over the grid.

    ``A`` is this rank's piece of an ``m x k`` matrix whose rows are distributed like C's and
    whose columns have block ``nb_a``; ``B`` of a ``k x n`` matrix with row block ``mb_b`` and
    columns distributed like C's.  With ``codec``, ``A`` and ``B`` are wire arrays (both
    travel) and every panel is decoded before its GEMM.
    """
    pr, pc = grid.shape
    steps = plan(k, nb_a, pc, mb_b, pr, _width(grid, k, width))
    m_r, n_c = C.shape
    wmax = max((s.width for s in steps), default=0)
    bufa, bufb = _Buffers(m_r * wmax, A.dtype), _Buffers(wmax * n_c, B.dtype)
    if codec is not None:
        worka, workb = _Buffers(m_r * wmax, C.dtype), _Buffers(wmax * n_c, C.dtype)

    def post(st: Step) -> tuple:
        pa, ra = _panel_bcast(grid.row_comm, grid.mycol, st.owner1, A, st.local1, 1,
                              (m_r, st.width), bufa)
        pb, rb = _panel_bcast(grid.col_comm, grid.myrow, st.owner2, B, st.local2, 0,
                              (st.width, n_c), bufb)
        return ra + rb, (pa, pb)

    chunks = _chunks(m_r)

    def run(st: Step, poke: Callable[[], None], pa: np.ndarray, pb: np.ndarray) -> None:
        if codec is not None:  # every rank, the owner too, multiplies the rounded panels
            pa = codec.decode(pa, worka.next(pa.shape))
            pb = codec.decode(pb, workb.next(pb.shape))
        for r0, r1 in chunks:  # rows of C and of the A panel: contiguous pieces
            gemm_into(C[r0:r1].T, pb.T, pa[r0:r1].T, alpha, 1.0)
            poke()

    _pipeline(steps, post, run)


class _FlatReduce:
    """Sum partial panels onto their owner with point-to-point messages, one step behind.

    ``push`` posts this step's messages (the owner receives one panel from each other
    member of ``comm``, the others send theirs) and completes the previous step's, so the
    transfer overlaps the next GEMM; the owner adds the sum into C through ``add``.  A flat
    tree moves the same bytes as ``MPI_Reduce`` (the ledger counts them the same way) and,
    with MPICH's shared-memory path, runs an order of magnitude faster for large panels.
    """

    def __init__(self, comm: MPI.Comm, me: int, size: int, dtype: np.dtype,
                 add: Callable[[slice | np.ndarray, np.ndarray], None]):
        self.comm, self.me, self.q, self.add = comm, me, comm.Get_size(), add
        self.bufs = [_Buffers(size, dtype) for _ in range(self.q - 1)]
        self.pending: tuple | None = None

    def push(self, part: np.ndarray | None, shape: tuple[int, int], root: int,
             idx: slice | np.ndarray) -> None:
        """Reduce ``part`` (None: the owner already added its own share) onto ``root``."""
        if self.q == 1:
            if part is not None:
                self.add(idx, part)
            return
        if shape[0] * shape[1] == 0:
            return
        recvs: list[np.ndarray] = []
        if self.me == root:
            peers = [r for r in range(self.q) if r != root]
            recvs = [b.next(shape) for b in self.bufs]
            reqs = [_c.irecv(self.comm, buf, src) for buf, src in zip(recvs, peers, strict=True)]
        else:
            reqs = [_c.isend(self.comm, part, root)]
        prev, self.pending = self.pending, (reqs, root, idx, recvs, part)
        if prev is not None:
            self._complete(prev)

    def flying(self) -> list:
        """The requests still in flight (for progress)."""
        return list(self.pending[0]) if self.pending is not None else []

    def finish(self) -> None:
        """Complete the last step."""
        if self.pending is not None:
            prev, self.pending = self.pending, None
            self._complete(prev)

    def _complete(self, pending: tuple) -> None:
        reqs, root, idx, recvs, part = pending
        _c.waitall(reqs)
        if self.me != root:
            return
        total = part
        for r in recvs:
            if total is None:
                total = r
            else:
                total += r
        if total is not None:
            self.add(idx, total)


def stationary_b(grid, A: np.ndarray, B: np.ndarray, C: np.ndarray, alpha: complex,
                 m: int, nb_a: int, mb_c: int, conj: bool, width: int,
                 codec: Codec | None = None) -> None:
    """``C += alpha op(A) B`` with ``op(A) = A^T`` (``A^H`` when ``conj``). Collective.

    ``A`` is this rank's piece of a ``k x m`` matrix whose rows are distributed like B's rows
    and whose columns have block ``nb_a``; ``B`` a ``k x n`` matrix whose columns are
    distributed like C's; C's rows have block ``mb_c``.  With ``codec``, ``A`` is a wire
    array (its panels travel and are decoded before use); ``B`` (stationary) and the reduced
    partial C panels stay in C's dtype.
    """
    pr, pc = grid.shape
    steps = plan(m, nb_a, pc, mb_c, pr, _width(grid, m, width))
    k_r, n_c = B.shape
    wmax = max((s.width for s in steps), default=0)
    bufa = _Buffers(k_r * wmax, A.dtype)
    worka = _Buffers(k_r * wmax, C.dtype) if codec is not None else None
    part = _Buffers(wmax * n_c, C.dtype)
    trans = 2 if conj else 1

    def add(idx: slice | np.ndarray, total: np.ndarray) -> None:
        C[idx] += total

    red = _FlatReduce(grid.col_comm, grid.myrow, wmax * n_c, C.dtype, add)

    def post(st: Step) -> tuple:
        pa, ra = _panel_bcast(grid.row_comm, grid.mycol, st.owner1, A, st.local1, 1,
                              (k_r, st.width), bufa)
        return ra, (pa,)

    chunks = _chunks(k_r)

    def run(st: Step, poke: Callable[[], None], pa: np.ndarray) -> None:
        if n_c == 0:
            return
        if codec is not None:
            pa = codec.decode(pa, worka.next(pa.shape))
        inplace = grid.myrow == st.owner2 and isinstance(st.local2, slice)
        # in place when my rows of C are contiguous, else into a panel buffer to be reduced
        p = C[st.local2] if inplace else part.next((st.width, n_c))
        for j, (k0, k1) in enumerate(chunks):  # the inner dimension, accumulated
            gemm_into(p.T, B[k0:k1].T, pa[k0:k1].T, alpha, 1.0 if inplace or j else 0.0, 0,
                      trans)
            poke()
        red.push(None if inplace else p, (st.width, n_c), st.owner2, st.local2)

    _pipeline(steps, post, run, red.flying)
    red.finish()


def stationary_a(grid, A: np.ndarray, B: np.ndarray, C: np.ndarray, alpha: complex,
                 n: int, mb_b: int, nb_c: int, conj: bool, width: int,
                 codec: Codec | None = None) -> None:
    """``C += alpha A op(B)`` with ``op(B) = B^T`` (``B^H`` when ``conj``). Collective.

    ``A`` is this rank's piece of an ``m x k`` matrix whose rows are distributed like C's and
    whose columns like B's columns; ``B`` of an ``n x k`` matrix with row block ``mb_b``;
    C's columns have block ``nb_c``.  With ``codec``, ``B`` is a wire array (its panels
    travel and are decoded before use); ``A`` (stationary) and the reduced partial C panels
    stay in C's dtype.
    """
    pr, pc = grid.shape
    steps = plan(n, mb_b, pr, nb_c, pc, _width(grid, n, width))
    m_r, k_c = A.shape
    wmax = max((s.width for s in steps), default=0)
    bufb = _Buffers(wmax * k_c, B.dtype)
    workb = _Buffers(wmax * k_c, C.dtype) if codec is not None else None
    part = _Buffers(wmax * m_r, C.dtype)

    def add(idx: slice | np.ndarray, total: np.ndarray) -> None:
        C[:, idx] += total

    red = _FlatReduce(grid.row_comm, grid.mycol, wmax * m_r, C.dtype, add)

    def post(st: Step) -> tuple:
        pb, rb = _panel_bcast(grid.col_comm, grid.myrow, st.owner1, B, st.local1, 0,
                              (st.width, k_c), bufb)
        return rb, (pb,)

    chunks = _chunks(m_r)

    def run(st: Step, poke: Callable[[], None], pb: np.ndarray) -> None:
        if m_r == 0:
            return
        if codec is not None:
            pb = codec.decode(pb, workb.next(pb.shape))
        sl = st.local2
        if grid.mycol == st.owner2 and isinstance(sl, slice):
            # my columns of C are a block: accumulate my share in place (strided GEMM)
            for r0, r1 in chunks:
                gemm_abt(C[r0:r1, sl], A[r0:r1], pb, alpha, 1.0, conj)
                poke()
            red.push(None, (m_r, st.width), st.owner2, sl)
            return
        # P (m_r x w) = A op(B_panel)^T, i.e. Fortran P^T = op'(B_panel) A^T with op' = T/C
        p = part.next((m_r, st.width))
        for r0, r1 in chunks:  # rows of A and of P: contiguous pieces
            gemm_into(p[r0:r1].T, pb.T, A[r0:r1].T, alpha, 0.0, 2 if conj else 1, 0)
            poke()
        red.push(p, p.shape, st.owner2, st.local2)

    _pipeline(steps, post, run, red.flying)
    red.finish()
