"""dm.matmul(..., comm_dtype=): compressed panels.

Checks the documented elementwise error bound against an extended-precision reference, that
the result is the product of the rounded operands on every grid (the owner's panels are
rounded too), that the ledger shows a half / a quarter of the bytes, and the argument errors.
"""

import itertools

import numpy as np
import pytest

import distmat as dm
from distmat.summa_kernels import Codec
from distmat.summa_plan import model_bytes
from distmat.testing import assert_all, subgrids

pytestmark = pytest.mark.mpi

#: (product dtype, comm_dtype, its unit roundoff)
PAIRS = [(np.float64, np.float32, 2.0 ** -24), (np.float64, np.float16, 2.0 ** -11),
         (np.float32, np.float16, 2.0 ** -11), (np.float32, "bfloat16", 2.0 ** -8),
         (np.complex128, np.complex64, 2.0 ** -24)]
GRIDS = [(1, 1), (1, 2), (2, 1), (2, 2), (1, 3), (3, 1)]


def _rand(gen, shape, dtype):
    """Entries of magnitude in [0.5, 2] with random signs (float16's normal range)."""
    x = gen.uniform(0.5, 2.0, shape) * gen.choice([-1.0, 1.0], shape)
    if np.dtype(dtype).kind == "c":
        x = x * np.exp(2j * np.pi * gen.uniform(0, 1, shape))
    return x.astype(dtype)


def _round_ref(x, comm_dtype):
    """Round to the compressed format, written independently of distmat's Codec."""
    if comm_dtype == "bfloat16":  # 8 significand bits, round half to even (normal numbers)
        mant, expo = np.frexp(x.astype(np.float64))
        return np.ldexp(np.round(mant * 256.0) / 256.0, expo).astype(x.dtype)
    return x.astype(comm_dtype).astype(x.dtype)


def _gamma(k, u):
    return k * u / (1 - k * u)


def _bound(a, b, dtype, uc):
    """The documented bound for alpha = 1, beta = 0 (elementwise, float64)."""
    k = a.shape[1]
    u = float(np.finfo(dtype).eps) / 2
    g = np.sqrt(2) * _gamma(k + 2, u) if np.dtype(dtype).kind == "c" else _gamma(k, u)
    aa, bb = np.abs(a).astype(np.float64), np.abs(b).astype(np.float64)
    bound = (2 * uc + uc * uc + g * (1 + uc) ** 2) * (aa @ bb)
    if uc == 2.0 ** -11:  # float16's underflow term
        bound += 2.0 ** -25 * (aa.sum(1)[:, None] + bb.sum(0)[None, :])
    return bound


def _stored(x, op):
    return np.ascontiguousarray(x if op == "N" else (x.T if op == "T" else x.conj().T))


def _opx(x, op):
    return x if op == "N" else (x.T if op == "T" else x.conj().T)


def _check(grid, gen, m, n, k, ta, tb, blocks, dtype, cd, uc, panel=None):
    """One compressed product; returns a failure string or None (no raising)."""
    a, b = _rand(gen, (m, k), dtype), _rand(gen, (k, n), dtype)
    A = dm.from_global(_stored(a, ta), grid=grid, block=blocks[0], root=None)
    B = dm.from_global(_stored(b, tb), grid=grid, block=blocks[1], root=None)
    C = dm.matmul(A, B, trans_a=ta, trans_b=tb, comm_dtype=cd, panel=panel)
    got = C.gather(None)
    wide = np.clongdouble if np.dtype(dtype).kind == "c" else np.longdouble
    exact = a.astype(wide) @ b.astype(wide)
    err = np.abs(got.astype(wide) - exact).astype(np.float64)
    bound = _bound(a, b, dtype, uc)
    # the product of the rounded operands, to the product dtype's own rounding
    ar, br = _round_ref(_opx(_stored(a, ta), ta), cd), _round_ref(_opx(_stored(b, tb), tb), cd)
    rounded = ar.astype(wide) @ br.astype(wide)
    u = float(np.finfo(dtype).eps) / 2
    g = (np.sqrt(2) * _gamma(k + 2, u) if np.dtype(dtype).kind == "c" else _gamma(k, u))
    err_r = np.abs(got.astype(wide) - rounded).astype(np.float64)
    tol_r = g * (np.abs(ar).astype(np.float64) @ np.abs(br).astype(np.float64))
    name = f"{grid.shape} {m}x{n}x{k} {ta}{tb} {np.dtype(dtype).name}->{cd}"
    if got.dtype != np.dtype(dtype):
        return f"{name}: dtype {got.dtype}"
    if not np.all(err <= bound):
        return f"{name}: error/bound {np.max(err / np.maximum(bound, 1e-300)):.3g} > 1"
    if not np.all(err_r <= tol_r):
        return f"{name}: not the product of the rounded operands ({np.max(err_r - tol_r):.3g})"
    if m * n * k and not np.max(err) > 10 * np.max(tol_r):
        return f"{name}: no rounding visible (error {np.max(err):.3g}): not compressed?"
    return None


