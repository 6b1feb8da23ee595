"""Block-sparse storage: round trips through scipy and dense, constructors (acceptance 1)."""

import numpy as np
import pytest
import scipy.sparse as sp

import distmat as dm
from distmat.testing import assert_all, subgrids

pytestmark = pytest.mark.mpi

SHAPES_BS = [((23, 17), 4), ((16, 16), 4), ((9, 30), 7), ((5, 3), 5), ((40, 12), 3)]


def _matrix(shape, seed, kind="random"):
    m, n = shape
    if kind == "zero":
        return sp.csr_array((m, n))
    if kind == "full":
        return sp.csr_array(np.random.default_rng(seed).standard_normal((m, n)))
    if kind == "emptyrows":
        A = sp.random_array((m, n), density=0.3, rng=seed, format="lil")
        A[: m // 2] = 0  # leading block rows empty
        return A.tocsr()
    return sp.random_array((m, n), density=0.15, rng=seed, format="csr")


def _equal(A, B):
    return A is not None and B is not None and A.shape == B.shape and \
        (abs(A - B)).max() == 0 if A.nnz or B.nnz else A.shape == B.shape


@pytest.mark.grids
def test_round_trips_all_formats(comm):
    for shape, grid in subgrids(comm, [(1, 1), (1, 2), (2, 1), (2, 2), (1, 3), (3, 1), (2, 3)]):
        ok, msg = True, ""
        if grid is not None:
            for t, (shp, bs) in enumerate(SHAPES_BS):
                for kind in ("random", "zero", "full", "emptyrows"):
                    A = _matrix(shp, t, kind)
                    for f, fmt_in in enumerate(("csr", "csc", "coo", "bsr", "dense")):
                        src = A.toarray() if fmt_in == "dense" else A.asformat(fmt_in)
                        # csr goes both ways (root 0 and None) to every format; the others
                        # alternate the root and come back as csr
                        for root in ((0, None) if fmt_in == "csr" else ((0, None)[f % 2],)):
                            S = dm.sparse.from_scipy(src if root is None or grid.rank == 0
                                                     else None, blocksize=bs, grid=grid,
                                                     root=root)
                            outs = ("csr", "csc", "coo", "bsr") if fmt_in == "csr" else ("csr",)
                            for fmt in outs:
                                B = S.gather(root=None, format=fmt)
                                good = B.format == fmt and B.shape == A.shape and \
                                    abs(B - A).max() == 0 if A.nnz else B.count_nonzero() == 0
                                if not good:
                                    ok, msg = False, f"{shape} {shp} bs={bs} {kind} {fmt_in}->{fmt}"
                            if fmt_in == "csr" and root == 0:
                                D = S.todense().gather(root=0)
                                if grid.rank == 0 and not np.array_equal(D, A.toarray()):
                                    ok, msg = False, f"todense {shape} {shp} {kind}"
        assert_all(comm, ok, msg)


def test_gather_to_root_only_and_metadata(comm):
    with dm.ProcessGrid(comm) as grid:
        A = _matrix((30, 22), 5)
        S = dm.sparse.from_scipy(A if grid.rank == 0 else None, blocksize=4, grid=grid)
        B = S.gather(root=grid.size - 1, format="coo")
        mine = B is not None if grid.rank == grid.size - 1 else B is None
        coo = A.tocoo()
        nnzb = len(set(zip((coo.row // 4).tolist(), (coo.col // 4).tolist(), strict=True)))
        ok = mine and S.nnzb == nnzb and S.shape == (30, 22) and S.blocksize == (4, 4) and \
            abs(S.density - nnzb / (8 * 6)) < 1e-12 and S.data.shape[1:] == (4, 4)
        total = comm.allreduce(S.local_nnzb)
        assert_all(comm, ok and total == nnzb, f"{S!r}")


def test_from_dense_threshold_and_padding(comm):
    with dm.ProcessGrid(comm) as grid:
        rng = np.random.default_rng(3)
        G = rng.standard_normal((19, 26))
        G[:8, :] *= 1e-3  # two block rows of tiny blocks
        A = dm.from_global(G, grid=grid, root=None, block=(4, 4))
        S = dm.sparse.from_dense(A, threshold=0.1)
        B = S.gather(root=None).toarray()
        keep = np.zeros_like(G)
        for i in range(0, 19, 4):
            for j in range(0, 26, 4):
                blk = G[i:i + 4, j:j + 4]
                if np.linalg.norm(blk) > 0.1:
                    keep[i:i + 4, j:j + 4] = blk
        S0 = dm.sparse.from_dense(A)
        ok = np.array_equal(B, keep) and np.array_equal(S0.gather(root=None).toarray(), G)
        # a different dense block is redistributed first
        A2 = dm.from_global(G, grid=grid, root=None, block=(3, 5))
        S2 = dm.sparse.from_dense(A2, blocksize=6)
        ok = ok and np.array_equal(S2.gather(root=None).toarray(), G)
        # padding of edge blocks is zero
        ok = ok and not np.any(S2.data[np.isnan(S2.data)]) and S2.bs == 6
        assert_all(comm, ok, "from_dense")


@pytest.mark.grids
def test_random_is_grid_independent(comm):
    ref = None
    for shape, grid in subgrids(comm, [(1, 1), (2, 2), (1, 3), (3, 1), (2, 3)]):
        ok = True
        if grid is not None:
            S = dm.sparse.random((50, 37), blocksize=6, density=0.3, seed=11, grid=grid,
                                 dtype=np.complex128)
            G = S.gather(root=None).toarray()
            if ref is None:
                ref = G
            ok = np.array_equal(G, ref) and S.nnzb == int(np.count_nonzero(
                [np.any(G[i:i + 6, j:j + 6]) for i in range(0, 50, 6) for j in range(0, 37, 6)]))
        assert_all(comm, ok, f"random differs on grid {shape}")


def test_eye_generators_and_from_coo(comm):
    with dm.ProcessGrid(comm) as grid:
        ok = abs(dm.sparse.eye(11, blocksize=3, grid=grid).gather(root=None)
                 - sp.eye_array(11)).max() == 0
        ok = ok and abs(dm.sparse.eye(7, 10, blocksize=4, grid=grid).gather(root=None)
                        - sp.eye_array(7, 10)).max() == 0
        T = lambda k: sp.diags_array([-np.ones(k - 1), 2 * np.ones(k), -np.ones(k - 1)],  # noqa: E731
                                     offsets=[-1, 0, 1])
        P2 = sp.kronsum(T(5), T(6))  # x (5 points) fastest
        G2 = dm.sparse.poisson2d(5, 6, blocksize=4, grid=grid).gather(root=None)
        ok = ok and abs(G2 - P2).max() == 0
        P3 = sp.kronsum(sp.kronsum(T(3), T(4)), T(2))
        G3 = dm.sparse.poisson3d(3, 4, 2, blocksize=5, grid=grid).gather(root=None)
        ok = ok and abs(G3 - P3).max() == 0
        Bo = dm.sparse.block_operator(4, 3, ncomp=3, grid=grid, seed=2)
        from distmat.sparse.generators import spd_block
        ok = ok and abs(Bo.gather(root=None) - sp.kron(sp.kronsum(T(4), T(3)),
                                                       spd_block(3, 2))).max() < 1e-14
        # from_coo: every rank passes a slice with duplicates and foreign entries
        rng = np.random.default_rng(7)
        r = rng.integers(0, 33, 400)
        c = rng.integers(0, 21, 400)
        v = rng.standard_normal(400)
        lo, hi = 400 * grid.rank // grid.size, 400 * (grid.rank + 1) // grid.size
        S = dm.sparse.from_coo(np.r_[r[lo:hi], r[lo:hi]], np.r_[c[lo:hi], c[lo:hi]],
                               np.r_[v[lo:hi], v[lo:hi]], (33, 21), blocksize=4, grid=grid)
        ref = sp.coo_array((2 * v, (r, c)), shape=(33, 21)).toarray()
        ok = ok and np.allclose(S.gather(root=None).toarray(), ref, rtol=1e-15, atol=1e-15)
        assert_all(comm, ok, "constructors")


def test_bad_input_raises_everywhere(comm):
    def raises(exc, fn, match):
        try:
            fn()
            return False, "no error"
        except exc as e:
            return match in str(e), str(e)
        except Exception as e:  # noqa: BLE001
            return False, f"{type(e).__name__}: {e}"

    with dm.ProcessGrid(comm) as grid:
        A = sp.random_array((10, 8), density=0.3, rng=0, format="csr")
        for bs, match in ((0, "blocksize"), (2.5, "blocksize"), (11, "larger than both"),
                          ((2, 3), "square")):
            ok, msg = raises(ValueError, lambda bs=bs: dm.sparse.from_scipy(
                A if grid.rank == 0 else None, blocksize=bs, grid=grid), match)
            assert_all(comm, ok, msg)
            ok, msg = raises(ValueError, lambda bs=bs: dm.sparse.random(
                (10, 8), blocksize=bs, grid=grid), match)
            assert_all(comm, ok, msg)
        ok, msg = raises(ValueError, lambda: dm.sparse.from_coo(
            [0] if grid.rank == grid.size - 1 else [0, 1], [0, 1], [1.0, 2.0], (4, 4), blocksize=2,
            grid=grid), "same length")
        assert_all(comm, ok, msg)
        ok, msg = raises(ValueError, lambda: dm.sparse.from_coo(
            [9] if grid.rank == grid.size - 1 else [], [0] if grid.rank == grid.size - 1
            else [], [1.0] if grid.rank == grid.size - 1 else [], (4, 4), blocksize=2,
            grid=grid), "out of range")
        assert_all(comm, ok, msg)
