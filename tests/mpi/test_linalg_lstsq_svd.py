"""dm.linalg.lstsq (through QR / TSQR) and dm.linalg.svd (TSQR + SVD of the small R).

References are numpy.linalg.lstsq and numpy.linalg.svd in float64 (complex128) of the same
matrices.  lstsq's solution must agree to a small multiple of the perturbation bound
``eps (cond + cond^2 ||r|| / (||A|| ||x||))``; singular values to ``N eps s_max``
(``N = max(m, n)``); SVD factors meet ScaLAPACK-style ratios (threshold 5).
"""

import sys

import numpy as np
import pytest

import distmat as dm
from distmat.linalg.qr import choose_method
from distmat.testing import assert_all, scaled_error, subgrids
from distmat.testing import raises as _raises

pytestmark = pytest.mark.mpi

THRESH = 5.0

# m, n, k, block, dtype: tall-skinny (TSQR of [A B]), tall (blocked), square, wide through
# TSQR of A^H, wide through blocked QR of A^H, one-column and one-row problems
LSTSQ_CASES = [
    (40, 5, 2, (3, 2), np.float64), (120, 7, 3, (7, 7), np.float32),
    (30, 20, 2, (4, 3), np.float64), (33, 25, 1, (5, 7), np.float32),
    (17, 17, 3, (2, 2), np.float64), (6, 30, 2, (1, 4), np.float64),
    (20, 31, 2, (3, 5), np.float32), (25, 50, 3, (6, 4), np.float64),
    (9, 1, 1, (2, 1), np.float64), (1, 7, 2, (1, 3), np.float64),
    (50, 12, 4, (5, 5), np.complex128),
]


def _problem(m, n, k, dt, seed):
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1, 1, (m, n))
    b = rng.uniform(-1, 1, (m, k))
    if np.dtype(dt).kind == "c":
        a = a + 1j * rng.uniform(-1, 1, (m, n))
        b = b + 1j * rng.uniform(-1, 1, (m, k))
    return a.astype(dt), b.astype(dt)


def _lstsq_check(a, b, X, res, rank, s, dt):
    """'' if the lstsq result agrees with numpy's, else a description."""
    up = np.complex128 if np.iscomplexobj(a) else np.float64
    m, n = a.shape
    x_ref, r_ref, rk_ref, s_ref = np.linalg.lstsq(a.astype(up), b.astype(up), rcond=None)
    x = X.gather(None)
    eps = float(np.finfo(dt).eps)
    cond = s_ref[0] / s_ref[-1]
    rnorm = np.linalg.norm(b.astype(up) - a.astype(up) @ x_ref)
    bound = eps * (cond + cond ** 2 * rnorm / (s_ref[0] * np.linalg.norm(x_ref)))
    ex = np.linalg.norm(x - x_ref) / np.linalg.norm(x_ref) / bound
    es = np.abs(s - s_ref).max() / (s_ref[0] * max(m, n) * eps)
    er = 0.0
    if r_ref.size:
        er = np.abs(res - r_ref).max() / (cond * eps * np.max(np.sum(np.abs(b) ** 2, axis=0)))
    meta = (X.shape == (n, b.shape[1]) and res.shape == r_ref.shape and rank == rk_ref
            and X.dtype == dt and res.dtype == np.finfo(dt).dtype)
    if ex <= 20 and es <= 1.0 and er <= 20 and meta:
        return ""
    return (f"m={m} n={n} k={b.shape[1]} {np.dtype(dt).name}: x {ex:.3g} s {es:.3g} "
            f"residues {er:.3g} meta {meta} (rank {rank} vs {rk_ref}, {res.shape} vs "
            f"{r_ref.shape})")


@pytest.mark.grids
def test_lstsq_matches_numpy(comm):
    for shape, grid in subgrids(comm):
        bad = []
        if grid is not None:
            for m, n, k, block, dt in LSTSQ_CASES:
                a, b = _problem(m, n, k, dt, 10 * m + n)
                A = dm.from_global(a, grid=grid, block=block, root=None)
                B = dm.from_global(b, grid=grid, block=(block[0], 2), root=None)
                X, res, rank, s = dm.linalg.lstsq(A, B)
                err = _lstsq_check(a, b, X, res, rank, s, dt)
                if err or X.block != B.block:
                    bad.append(err or f"X.block {X.block}")
        assert_all(comm, not bad, f"grid {shape}: " + "; ".join(bad[:3]))