@pytest.mark.grids
def test_error_within_documented_bound_on_every_grid(comm):
    bad = []
    cases = [(37, 23, 45, [(4, 3), (3, 5)]), (5, 3, 2, [(1, 1), (1, 1)]),
             (9, 11, 30, [(2, 7), (5, 2)])]
    for gi, (_shape, grid) in enumerate(subgrids(comm, GRIDS)):
        if grid is None:
            continue
        gen = np.random.default_rng(40 + gi)
        for (dtype, cd, uc), (m, n, k, blocks) in itertools.product(PAIRS, cases):
            ops = ("N", "T", "C") if np.dtype(dtype).kind == "c" else ("N", "T")
            for ta, tb in itertools.product(ops, ops):
                f = _check(grid, gen, m, n, k, ta, tb, blocks, dtype, cd, uc, panel=4)
                if f:
                    bad.append(f)
    assert_all(comm, not bad, "; ".join(bad[:4]))


def test_ledger_bytes_halved_and_quartered(comm):
    """NN moves exactly 1/2 or 1/4 of the bytes (redistribution included); the other forms
    match the model with compressed operand panels and full-precision result panels."""
    grid = dm.ProcessGrid(comm)
    try:
        pr, pc = grid.shape
        n = 16 * pr * pc
        msgs = []
        for dtype, cd, _uc in PAIRS:
            A = dm.random((n, n), seed=1, grid=grid, block=(4, 4), dtype=dtype)
            B = dm.random((n, n), seed=2, grid=grid, block=(4, 4), dtype=dtype)
            Bx = dm.random((n, n), seed=2, grid=grid, block=(3, 5), dtype=dtype)
            item = np.dtype(dtype).itemsize
            citem = 2 if cd == "bfloat16" else np.dtype(cd).itemsize
            for form, X, Y in [("NN", A, B), ("NN", A, Bx), ("TN", A, B), ("NT", A, B),
                               ("TT", A, B)]:
                ta, tb = form[0] == "T", form[1] == "T"
                with dm.profile(grid) as full:
                    dm.matmul(X, Y, trans_a=ta, trans_b=tb, panel=8)
                with dm.profile(grid) as comp:
                    dm.matmul(X, Y, trans_a=ta, trans_b=tb, panel=8, comm_dtype=cd)
                got_f = full.ops["matmul"].bytes_recv.sum if "matmul" in full.ops else 0.0
                got_c = comp.ops["matmul"].bytes_recv.sum if "matmul" in comp.ops else 0.0
                tag = f"{form} {np.dtype(dtype).name}->{cd} blocks {Y.block}"
                if form == "NN" and got_c != got_f * citem / item:
                    msgs.append(f"{tag}: {got_c} bytes, want {got_f} * {citem}/{item}")
                if Y is B:
                    want = model_bytes(form, n, n, n, grid.shape, item, comm_itemsize=citem)
                    if abs(got_c / grid.size - want) > 0.05 * want:
                        msgs.append(f"{tag}: ledger {got_c / grid.size} model {want}")
                saves = model_bytes(form, n, n, n, grid.shape, item, comm_itemsize=citem) \
                    < model_bytes(form, n, n, n, grid.shape, item)
                if saves and not got_c < got_f:  # (NT on 1 x p moves only result panels)
                    msgs.append(f"{tag}: no saving ({got_c} vs {got_f})")
        assert_all(comm, not msgs, "; ".join(msgs[:4]))
    finally:
        grid.free()


