"""Randomized truncated SVD ``dm.linalg.svds`` (issue 7, acceptance 2).

Test matrices are ``A = U diag(s) V^H`` built in numpy with a known decaying spectrum, so the
optimal rank-k errors are known exactly: ``s[k]`` in the spectral norm and
``sqrt(sum(s[k:]^2))`` in the Frobenius norm.  The spectral error of ``U diag(s) Vh`` must be
within 1.5 times the optimum (``power_iters=2``), the singular values close to the true ones
(and never above them: they are those of ``Q^H A``), ``U`` and ``V`` orthonormal, and the
result the same on every grid.
"""

import numpy as np
import pytest
import scipy.sparse as sp

import distmat as dm
from distmat.testing import assert_all, raises, subgrids

pytestmark = pytest.mark.mpi

GRIDS = [(1, 1), (1, 2), (2, 1), (2, 2), (1, 3), (3, 1), (1, 4), (4, 1)]
# agreement of s with the true singular values, relative to s[0], after 2 power iterations
S_TOL = {np.float64: 1e-5, np.float32: 1e-4, np.complex128: 1e-5}
# agreement between grids (relative to the largest entry)
GRID_TOL = {np.float64: 1e-9, np.float32: 2e-4, np.complex128: 1e-9}


def spectrum(r, kind):
    i = np.arange(r, dtype=np.float64)
    if kind == "geometric":
        return 0.8 ** i
    if kind == "harmonic":
        return 1.0 / (1.0 + i)
    return np.where(i < 4, 1.0 / (1.0 + i), 0.1)  # a few large values, then a flat tail


def make_matrix(m, n, kind, dtype, seed):
    rng = np.random.default_rng(seed)
    r = min(m, n)
    x = rng.standard_normal((m, r))
    y = rng.standard_normal((n, r))
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal((m, r))
        y = y + 1j * rng.standard_normal((n, r))
    u, _ = np.linalg.qr(x)
    v, _ = np.linalg.qr(y)
    s = spectrum(r, kind)
    return ((u * s) @ v.conj().T).astype(dtype), s


def unit_dev(X):
    """max |X^H X - I| for a matrix with orthonormal columns."""
    return float(np.abs(X.conj().T @ X - np.eye(X.shape[1])).max(initial=0.0))


def check(a, s_true, k, U, s, Vh, dtype):
    """(ok, message) for one result gathered on every rank."""
    m, n = a.shape
    eps = float(np.finfo(dtype).eps)
    approx = (U.astype(np.complex128) * s) @ Vh.astype(np.complex128)
    err = np.linalg.norm(a - approx, 2)
    opt = s_true[k] if k < min(m, n) else 0.0
    floor = 50 * eps * max(m, n) * s_true[0]
    problems = []
    if not err <= 1.5 * opt + floor:
        problems.append(f"spectral error {err:.4g} vs optimal {opt:.4g}")
    if s.shape != (k,) or s.dtype != np.finfo(dtype).dtype or np.any(np.diff(s) > 0):
        problems.append(f"s {s} not descending / wrong shape or dtype")
    elif not np.abs(s - s_true[:k]).max() <= S_TOL[dtype] * s_true[0]:
        problems.append(f"s {s} vs {s_true[:k]}")
    elif not np.all(s <= s_true[:k] * (1 + 10 * eps) + floor):
        problems.append(f"s {s} above the true values {s_true[:k]}")
    tol = 20 * eps * max(m, n)
    if not (unit_dev(U) <= tol and unit_dev(Vh.conj().T) <= tol):
        problems.append(f"not orthonormal: {unit_dev(U):.3g} {unit_dev(Vh.conj().T):.3g}")
    top = U[np.argmax(np.abs(U), axis=0), np.arange(U.shape[1])] if U.size else np.ones(1)
    if not (np.all(np.real(top) > 0) and np.all(np.abs(np.imag(top)) <= 10 * eps)):
        problems.append(f"largest entries of U's columns not real positive: {top}")
    if U.shape != (m, k) or Vh.shape != (k, n) or U.dtype != dtype or Vh.dtype != dtype:
        problems.append(f"shapes {U.shape} {Vh.shape} dtypes {U.dtype} {Vh.dtype}")
    return not problems, "; ".join(problems)


