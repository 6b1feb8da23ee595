"""Non-negative matrix factorization (issue 7, acceptance 3).

The distributed iteration is compared with a plain numpy implementation of the same updates
started from the same factors, on grids of every shape within one run (the result must not
depend on the grid beyond rounding); "mu" must never increase the error; W and H stay
non-negative; a block-sparse A gives the result of its dense equivalent.
"""

import numpy as np
import pytest
import scipy.sparse as sp

import distmat as dm
from distmat.testing import assert_all, raises, subgrids

pytestmark = pytest.mark.mpi

GRIDS = [(1, 1), (1, 2), (2, 1), (2, 2), (1, 3), (3, 1), (1, 4)]
# relative agreement with the numpy reference after the iterations below
RTOL = {np.float64: 1e-9, np.float32: 2e-3}
# allowed rise of the squared "mu" error from one iteration to the next: the trace formula
# gives ||A - W H||^2 / ||A||^2 to a few eps of the working precision
SLACK = {np.float64: 50 * np.finfo(np.float64).eps, np.float32: 50 * np.finfo(np.float32).eps}


def ref_update(method, X, AY, G, eps):
    """The numpy reference of one factor update (rows X, A Y, Gram Y^T Y)."""
    if method == "mu":
        return X * AY / (X @ G + eps)
    X = X.copy()
    for j in range(X.shape[1]):
        if G[j, j] > 0:
            X[:, j] = np.maximum(X[:, j] + (AY[:, j] - X @ G[:, j]) / G[j, j], 0)
    return X


def ref_nmf(a, W, H, method, max_iter, tol=0.0):
    """Plain numpy NMF with the documented order (W, then H) and stopping rule."""
    eps = float(np.finfo(a.dtype).eps)
    a64 = a.astype(np.float64)
    nA = np.linalg.norm(a64)
    hist = []
    Ht = H.T.copy()
    for t in range(max_iter + 1):
        AHt, GH = a @ Ht, Ht.T @ Ht
        hist.append(np.linalg.norm(a64 - W.astype(np.float64) @ Ht.T.astype(np.float64)) / nA)
        if hist[-1] == 0 or (t > 0 and abs(hist[-2] - hist[-1]) < tol * hist[-2]):
            break
        if t == max_iter:
            break
        W = ref_update(method, W, AHt, GH, eps)
        Ht = ref_update(method, Ht, a.T @ W, W.T @ W, eps)
    return W, Ht.T, np.array(hist)


def low_rank_data(m, n, r, seed, dtype, noise=0.05):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 1, (m, r)) @ rng.uniform(0, 1, (r, n)) + noise * rng.uniform(0, 1, (m, n))
    return a.astype(dtype)


def default_init(a, k, seed, grid, dtype):
    """The documented default initial factors, built from dm.random and gathered."""
    m, n = a.shape
    s = 2.0 * np.sqrt(a.astype(np.float64).sum() / (m * n) / k)
    W0 = s * dm.random((m, k), seed=seed, grid=grid, dtype=dtype).gather(root=None)
    H0 = s * dm.random((k, n), seed=seed + 1, grid=grid, dtype=dtype).gather(root=None)
    return W0, H0


def close(x, ref, rtol):
    x, ref = np.asarray(x), np.asarray(ref)
    return x.shape == ref.shape and float(np.max(np.abs(x - ref), initial=0.0)) <= \
        rtol * max(float(np.abs(ref).max(initial=0.0)), 1e-30)