def test_lstsq_paths_and_large_tall(comm):
    """Both sides of the TSQR rule, a 20000 x 30 problem, and a promoted float32/float64 pair."""
    assert_all(comm, choose_method((40, 5)) == "tsqr" and choose_method((30, 20)) ==
               "householder" and choose_method((30, 6)) == "tsqr", "paths not exercised")
    with dm.ProcessGrid(comm) as grid:
        A = dm.random((20000, 30), seed=4, low=-1.0, grid=grid, block=(64, 16))
        B = dm.random((20000, 2), seed=5, low=-1.0, grid=grid, block=(64, 2))
        with dm.profile(grid) as prof:
            X, res, rank, s = dm.linalg.lstsq(A, B)
        err = _lstsq_check(A.gather(None), B.gather(None), X, res, rank, s, np.float64)
        assert_all(comm, not err and set(prof.ops) <= {"lstsq"}, err or sorted(prof.ops))
        a, b = _problem(25, 9, 2, np.float64, 1)
        A32 = dm.from_global(a.astype(np.float32), grid=grid, block=(4, 4), root=None)
        B64 = dm.from_global(b, grid=grid, block=(4, 1), root=None)
        X, res, rank, s = dm.linalg.lstsq(A32, B64)
        err = _lstsq_check(a.astype(np.float32).astype(np.float64), b, X, res, rank, s,
                           np.float64)
        assert_all(comm, not err, err)


def test_lstsq_many_rhs_skip_the_augmented_tsqr(comm):
    """Tall-skinny A with k > n right-hand sides: QR of A and Q^H B (SUMMA), not the TSQR of
    [A B] (2 m (n + k)^2 flops and an (n + k)^2 triangle on every rank); k <= n keeps it."""
    lst = sys.modules["distmat.linalg.lstsq"]
    orig, calls = lst._tall_tsqr, []
    lst._tall_tsqr = lambda *args: calls.append(args[1].shape) or orig(*args)
    errs = []
    try:
        with dm.ProcessGrid(comm) as grid:
            for k, dt in ((40, np.float64), (3, np.float64), (9, np.complex128)):
                a, b = _problem(60, 3, k, dt, k)
                A = dm.from_global(a, grid=grid, block=(7, 2), root=None)
                B = dm.from_global(b, grid=grid, block=(5, 4), root=None)
                X, res, rank, s = dm.linalg.lstsq(A, B)
                errs.append(_lstsq_check(a, b, X, res, rank, s, dt))
    finally:
        lst._tall_tsqr = orig
    errs = [e for e in errs if e]
    assert_all(comm, not errs and calls == [(60, 3)], f"{errs} augmented TSQR for {calls}")


def test_lstsq_rank_deficient_raises_everywhere(comm):
    for shape, grid in subgrids(comm, [(1, 1), (2, 2), (1, 3), (3, 1), (1, 2)]):
        bad = []
        if grid is not None:
            rng = np.random.default_rng(2)
            for m, n in [(40, 6), (30, 20), (6, 40), (20, 30)]:  # TSQR and blocked, both sides
                a = rng.standard_normal((m, n))
                if m >= n:
                    a[:, n - 1] = a[:, 0]
                else:
                    a[m - 1] = a[0]
                A = dm.from_global(a, grid=grid, block=(3, 4), root=None)
                B = dm.ones((m, 2), grid=grid, block=(3, 2))
                bad.append(_raises(np.linalg.LinAlgError, lambda A=A, B=B: dm.linalg.lstsq(A, B),
                                   "rank deficient"))
        bad = [x for x in bad if x]
        assert_all(comm, not bad, f"grid {shape}: " + "; ".join(bad))


def test_lstsq_argument_errors(comm):
    with dm.ProcessGrid(comm) as grid:
        A = dm.random((8, 3), seed=1, grid=grid)
        B = dm.ones((7, 2), grid=grid)
        checks = [
            _raises(dm.ShapeMismatchError, lambda: dm.linalg.lstsq(A, B), "(7, 2)", "(8, 3)"),
            _raises(TypeError, lambda: dm.linalg.lstsq(A, np.ones((8, 1))), "DistMatrix"),
            _raises(TypeError, lambda: dm.linalg.lstsq(np.ones((8, 3)), B), "DistMatrix"),
            _raises(ValueError, lambda: dm.linalg.lstsq(A, dm.ones((8, 1), grid=grid),
                                                        rcond=-1.0), "rcond"),
        ]
        try:  # numpy integers are numbers too (rcond=0: no cut-off)
            dm.linalg.lstsq(A, dm.ones((8, 1), grid=grid), rcond=np.int64(0))
        except Exception as e:  # noqa: BLE001 - decided from metadata: the same on every rank
            checks.append(f"rcond=np.int64(0): {type(e).__name__}: {e}")
        T = dm.ones((8, 1), grid=grid)
        if grid.rank == 0 and T.local.size:
            T.local[0, 0] = np.nan
        checks.append(_raises(ValueError, lambda: dm.linalg.lstsq(A, T), "b must", "infs"))
        if grid.size > 1:
            with dm.ProcessGrid(comm, (grid.size, 1) if grid.shape[0] == 1 else
                                (1, grid.size)) as other:
                C = dm.ones((8, 1), grid=other)
                checks.append(_raises(dm.GridMismatchError, lambda: dm.linalg.lstsq(A, C),
                                      "grid"))
        bad = [c for c in checks if c]
        assert_all(comm, not bad, "; ".join(bad))