def close(x, ref, rtol):
    return x.shape == ref.shape and float(np.abs(x - ref).max(initial=0.0)) <= \
        rtol * max(float(np.abs(ref).max(initial=0.0)), 1e-30)


# (m, n, k, block, spectrum): tall, wide, square with k = min(m, n), a matrix smaller than
# the grid, blocks that do not divide the sizes
CASES = [(70, 31, 5, (8, 3), "geometric"), (23, 64, 4, (5, 7), "harmonic"),
         (24, 24, 24, (5, 5), "geometric"), (3, 5, 2, (1, 2), "geometric"),
         (90, 40, 3, (16, 16), "flat tail")]


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128])
def test_svds_near_optimal_and_same_on_every_grid(comm, dtype):
    grids = GRIDS if dtype == np.float64 else GRIDS[:4]
    for c, (m, n, k, block, kind) in enumerate(CASES):
        a, s_true = make_matrix(m, n, kind, dtype, c)
        ok, msg, first = True, "", None
        for shape, grid in subgrids(comm, grids):
            if grid is None:
                continue
            A = dm.from_global(a, grid=grid, block=block, root=None)
            U, s, Vh = dm.linalg.svds(A, k, seed=c)
            good = U.block[0] == block[0] and Vh.block[1] == block[1]
            Ug, Vg = U.gather(root=None), Vh.gather(root=None)
            good_c, why = check(a, s_true, k, Ug, s, Vg, dtype)
            if first is None:
                first = (Ug, s, Vg)
            same = (close(Ug, first[0], GRID_TOL[dtype]) and close(s, first[1], GRID_TOL[dtype])
                    and close(Vg, first[2], GRID_TOL[dtype]))
            if not (good and good_c and same) and ok:
                ok, msg = False, f"case {c} grid {shape}: {why} blocks {U.block} {Vh.block} " \
                                 f"same-as-first {same}"
        assert_all(comm, ok, msg)


def numpy_svds(a, k, omega, q):
    """The documented algorithm in plain numpy, with the same sketch and sign convention."""
    Y = a @ omega
    for _ in range(q):
        Qz, _ = np.linalg.qr(a.conj().T @ np.linalg.qr(Y)[0])
        Y = a @ Qz
    Q, _ = np.linalg.qr(Y)
    ub, s, vh = np.linalg.svd(Q.conj().T @ a, full_matrices=False)
    U, Vh = Q @ ub[:, :k], vh[:k]
    top = U[np.argmax(np.abs(U), axis=0), np.arange(k)]
    c = np.conj(top) / np.abs(top)
    return U * c, s[:k], Vh * np.conj(c)[:, None]


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_svds_is_the_documented_algorithm(comm, dtype):
    """Same sketch (dm.random), same steps: the result of plain numpy, on a slow spectrum
    where a different sketch or step would show."""
    m, n, k, over, q = 40, 33, 4, 3, 1
    a, _ = make_matrix(m, n, "harmonic", dtype, 21)
    with dm.ProcessGrid(comm) as grid:
        omega = dm.random((n, k + over), "normal", seed=7, dtype=dtype, grid=grid)
        Ur, sr, Vr = numpy_svds(a, k, omega.gather(root=None), q)
        A = dm.from_global(a, grid=grid, block=(3, 4), root=None)
        U, s, Vh = dm.linalg.svds(A, k, oversample=over, power_iters=q, seed=7)
        Ug, Vg = U.gather(root=None), Vh.gather(root=None)
        ok = close(Ug, Ur, 1e-9) and close(s, sr, 1e-12) and close(Vg, Vr, 1e-9)
        assert_all(comm, ok, f"s {s} vs {sr}; U diff {np.abs(Ug - Ur).max():.3g}")


