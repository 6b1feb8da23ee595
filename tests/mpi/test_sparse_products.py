"""Products and arithmetic of block-sparse matrices against scipy (acceptance 2 and 4)."""

import numpy as np
import pytest
import scipy.sparse as sp

import distmat as dm
from distmat.testing import assert_all, scaled_error, subgrids

pytestmark = pytest.mark.mpi


def _err(C, ref, A, X, dtype):
    if C is None:
        return np.inf
    den = max(np.linalg.norm(A.toarray(), 1) if sp.issparse(A) else np.linalg.norm(A, 1), 1)
    return scaled_error(np.linalg.norm(C - ref, 1), den, max(np.linalg.norm(X, 1), 1),
                        n=A.shape[1], dtype=dtype)


@pytest.mark.grids
def test_spmm_matches_scipy(comm):
    cases = [((37, 29), 5, 7, (5, 3), np.float64), ((24, 24), 4, 1, (4, 1), np.float64),
             ((31, 40), 6, 9, (4, 2), np.complex128), ((20, 13), 3, 16, (3, 8), np.float32),
             ((8, 50), 8, 5, (8, 5), np.float64)]
    for shape, grid in subgrids(comm, [(1, 1), (1, 2), (2, 1), (2, 2), (1, 3), (3, 1), (2, 3)]):
        worst, where = 0.0, ""
        if grid is not None:
            for t, (shp, bs, k, xblock, dt) in enumerate(cases):
                rng = np.random.default_rng(t)
                A = sp.random_array(shp, density=0.2, rng=t, format="csr", dtype=dt)
                if np.dtype(dt).kind == "c":
                    A = A + 1j * sp.random_array(shp, density=0.2, rng=t + 9, format="csr")
                A = A.astype(dt)
                X = rng.standard_normal((shp[1], k)).astype(dt)
                Y = rng.standard_normal((shp[0], k)).astype(dt)
                S = dm.sparse.from_scipy(A, blocksize=bs, grid=grid, root=None)
                Xd = dm.from_global(X, grid=grid, root=None, block=xblock)
                Yd = dm.from_global(Y, grid=grid, root=None, block=xblock)
                C = S @ Xd
                e1 = _err(C.gather(root=None), A @ X, A, X, dt)
                e2 = _err((S.T @ Yd).gather(root=None), A.T @ Y, A.T, Y, dt)
                if C.shape != (shp[0], k) or C.block != (bs, xblock[1]):
                    e1 = np.inf
                if max(e1, e2) > worst:
                    worst, where = max(e1, e2), f"grid {shape} case {t}: {e1:.2g} {e2:.2g}"
        assert_all(comm, worst < 10, where)


def test_empty_and_all_zero_products(comm):
    with dm.ProcessGrid(comm) as grid:
        Z = dm.sparse.from_scipy(sp.csr_array((17, 12)), blocksize=4, grid=grid, root=None)
        X = dm.random((12, 3), seed=1, grid=grid, block=(4, 2))
        C = (Z @ X).gather(root=None)
        A = sp.random_array((17, 12), density=0.2, rng=1, format="lil")
        A[:, :8] = 0  # only the last block column is used
        S = dm.sparse.from_scipy(A.tocsr(), blocksize=4, grid=grid, root=None)
        Xg = X.gather(root=None)
        C2 = (S @ X).gather(root=None)
        ok = np.array_equal(C, np.zeros((17, 3))) and np.allclose(C2, A @ Xg, atol=1e-14)
        assert_all(comm, ok, "zero products")


def test_arithmetic_transpose_norms(comm):
    with dm.ProcessGrid(comm) as grid:
        A = sp.random_array((26, 19), density=0.2, rng=3, format="csr")
        B = sp.random_array((26, 19), density=0.2, rng=4, format="csr")
        S = dm.sparse.from_scipy(A, blocksize=4, grid=grid, root=None)
        T = dm.sparse.from_scipy(B, blocksize=4, grid=grid, root=None)
        R = (2.0 * S - T / 4 + (-S)).gather(root=None)
        ok = np.allclose(R.toarray(), (A - B / 4).toarray(), rtol=1e-15, atol=1e-15)
        ok = ok and abs(S.T.gather(root=None) - A.T).max() == 0
        ok = ok and abs((S.T.T).gather(root=None) - A).max() == 0
        for o in ("fro", 1, np.inf):
            ok = ok and abs(dm.sparse.norm(S, o) - sp.linalg.norm(A, o)) < 1e-13
        ok = ok and dm.sparse.norm(S, "max") == abs(A).max()
        assert_all(comm, ok, "arithmetic")


def test_shape_mismatch_raises_everywhere(comm):
    with dm.ProcessGrid(comm) as grid:
        S = dm.sparse.random((12, 10), blocksize=3, density=0.5, seed=1, grid=grid)
        T = dm.sparse.random((10, 12), blocksize=3, density=0.5, seed=1, grid=grid)
        X = dm.zeros((12, 2), grid=grid)
        for fn, match in ((lambda: S @ X, "(12, 10) and (12, 2)"),
                          (lambda: S + T, "(12, 10) and (10, 12)")):
            try:
                fn()
                ok, msg = False, "no error"
            except dm.ShapeMismatchError as e:
                ok, msg = match in str(e), str(e)
            assert_all(comm, ok, msg)