def test_results_agree_across_grids_and_with_verify(comm):
    """The same compressed product on several grids; verify=True accepts it."""
    gen = np.random.default_rng(5)
    a, b = _rand(gen, (29, 21), np.float64), _rand(gen, (21, 17), np.float64)
    outs = []
    for _shape, grid in subgrids(comm, GRIDS):
        if grid is None:
            continue
        A = dm.from_global(a, grid=grid, block=(3, 4), root=None)
        B = dm.from_global(b, grid=grid, block=(4, 2), root=None)
        C = dm.matmul(A, B, comm_dtype=np.float16, verify=True)
        D = dm.matmul(A, B, comm_dtype="float16", alpha=2.0, beta=1.0, out=C.copy(),
                      verify=True)
        outs.append((C.gather(None), D.gather(None)))
    ref = _round_ref(a, np.float16) @ _round_ref(b, np.float16)
    tol = 4 * _gamma(21, 2.0 ** -53) * (np.abs(a) @ np.abs(b))
    ok = all(np.all(np.abs(c - ref) <= tol) and np.all(np.abs(d - 3 * ref) <= 3 * tol)
             for c, d in outs)
    assert_all(comm, ok, "compressed products differ between grids")


def test_off_by_default_and_same_dtype_is_off(comm):
    grid = dm.ProcessGrid(comm)
    try:
        A = dm.random((20, 12), seed=3, grid=grid, block=(3, 3))
        B = dm.random((12, 9), seed=4, grid=grid, block=(3, 3))
        C0 = dm.matmul(A, B)
        with dm.profile(grid) as p0:
            dm.matmul(A, B)
        with dm.profile(grid) as p1:
            C1 = dm.matmul(A, B, comm_dtype=np.float64)
        b0 = p0.ops["matmul"].bytes_recv.sum if "matmul" in p0.ops else 0
        b1 = p1.ops["matmul"].bytes_recv.sum if "matmul" in p1.ops else 0
        ok = np.array_equal(C0.local, C1.local) and b0 == b1
        assert_all(comm, ok, "comm_dtype equal to the product dtype changed something")
    finally:
        grid.free()


def test_bad_comm_dtype_raises_on_every_rank(comm):
    grid = dm.ProcessGrid(comm)
    try:
        A = dm.ones((6, 5), grid=grid, block=(2, 2))
        A32 = A.astype(np.float32)
        Z = A.astype(np.complex128)
        with pytest.raises(TypeError, match="floating"):
            dm.matmul(A, A, trans_b=True, comm_dtype=np.int32)
        with pytest.raises(TypeError, match="floating"):
            dm.matmul(A, A, trans_b=True, comm_dtype="bogus")
        with pytest.raises(ValueError, match="wider"):
            dm.matmul(A32, A32, trans_b=True, comm_dtype=np.float64)
        with pytest.raises(ValueError, match="wider"):
            dm.matmul(A, A, trans_b=True, comm_dtype=np.longdouble)
        with pytest.raises(TypeError, match="real"):
            dm.matmul(A, A, trans_b=True, comm_dtype=np.complex64)
        with pytest.raises(TypeError, match="complex"):
            dm.matmul(Z, Z, trans_b=True, comm_dtype=np.float32)
        with pytest.raises(TypeError, match="complex"):
            dm.matmul(Z.astype(np.complex64), Z.astype(np.complex64), trans_b=True,
                      comm_dtype="bfloat16")
        with pytest.raises(ValueError, match="bfloat16.*float64"):
            dm.matmul(A, A, trans_b=True, comm_dtype="bfloat16")
        # float16 overflow: one large entry on one rank only, raised everywhere
        big = dm.ones((6, 5), grid=grid, block=(2, 2))
        if big.local.size and grid.rank == grid.size - 1:
            big.local[0, 0] = 1e5
        owner = comm.allreduce(int(big.local.size > 0 and grid.rank == grid.size - 1))
        if owner:
            with pytest.raises(OverflowError, match="65504"):
                dm.matmul(big, A, trans_b=True, comm_dtype=np.float16)
        # the grid is still usable
        ok = np.allclose(dm.matmul(A, A, trans_b=True, comm_dtype="float32").gather(None),
                         np.full((6, 6), 5.0))
        assert_all(comm, ok, "grid unusable after comm_dtype errors")
    finally:
        grid.free()