def test_svds_sparse_equals_dense(comm):
    rng = np.random.default_rng(4)
    mask = rng.uniform(size=(10, 7)) < 0.5
    a = np.kron(mask, np.ones((4, 4)))[:38, :27] * rng.standard_normal((38, 27))
    s_true = np.linalg.svd(a, compute_uv=False)
    for shape, grid in subgrids(comm, [(1, 1), (2, 2), (1, 3), (3, 1)]):
        ok, msg = True, ""
        if grid is not None:
            S = dm.sparse.from_scipy(sp.csr_array(a), blocksize=4, grid=grid, root=None)
            D = dm.from_global(a, grid=grid, block=(4, 4), root=None)
            Us, ss, Vs = dm.linalg.svds(S, 4, oversample=8, power_iters=3, seed=1)
            Ud, sd, Vd = dm.linalg.svds(D, 4, oversample=8, power_iters=3, seed=1)
            Usg, Vsg = Us.gather(root=None), Vs.gather(root=None)
            ok = (close(Usg, Ud.gather(root=None), 1e-9) and close(ss, sd, 1e-12)
                  and close(Vsg, Vd.gather(root=None), 1e-9)
                  and np.abs(ss - s_true[:4]).max() <= 1e-3 * s_true[0]
                  and unit_dev(Usg) < 1e-13 and unit_dev(Vsg.T) < 1e-13)
            msg = f"grid {shape}: {ss} vs {sd} vs {s_true[:4]}"
        assert_all(comm, ok, msg)


def test_svds_without_power_iterations_or_oversampling(comm):
    with dm.ProcessGrid(comm) as grid:
        a, s_true = make_matrix(50, 36, "harmonic", np.float64, 9)
        A = dm.from_global(a, grid=grid, block=(6, 6), root=None)
        ok, msg = True, ""
        for over, q in ((0, 0), (0, 2), (10, 0), (40, 1)):  # 40: l capped at min(m, n)
            U, s, Vh = dm.linalg.svds(A, 6, oversample=over, power_iters=q, seed=3)
            Ug, Vg = U.gather(root=None), Vh.gather(root=None)
            err = np.linalg.norm(a - (Ug * s) @ Vg, 2)
            good = (np.all(s <= s_true[:6] * (1 + 1e-12)) and np.all(np.diff(s) <= 0)
                    and unit_dev(Ug) < 1e-13 and unit_dev(Vg.T) < 1e-13
                    and err <= 3.0 * s_true[6])  # loose: no power iteration
            if over == 40:  # the sketch spans the whole row space: exact
                good = good and np.abs(s - s_true[:6]).max() < 1e-13
            if not good:
                ok, msg = False, f"oversample {over} power_iters {q}: err {err / s_true[6]:.3g}"
        zero = dm.zeros((9, 7), grid=grid)
        U, s, Vh = dm.linalg.svds(zero, 2)
        ok = ok and np.array_equal(s, np.zeros(2))
        assert_all(comm, ok, msg)


def test_svds_bad_arguments_raise_everywhere(comm):
    with dm.ProcessGrid(comm) as grid:
        A = dm.random((9, 7), seed=1, grid=grid)
        bad = A.gather(root=None)
        bad[8, 6] = np.inf  # on one rank only
        Inf = dm.from_global(bad, grid=grid, block=(2, 2), root=None)
        bad[8, 6], bad[0, 0] = 1.0, np.nan
        NaN = dm.from_global(bad, grid=grid, block=(2, 2), root=None)
        cases = [
            (lambda: dm.linalg.svds(Inf, 2), ValueError, "A must contain only finite"),
            (lambda: dm.linalg.svds(NaN, 2), ValueError, "A must contain only finite"),
            (lambda: dm.linalg.svds(A, 0), ValueError, "k must be an integer in 1..7"),
            (lambda: dm.linalg.svds(A, 8), ValueError, "k must be an integer in 1..7"),
            (lambda: dm.linalg.svds(A, 2.0), ValueError, "k must be"),
            (lambda: dm.linalg.svds(A, 2, oversample=-1), ValueError, "oversample"),
            (lambda: dm.linalg.svds(A, 2, power_iters=-1), ValueError, "power_iters"),
            (lambda: dm.linalg.svds(A, 2, seed=-3), ValueError, "seed"),
            (lambda: dm.linalg.svds(np.ones((4, 4)), 2), TypeError, "DistMatrix"),
        ]
        for i, (fn, exc, text) in enumerate(cases):
            err = raises(exc, fn, text)
            assert_all(comm, not err, f"case {i}: {err}")