# (m, n, k, block, max_iter): awkward sizes, blocks not dividing them, a matrix smaller than
# the larger grids (ranks with empty pieces), a tall and a wide one
CASES = [(37, 23, 5, (4, 3), 30), (3, 2, 1, (1, 1), 10), (50, 9, 3, (7, 2), 25),
         (8, 41, 4, (3, 5), 25)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("method", ["mu", "hals"])
def test_nmf_same_on_every_grid_and_matches_numpy(comm, method, dtype):
    for c, (m, n, k, block, iters) in enumerate(CASES):
        a = low_rank_data(m, n, k, c, dtype)
        with dm.ProcessGrid(comm) as world:
            W0, H0 = default_init(a, k, c, world, dtype)
        Wr, Hr, hr = ref_nmf(a, W0, H0, method, iters)
        msg = ""
        ok = True
        first = None  # this rank's first grid's result: every later grid must agree with it
        for shape, grid in subgrids(comm, GRIDS):
            if grid is None:
                continue
            A = dm.from_global(a, grid=grid, block=block, root=None)
            res = dm.decomposition.nmf(A, k, method=method, max_iter=iters, tol=0.0, seed=c)
            W, H = res.W.gather(root=None), res.H.gather(root=None)
            good = (res.n_iter == iters and len(res.history) == iters + 1
                    and W.dtype == dtype and H.dtype == dtype
                    and res.W.block[0] == block[0] and res.H.block[1] == block[1]
                    and bool((W >= 0).all() and (H >= 0).all())
                    and close(W, Wr, RTOL[dtype]) and close(H, Hr, RTOL[dtype])
                    and close(res.history, hr, RTOL[dtype]))
            if first is None:
                first = (W, H)
            good = good and close(W, first[0], RTOL[dtype]) and close(H, first[1], RTOL[dtype])
            if method == "mu":
                good = good and bool((np.diff(res.history ** 2) <= SLACK[dtype]).all())
            if not good and ok:
                ok = False
                msg = (f"case {c} grid {shape}: n_iter {res.n_iter}, hist {res.history[-3:]} vs "
                       f"{hr[-3:]}, W {W[:2, :2]} vs {Wr[:2, :2]}, H {H[:2, :2]} vs "
                       f"{Hr[:2, :2]}")
        assert_all(comm, ok, msg)


def test_nmf_mu_error_falls_and_fits_low_rank(comm):
    with dm.ProcessGrid(comm) as grid:
        a = low_rank_data(60, 45, 4, 7, np.float64, noise=0.0)
        A = dm.from_global(a, grid=grid, block=(8, 8), root=None)
        res = dm.decomposition.nmf(A, 4, method="hals", max_iter=300, tol=1e-9)
        mu = dm.decomposition.nmf(A, 4, method="mu", max_iter=200, tol=0)
        W, H = res.W.gather(root=None), res.H.gather(root=None)
        direct = np.linalg.norm(a - W @ H) / np.linalg.norm(a)
        ok = (abs(direct - res.history[-1]) < 1e-8 and res.history[-1] < 1e-2
              and mu.history[-1] < 0.5 * mu.history[0]
              and bool((np.diff(mu.history ** 2) <= SLACK[np.float64]).all()))
        assert_all(comm, ok, f"hals {res.history[-1]:.3g} direct {direct:.3g}, mu "
                             f"{mu.history[0]:.3g} -> {mu.history[-1]:.3g}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nmf_sparse_equals_dense(comm, dtype):
    rng = np.random.default_rng(3)
    m, n, k = 43, 30, 4
    mask = rng.uniform(size=(11, 8)) < 0.4  # block pattern of 4 x 4 blocks
    a = (np.kron(mask, np.ones((4, 4)))[:m, :n] * rng.uniform(0, 1, (m, n))).astype(dtype)
    for shape, grid in subgrids(comm, [(1, 1), (2, 2), (1, 3), (3, 1)]):
        ok, msg = True, ""
        if grid is not None:
            S = dm.sparse.from_scipy(sp.csr_array(a), blocksize=4, grid=grid, root=None)
            D = dm.from_global(a, grid=grid, block=(3, 5), root=None)
            for method in ("mu", "hals"):
                rs = dm.decomposition.nmf(S, k, method=method, max_iter=20, tol=0, seed=2)
                rd = dm.decomposition.nmf(D, k, method=method, max_iter=20, tol=0, seed=2)
                Ws, Hs = rs.W.gather(root=None), rs.H.gather(root=None)
                Wd, Hd = rd.W.gather(root=None), rd.H.gather(root=None)
                good = (close(Ws, Wd, RTOL[dtype]) and close(Hs, Hd, RTOL[dtype])
                        and close(rs.history, rd.history, RTOL[dtype])
                        and rs.W.block[0] == 4 and rs.H.block[1] == 4)
                if not good:
                    ok, msg = False, f"grid {shape} {method}: {rs.history[-1]} {rd.history[-1]}"
        assert_all(comm, ok, msg)


def test_nmf_given_factors_and_stopping_rule(comm):
    with dm.ProcessGrid(comm) as grid:
        a = low_rank_data(29, 31, 3, 11, np.float64)
        A = dm.from_global(a, grid=grid, block=(5, 4), root=None)
        rng = np.random.default_rng(5)
        w0, h0 = rng.uniform(0, 1, (29, 3)), rng.uniform(0, 1, (3, 31))
        W0 = dm.from_global(w0, grid=grid, block=(2, 2), root=None)  # any block
        H0 = dm.from_global(h0.astype(np.float32), grid=grid, block=(3, 7), root=None)
        tol = 1e-3
        res = dm.decomposition.nmf(A, 3, method="mu", max_iter=500, tol=tol, W0=W0, H0=H0)
        Wr, Hr, hr = ref_nmf(a, w0, h0.astype(np.float32).astype(np.float64), "mu", 500, tol)
        W = res.W.gather(root=None)
        h = res.history
        ok = (res.converged and res.n_iter == len(hr) - 1 < 500
              and abs(h[-2] - h[-1]) < tol * h[-2] and close(W, Wr, 1e-9)
              and close(h, hr, 1e-9))
        zero = dm.decomposition.nmf(dm.zeros((6, 5), grid=grid), 2, max_iter=10)
        ok = ok and zero.history[0] == 0.0 and zero.n_iter == 0 and zero.converged
        none = dm.decomposition.nmf(A, 3, max_iter=0)
        ok = ok and none.n_iter == 0 and len(none.history) == 1 and not none.converged
        Wu, Hu, hu = res                                  # unpacks like a tuple
        ok = ok and Wu is res.W and Hu is res.H and hu is res.history
        assert_all(comm, ok, f"n_iter {res.n_iter} vs {len(hr) - 1}, converged {res.converged}")


def test_nmf_bad_arguments_raise_everywhere(comm):
    with dm.ProcessGrid(comm) as grid:
        a = np.abs(np.random.default_rng(1).standard_normal((9, 7)))
        A = dm.from_global(a, grid=grid, block=(2, 3), root=None)
        neg = a.copy()
        neg[8, 6] = -0.5  # on one rank only
        nan = a.copy()
        nan[0, 0] = np.nan
        cases = [
            (lambda: dm.decomposition.nmf(dm.from_global(neg, grid=grid, root=None), 2),
             ValueError, "A must be non-negative"),
            (lambda: dm.decomposition.nmf(dm.from_global(nan, grid=grid, root=None), 2),
             ValueError, "A must contain only finite"),
            (lambda: dm.decomposition.nmf(A, 0), ValueError, "k must be"),
            (lambda: dm.decomposition.nmf(A, 8), ValueError, "k must be"),
            (lambda: dm.decomposition.nmf(A, 2, method="als"), ValueError, "method"),
            (lambda: dm.decomposition.nmf(A, 2, tol=-1), ValueError, "tol"),
            (lambda: dm.decomposition.nmf(A, 2, max_iter=-1), ValueError, "max_iter"),
            (lambda: dm.decomposition.nmf(A.astype(np.complex128), 2), TypeError, "real"),
            (lambda: dm.decomposition.nmf(a, 2), TypeError, "DistMatrix"),
            (lambda: dm.decomposition.nmf(A, 2, W0=dm.ones((9, 3), grid=grid)),
             dm.ShapeMismatchError, "W0 must have shape (9, 2)"),
            (lambda: dm.decomposition.nmf(A, 2, H0=dm.ones((2, 7), grid=grid) * -1.0),
             ValueError, "H0 must be non-negative"),
        ]
        for i, (fn, exc, text) in enumerate(cases):
            err = raises(exc, fn, text)
            assert_all(comm, not err, f"case {i}: {err}")
