"""SUMMA matmul against numpy: a PBLAS-style sweep, edge cases, errors, ledger, verify.

Every rank builds the same global operands from a fixed seed; the reference is computed in
extended precision (``np.longdouble``), and each rank checks its own local piece with the
PBLAS test ratio ``|C - C_ref| / (eps (|alpha| |op(A)| |op(B)| + |beta| |C0|)) <= 16``.
"""

import itertools

import numpy as np
import pytest

import distmat as dm
from distmat.freivalds import Freivalds
from distmat.summa_plan import model_bytes
from distmat.testing import assert_all, subgrids

pytestmark = pytest.mark.mpi

DTYPES = (np.float32, np.float64, np.complex64, np.complex128)
OPS = ("N", "T", "C")
SWEEP_GRIDS = [(1, 1), (1, 2), (2, 1), (2, 2), (1, 3), (3, 1), (1, 4), (4, 1), (2, 3), (3, 2),
               (8, 1)]


def _rand(gen, shape, dtype):
    x = gen.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * gen.standard_normal(shape)
    return x.astype(dtype)


def _op(x, op):
    return x if op == "N" else (x.T if op == "T" else x.conj().T)


def _stored(x_op, op):
    """The stored matrix whose op is ``x_op``."""
    return np.ascontiguousarray(_op(x_op, op) if op != "C" else x_op.conj().T)