def test_ledger_counts_only_nonzero_blocks(comm):
    """A 1%-dense product moves about 1% of the bytes of the same product with every block
    stored (sparse SUMMA plan, whose traffic is the stored blocks); the automatic plan never
    moves more than the cheaper of the two."""
    with dm.ProcessGrid(comm) as grid:
        n, bs = 1600, 8
        x = dm.ones((n, 2), grid=grid, block=(bs, 1))
        S1 = dm.sparse.random((n, n), blocksize=bs, density=0.01, seed=5, grid=grid)
        Sd = dm.sparse.random((n, n), blocksize=bs, density=1.0, seed=5, grid=grid)
        sent = {}
        for name, S in (("sparse", S1), ("dense", Sd)):
            for method in ("blocks", "rows", "auto"):
                with dm.profile(grid) as prof:
                    y = dm.sparse.spmm(S, x, method=method)
                op = prof.ops.get("sparse.spmm")
                sent[name, method] = op.bytes_sent.sum if op else 0.0
                ref = S.todense().gather(root=None) @ np.ones((n, 2))
                assert_all(comm, np.allclose(y.gather(root=None), ref), f"{name} {method}")
        b1, bd = sent["sparse", "blocks"], sent["dense", "blocks"]
        ok = grid.shape[1] == 1 or (bd > 0 and 0.003 * bd < b1 <= 0.02 * bd)
        for name in ("sparse", "dense"):
            ok = ok and sent[name, "auto"] <= min(sent[name, "blocks"], sent[name, "rows"]) \
                + 32 * grid.size  # the plan choice: one all-reduce of two numbers
        assert_all(comm, ok, f"bytes sent {sent}")


@pytest.mark.grids
def test_sparse_times_sparse_and_filtering(comm):
    A = sp.random_array((37, 29), density=0.15, rng=1, format="csr")
    B = sp.random_array((29, 41), density=0.15, rng=2, format="csr")
    exact = (A @ B).toarray()
    bs = 5
    for shape, grid in subgrids(comm, [(1, 1), (1, 2), (2, 1), (2, 2), (1, 3), (2, 3)]):
        ok, msg = True, ""
        if grid is not None:
            SA = dm.sparse.from_scipy(A, blocksize=bs, grid=grid, root=None)
            SB = dm.sparse.from_scipy(B, blocksize=bs, grid=grid, root=None)
            C, info = dm.sparse.matmul(SA, SB, return_info=True)
            G = C.gather(root=None).toarray()
            ok = np.allclose(G, exact, rtol=1e-14, atol=1e-14) and info["skipped"] == 0 \
                and info["flops"] == 2 * bs ** 3 * info["products"] > 0
            ok = ok and np.allclose((SA @ SB).gather(root=None).toarray(), exact, atol=1e-14)
            for eps in (0.05, 0.3, 1.0):
                Cf, fi = dm.sparse.matmul(SA, SB, filter_eps=eps, return_info=True)
                D = Cf.gather(root=None).toarray() - exact
                worst = max(np.linalg.norm(D[i:i + bs, j:j + bs]) for i in range(0, 37, bs)
                            for j in range(0, 41, bs))
                kept = Cf.gather(root=None).toarray()
                small = min([np.linalg.norm(kept[i:i + bs, j:j + bs]) for i in range(0, 37, bs)
                             for j in range(0, 41, bs)
                             if np.any(kept[i:i + bs, j:j + bs])] or [np.inf])
                if not (worst < 2 * eps and small >= eps
                        and fi["flops"] == 2 * bs ** 3 * fi["products"]
                        and fi["products"] + fi["skipped"] == info["products"]):
                    ok, msg = False, f"grid {shape} eps {eps}: worst {worst} small {small} {fi}"
            # retain_sparsity: only blocks of the pattern are formed
            P = dm.sparse.random((37, 41), blocksize=bs, density=0.3, seed=4, grid=grid)
            Cr, ri = dm.sparse.matmul(SA, SB, retain_sparsity=True, C=P, return_info=True)
            Pg = P.todense().gather(root=None) != 0
            mask = np.zeros_like(exact, dtype=bool)
            for i in range(0, 37, bs):
                for j in range(0, 41, bs):
                    mask[i:i + bs, j:j + bs] = Pg[i:i + bs, j:j + bs].any()
            ok = ok and np.allclose(Cr.gather(root=None).toarray(), exact * mask, atol=1e-14) \
                and ri["products"] < info["products"]
        assert_all(comm, ok, msg or f"spgemm on grid {shape}")


def test_spgemm_shape_mismatch(comm):
    with dm.ProcessGrid(comm) as grid:
        S = dm.sparse.random((12, 10), blocksize=3, density=0.5, seed=1, grid=grid)
        try:
            dm.sparse.matmul(S, S)
            ok, msg = False, "no error"
        except dm.ShapeMismatchError as e:
            ok, msg = "(12, 10) and (12, 10)" in str(e), str(e)
        assert_all(comm, ok, msg)


def test_spgemm_filter_with_ranks_owning_nothing(comm):
    with dm.ProcessGrid(comm) as grid:
        S = dm.sparse.eye(8, blocksize=4, grid=grid) * 2.0  # 2 stored blocks: most ranks none
        C, info = dm.sparse.matmul(S, S, filter_eps=0.5, return_info=True)
        ok = C.nnzb == 2 and info["products"] == 2 and info["dropped_blocks"] == 0 and \
            np.array_equal(C.gather(root=None).toarray(), 4 * np.eye(8))
        assert_all(comm, ok, f"{C!r} {info}")