def test_codec_rounding_and_special_values(comm):
    """The codecs round to nearest even, keep NaN, inf and signed zero, and decode exactly."""
    gen = np.random.default_rng(comm.Get_rank())
    x = (gen.standard_normal(2000) * np.exp(gen.uniform(-30, 30, 2000))).astype(np.float32)
    ties = np.array([1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, -(1 + 2.0 ** -8)], dtype=np.float32)
    bf = Codec("bfloat16", np.dtype(np.float32))
    r = bf.round(np.concatenate([x, ties]))
    ok = np.array_equal(r, _round_ref(np.concatenate([x, ties]), "bfloat16"))
    ok = ok and np.array_equal(r[-3:], np.array([1.0, 1 + 2.0 ** -6, -1.0], np.float32))
    special = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, -np.nan], dtype=np.float32)
    special[5] = np.frombuffer(np.uint32(0x7F800001).tobytes(), np.float32)[0]  # low payload
    s = bf.round(special)
    ok = ok and np.isnan(s[0]) and np.isnan(s[5]) and s[1] == np.inf and s[2] == -np.inf
    ok = ok and np.signbit(s[3]) and not np.signbit(s[4]) and bf.encode(x).dtype == np.uint16
    h = Codec("float16", np.dtype(np.float64))
    y = gen.standard_normal(500)
    ok = ok and np.array_equal(h.round(y), y.astype(np.float16).astype(np.float64))
    ok = ok and h.encode(y).dtype == np.uint16 and h.unit_roundoff == 2.0 ** -11
    ok = ok and np.all(np.abs(bf.round(x) - x) <= 2.0 ** -8 * np.abs(x))
    assert_all(comm, bool(ok), "codec rounding wrong")


def test_verify_accepts_float16_underflow(comm):
    """Entries below float16's normal range round with an absolute error (the documented
    2^-25 term); verify=True must allow it, in every operand form."""
    gen = np.random.default_rng(8)
    a = _rand(gen, (9, 7), np.float64) * 1e-6   # float16 subnormals: ~3% relative rounding
    b = _rand(gen, (7, 6), np.float64)
    msgs = []
    for _shape, grid in subgrids(comm, [(1, 1), (2, 2), (1, 3)]):
        if grid is None:
            continue
        for ta, tb in itertools.product("NT", "NT"):
            A = dm.from_global(_stored(a, ta), grid=grid, block=(2, 3), root=None)
            B = dm.from_global(_stored(b, tb), grid=grid, block=(3, 2), root=None)
            try:
                C = dm.matmul(A, B, trans_a=ta, trans_b=tb, comm_dtype=np.float16,
                              alpha=-2.0, verify=True)
                err = np.abs(C.gather(None) + 2 * (a @ b))
                if not np.all(err <= 2 * _bound(a, b, np.float64, 2.0 ** -11)):
                    msgs.append(f"{grid.shape} {ta}{tb}: beyond the documented bound")
            except dm.VerificationError as e:
                msgs.append(f"{grid.shape} {ta}{tb}: {e}")
    assert_all(comm, not msgs, "; ".join(msgs[:3]))