def _pblas_ratio(got, a, b, c0, alpha, beta, dtype):
    """Largest PBLAS test ratio over the entries of ``got`` (a full or local piece)."""
    big = a.shape[0] * a.shape[1] * b.shape[1] > 200_000  # extended precision is slow there
    cplx = np.dtype(dtype).kind == "c"
    wide = (np.complex128 if cplx else np.float64) if big else \
        (np.clongdouble if cplx else np.longdouble)
    real = np.float64 if big else np.longdouble
    ref = alpha * (a.astype(wide) @ b.astype(wide)) + beta * c0.astype(wide)
    scale = abs(alpha) * (np.abs(a).astype(real) @ np.abs(b).astype(real)) \
        + abs(beta) * np.abs(c0).astype(real)
    err = np.abs(got.astype(wide) - ref)
    eps = float(np.finfo(dtype).eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(scale > 0, err / (eps * scale), np.where(err == 0, 0.0, np.inf))
    return float(r.max()) if r.size else 0.0


def _case(grid, gen, m, n, k, ta, tb, blocks, alpha, beta, dtype, panel=None, nan_out=False,
          verify=False):
    """Run one product; return a failure string or None (no collective may raise here)."""
    a, b = _rand(gen, (m, k), dtype), _rand(gen, (k, n), dtype)
    c0 = _rand(gen, (m, n), dtype)
    A = dm.from_global(_stored(a, ta), grid=grid, block=blocks[0], root=None)
    B = dm.from_global(_stored(b, tb), grid=grid, block=blocks[1], root=None)
    cinit = np.full((m, n), np.nan, dtype) if nan_out else c0
    C = dm.from_global(cinit, grid=grid, block=blocks[2], root=None)
    R = dm.matmul(A, B, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta, out=C, panel=panel,
                  verify=verify)
    rows, cols = R.global_indices()
    want_c0 = np.zeros_like(c0) if nan_out else c0
    got = R.local
    ratio = _pblas_ratio(got, a[rows], b[:, cols], want_c0[np.ix_(rows, cols)], alpha,
                         0.0 if nan_out else beta, dtype)
    if R is not C or R.dtype != np.dtype(dtype) or R.shape != (m, n) or not ratio <= 16:
        return (f"{grid.shape} m,n,k={m},{n},{k} {ta}{tb} blocks={blocks} alpha={alpha} "
                f"beta={beta} {np.dtype(dtype).name} panel={panel}: ratio {ratio:.3g}")
    return None


SIZES = [0, 1, 2, 5, 7, 13, 31, 60]
BLOCKS = range(1, 8)
SCALARS = [(2.0, 3.0), (1.0, 0.0), (2.0, 0.0), (1.0, 1.0), (-0.5, 1.0)]


def _sample(seed, count):
    """A deterministic sample of the (shapes, ops, blocks, scalars, dtype) product space."""
    gen = np.random.default_rng(seed)
    out = []
    for i in range(count):
        m, n, k = gen.choice(SIZES, 3)
        if i % 11 == 0:
            k = 0
        ta, tb = OPS[i % 3], OPS[(i // 3) % 3]
        blocks = [tuple(int(v) for v in gen.choice(BLOCKS, 2)) for _ in range(3)]
        if i % 2:  # half the cases with conforming blocks (no redistribution)
            blocks[1] = (blocks[0][1], blocks[1][1]) if tb == "N" else (blocks[1][0],
                                                                        blocks[0][1])
        alpha, beta = SCALARS[i % len(SCALARS)]
        dtype = DTYPES[(i // 9) % 4]
        panel = [None, 1, 3, 8][i % 4]
        out.append((int(m), int(n), int(k), ta, tb, blocks, alpha, beta, dtype, panel))
    return out


@pytest.mark.grids
def test_pblas_sweep_all_grids(comm):
    """Every grid shape that fits; the trans combos, scalars, dtypes and blocks sampled."""
    bad = []
    for i, (_shape, grid) in enumerate(subgrids(comm, SWEEP_GRIDS)):
        if grid is None:
            continue
        gen = np.random.default_rng(100 + i)
        for case in _sample(i, 64):
            m, n, k, ta, tb, blocks, alpha, beta, dtype, panel = case
            f = _case(grid, gen, m, n, k, ta, tb, blocks, alpha, beta, dtype, panel)
            if f:
                bad.append(f)
    assert_all(comm, not bad, "; ".join(bad[:4]))


def test_all_trans_combinations_and_scalars_on_full_grid(comm):
    """All 9 trans combos x 4 scalar pairs x 4 dtypes on the full near-square grid."""
    grid = dm.ProcessGrid(comm)
    try:
        gen = np.random.default_rng(7)
        bad = []
        for (ta, tb), (alpha, beta), dtype in itertools.product(
                itertools.product(OPS, OPS), SCALARS[:4], DTYPES):
            f = _case(grid, gen, 23, 17, 29, ta, tb, [(3, 4), (5, 2), (2, 3)], alpha, beta,
                      dtype, panel=6)
            if f:
                bad.append(f)
        assert_all(comm, not bad, "; ".join(bad[:4]))
    finally:
        grid.free()


def test_edge_shapes_k0_vectors_and_small_matrices(comm):
    grid = dm.ProcessGrid(comm)
    try:
        gen = np.random.default_rng(3)
        bad = []
        for m, n, k in [(5, 4, 0), (0, 3, 4), (3, 0, 4), (0, 0, 0), (1, 1, 1), (9, 1, 7),
                        (1, 9, 7), (7, 5, 1), (2, 2, 60), (60, 1, 1)]:
            for ta, tb in [("N", "N"), ("T", "N"), ("N", "C"), ("T", "T")]:
                for blocks in ([(1, 1)] * 3, [(4, 3), (2, 5), (3, 3)]):
                    f = _case(grid, gen, m, n, k, ta, tb, blocks, 2.0, 3.0, np.float64,
                              verify=True)
                    if f:
                        bad.append(f)
        assert_all(comm, not bad, "; ".join(bad[:4]))
    finally:
        grid.free()


def test_beta_zero_never_reads_out(comm):
    """NaN in ``out`` must not reach the result when beta = 0 (every form and dtype)."""
    grid = dm.ProcessGrid(comm)
    try:
        gen = np.random.default_rng(5)
        bad = []
        for (ta, tb), dtype in itertools.product([("N", "N"), ("T", "N"), ("N", "T"),
                                                  ("C", "C")], DTYPES):
            for k in (0, 9):
                f = _case(grid, gen, 11, 8, k, ta, tb, [(2, 2), (2, 3), (3, 2)], 2.0, 0.0,
                          dtype, nan_out=True, verify=True)
                if f:
                    bad.append(f)
        assert_all(comm, not bad, "; ".join(bad[:4]))
    finally:
        grid.free()


def test_larger_random_cases_every_dtype(comm):
    grid = dm.ProcessGrid(comm)
    try:
        bad = []
        gen = np.random.default_rng(9)
        for dtype, (ta, tb) in zip(DTYPES * 2, [("N", "N"), ("T", "N"), ("N", "C"),
                                                ("C", "T"), ("N", "T"), ("C", "N"),
                                                ("T", "T"), ("N", "N")], strict=True):
            f = _case(grid, gen, 301, 257, 211, ta, tb, [(32, 32), (32, 32), (32, 32)], 1.5,
                      0.5, dtype)
            if f:
                bad.append(f)
        # default blocks, the @ operator
        a, b = gen.standard_normal((250, 190)), gen.standard_normal((190, 220))
        A = dm.from_global(a, grid=grid, root=None)
        B = dm.from_global(b, grid=grid, root=None)
        C = A @ B
        rows, cols = C.global_indices()
        r = _pblas_ratio(C.local, a[rows], b[:, cols], np.zeros(C.local.shape), 1.0, 0.0,
                         np.float64)
        if not r <= 16 or C.block != (A.block[0], B.block[1]):
            bad.append(f"A @ B ratio {r}")
        assert_all(comm, not bad, "; ".join(bad[:4]))
    finally:
        grid.free()


def test_mixed_dtypes_follow_numpy(comm):
    grid = dm.ProcessGrid(comm)
    try:
        gen = np.random.default_rng(4)
        bad = []
        for da, db, alpha in [(np.float32, np.float64, 1.0), (np.float32, np.complex64, 1.0),
                              (np.float64, np.complex64, 1.0), (np.float32, np.float32, 2j)]:
            a, b = _rand(gen, (13, 6), da), _rand(gen, (6, 9), db)
            want_dt = np.result_type(a.dtype, b.dtype, alpha)
            A = dm.from_global(a, grid=grid, block=(3, 2), root=None)
            B = dm.from_global(b, grid=grid, block=(2, 4), root=None)
            C = dm.matmul(A, B, alpha=alpha)
            got = C.gather(None)
            want = alpha * (a.astype(want_dt) @ b.astype(want_dt))
            tol = 100 * np.finfo(want_dt).eps * np.abs(a) @ np.abs(b)
            if C.dtype != want_dt or not np.all(np.abs(got - want) <= tol):
                bad.append(f"{np.dtype(da)} x {np.dtype(db)} alpha={alpha}: {C.dtype}")
        assert_all(comm, not bad, str(bad))
    finally:
        grid.free()


def test_out_aliasing_and_operand_blocks(comm):
    grid = dm.ProcessGrid(comm)
    try:
        gen = np.random.default_rng(8)
        a = gen.standard_normal((12, 12))
        A = dm.from_global(a, grid=grid, block=(3, 3), root=None)
        dm.matmul(A, A, beta=1.0, out=A, verify=True)  # A = A @ A + A, in place
        got = A.gather(None)
        ok = np.allclose(got, a @ a + a)
        B = dm.from_global(a, grid=grid, block=(2, 5), root=None)
        C = dm.zeros((12, 12), grid=grid, block=(4, 1))
        dm.matmul(B, B, trans_b=True, out=C)  # operands redistributed to C's block
        ok = ok and C.block == (4, 1) and np.allclose(C.gather(None), a @ a.T)
        assert_all(comm, ok, "aliasing or block handling wrong")
    finally:
        grid.free()


def test_bad_inputs_raise_on_every_rank(comm):
    grid = dm.ProcessGrid(comm)
    try:
        A = dm.ones((4, 5), grid=grid, block=(2, 2))
        B = dm.ones((6, 3), grid=grid, block=(2, 2))
        with pytest.raises(dm.ShapeMismatchError, match=r"\(4, 5\).*\(6, 3\)"):
            dm.matmul(A, B)
        with pytest.raises(ValueError, match="inner dimensions"):
            A @ B
        with pytest.raises(ValueError, match="inner dimensions"):
            dm.matmul(A, A)
        C = dm.ones((4, 4), grid=grid)
        with pytest.raises(dm.ShapeMismatchError, match="out has shape"):
            dm.matmul(A, A, trans_b=True, out=dm.ones((4, 5), grid=grid))
        with pytest.raises(TypeError, match="dtype"):
            dm.matmul(A, A, trans_b=True, out=C.astype(np.float32))
        with pytest.raises(ValueError, match="beta"):
            dm.matmul(A, A, trans_b=True, beta=1.0)
        with pytest.raises(ValueError, match="trans_a"):
            dm.matmul(A, A, trans_a="X")
        with pytest.raises(ValueError, match="panel"):
            dm.matmul(A, A, trans_b=True, panel=0)
        with pytest.raises(TypeError):
            dm.matmul(A, np.ones((5, 2)))
        with pytest.raises(TypeError):
            A @ np.ones((5, 2))
        if comm.Get_size() > 1:
            other = dm.ProcessGrid(comm, (comm.Get_size(), 1))
            try:
                wide = dm.ProcessGrid(comm, (1, comm.Get_size()))
                try:
                    X = dm.ones((5, 5), grid=other)
                    Y = dm.ones((5, 5), grid=wide)
                    with pytest.raises(dm.GridMismatchError):
                        X @ Y
                    with pytest.raises(dm.GridMismatchError):
                        dm.matmul(X, X, out=Y)
                finally:
                    wide.free()
            finally:
                other.free()
        # the grid still works after all these errors (nothing was left in flight)
        ok = np.allclose((A @ A.T).gather(None), np.full((4, 4), 5.0))
        assert_all(comm, ok, "grid unusable after argument errors")
    finally:
        grid.free()


def test_ledger_matches_summa_model(comm):
    """Bytes received per rank equal the SUMMA model's count (no hidden transposes)."""
    grid = dm.ProcessGrid(comm)
    try:
        pr, pc = grid.shape
        n = 24 * pr * pc
        blk = (4, 4)
        A = dm.random((n, n), seed=1, grid=grid, block=blk)
        B = dm.random((n, n), seed=2, grid=grid, block=blk)
        msgs = []
        for form, (ta, tb) in [("NN", (False, False)), ("TN", (True, False)),
                               ("NT", (False, True)), ("TT", (True, True))]:
            with dm.profile(grid) as prof:
                dm.matmul(A, B, trans_a=ta, trans_b=tb, panel=8)
            got = prof.ops["matmul"].bytes_recv.sum / grid.size if "matmul" in prof.ops else 0
            want = model_bytes(form, n, n, n, grid.shape, 8)
            if abs(got - want) > 0.05 * want:
                msgs.append(f"{form}: ledger {got} model {want}")
        assert_all(comm, not msgs, "; ".join(msgs))
    finally:
        grid.free()


def test_verify_passes_good_products_and_catches_bad_ones(comm):
    grid = dm.ProcessGrid(comm)
    try:
        A = dm.random((40, 30), seed=3, grid=grid, block=(4, 4), dtype=np.complex128)
        B = dm.random((40, 20), seed=4, grid=grid, block=(4, 4), dtype=np.complex128)
        C0 = dm.random((30, 20), seed=5, grid=grid, block=(4, 4), dtype=np.complex128)
        want = 2 * A.gather(None).conj().T @ B.gather(None) + 3 * C0.gather(None)
        R = dm.matmul(A, B, trans_a="C", alpha=2.0, beta=3.0, out=C0, verify=True)
        assert_all(comm, np.allclose(R.gather(None), want), "verified product is wrong")
        # a wrong product: one entry corrupted on one rank only
        check = Freivalds(A, B, "C", "N", 1.0, 0.0, None, np.dtype(np.complex128))
        D = dm.matmul(A, B, trans_a="C")
        if D.local.size and grid.rank == grid.size - 1:
            D.local[0, 0] += 1e-6
        corrupted = comm.allreduce(int(D.local.size > 0 and grid.rank == grid.size - 1))
        if corrupted:
            with pytest.raises(dm.VerificationError, match="Freivalds"):
                check.verify(D)
        # NaN in a product is caught too
        D.local[...] = np.nan
        with pytest.raises(dm.VerificationError):
            check.verify(D)
        assert isinstance(dm.VerificationError("x"), ArithmeticError)
    finally:
        grid.free()


def test_tall_operands_use_the_chunked_gemm(comm):
    """Local dimensions over 1024 cut each panel GEMM into chunks (with progress between)."""
    grid = dm.ProcessGrid(comm)
    try:
        pr = grid.shape[0]
        gen = np.random.default_rng(12)
        bad = []
        big = 1030 * pr
        for m, n, k, ta, tb, dtype in [(big, 7, 9, "N", "N", np.float64),
                                       (5, 6, big, "T", "N", np.float32),
                                       (6, 5, big, "C", "N", np.complex128),
                                       (big, 6, 8, "N", "T", np.float64),
                                       (big, 4, 5, "N", "C", np.complex64)]:
            f = _case(grid, gen, m, n, k, ta, tb, [(64, 4), (4, 4), (64, 4)], 2.0, 3.0, dtype,
                      panel=4)
            if f:
                bad.append(f)
        assert_all(comm, not bad, "; ".join(bad[:4]))
    finally:
        grid.free()