# ---------------------------------------------------------------------------------- svd

SVD_CASES = [  # m, n, block, dtype
    (1, 1, (1, 1), np.float64), (7, 3, (2, 2), np.float64), (3, 7, (2, 2), np.float32),
    (30, 30, (4, 5), np.float64), (60, 9, (7, 1), np.float32), (9, 60, (1, 7), np.float64),
    (500, 20, (32, 8), np.float64), (26, 14, (3, 3), np.complex128),
]


def _same_everywhere(comm, x):
    ref = comm.bcast(np.ascontiguousarray(x).tobytes() if comm.Get_rank() == 0 else None, 0)
    return ref == np.ascontiguousarray(x).tobytes()


@pytest.mark.grids
def test_svd_matches_numpy(comm):
    for shape, grid in subgrids(comm):
        bad = []
        if grid is not None:
            for m, n, block, dt in SVD_CASES:
                a, _ = _problem(m, n, 1, dt, m * 7 + n)
                up = np.complex128 if np.iscomplexobj(a) else np.float64
                A = dm.from_global(a, grid=grid, block=block, root=None)
                U, s, Vh = dm.linalg.svd(A)
                s_only = dm.linalg.svd(A, compute_uv=False)
                tall = m >= n
                u = U.gather(None) if tall else U
                vh = Vh if tall else Vh.gather(None)
                k = min(m, n)
                big = max(m, n)
                s_ref = np.linalg.svd(a.astype(up), compute_uv=False)
                es = np.abs(s - s_ref).max() / (s_ref[0] * big * np.finfo(dt).eps)
                es2 = np.abs(s_only - s_ref).max() / (s_ref[0] * big * np.finfo(dt).eps)
                rec = scaled_error(np.linalg.norm(a.astype(up) - (u * s) @ vh, 1),
                                   np.linalg.norm(a, 1), n=big, dtype=dt)
                ou = scaled_error(np.linalg.norm(np.eye(k) - u.conj().T @ u, 1), n=big, dtype=dt)
                ov = scaled_error(np.linalg.norm(np.eye(k) - vh @ vh.conj().T, 1), n=big,
                                  dtype=dt)
                kinds = (isinstance(U, dm.DistMatrix) == tall
                         and isinstance(Vh, dm.DistMatrix) != tall
                         and u.shape == (m, k) and vh.shape == (k, n) and s.shape == (k,)
                         and s.dtype == np.finfo(dt).dtype and u.dtype == dt)
                small = vh if tall else u
                if not (es <= 1.0 and es2 <= 1.0 and rec <= THRESH and ou <= THRESH
                        and ov <= THRESH and kinds and np.all(np.diff(s) <= 0)):
                    bad.append(f"m={m} n={n} {np.dtype(dt).name}: s {es:.3g}/{es2:.3g} "
                               f"rec {rec:.3g} orth {ou:.3g} {ov:.3g} kinds {kinds}")
                if not (_same_everywhere(grid.comm, s) and _same_everywhere(grid.comm, small)):
                    bad.append(f"m={m} n={n}: s or the small factor differs between ranks")
        assert_all(comm, not bad, f"grid {shape}: " + "; ".join(bad[:3]))


def test_svd_errors(comm):
    svd_mod = sys.modules["distmat.linalg.svd"]
    with dm.ProcessGrid(comm) as grid:
        A = dm.random((12, 5), seed=1, grid=grid)
        old = svd_mod.SVD_MAX_K
        svd_mod.SVD_MAX_K = 4
        try:
            too_big = _raises(ValueError, lambda: dm.linalg.svd(A), "svds", "(12, 5)")
        finally:
            svd_mod.SVD_MAX_K = old
        checks = [
            _raises(NotImplementedError, lambda: dm.linalg.svd(A, full_matrices=True),
                    "full_matrices"),
            _raises(TypeError, lambda: dm.linalg.svd(np.ones((4, 2))), "DistMatrix"),
            too_big,
        ]
        T = A.copy()
        if grid.rank == grid.size - 1 and T.local.size:
            T.local[-1, -1] = np.inf
        checks.append(_raises(ValueError, lambda: dm.linalg.svd(T), "infs"))
        bad = [c for c in checks if c]
        assert_all(comm, not bad, "; ".join(bad))
