"""Round trips of the dense layout over awkward sizes, blocks and grids (acceptance 2 and 3).

Every rank builds the same global input from a fixed seed; expected values come from numpy.
Grids that need more ranks than the run has are left out (the sweep also runs at 6 and 8
ranks, see the Makefile).
"""

import itertools

import numpy as np
import pytest

import distmat as dm
from distmat import rng
from distmat.testing import assert_all, subgrids

pytestmark = [pytest.mark.mpi, pytest.mark.grids]

SIZES = [(1, 1), (1, 7), (7, 1), (2, 3), (5, 5), (9, 4), (13, 17), (23, 6), (31, 31), (60, 47),
         (47, 60)]
BLOCKS = [(1, 1), (2, 3), (3, 2), (4, 4), (5, 7), (7, 1), (6, 5)]


def test_random_is_the_same_on_every_grid_and_block(comm):
    ref = rng.uniform01(np.arange(1000), np.arange(777), 777, seed=5)
    for shape, grid in subgrids(comm, [(1, 1), (1, 2), (2, 1), (2, 2), (1, 3), (3, 1), (2, 3),
                                       (3, 2), (8, 1)]):
        ok, msg = True, ""
        if grid is not None:
            for block in [(1, 1), (32, 17), (1000, 777)]:
                A = dm.random((1000, 777), block=block, seed=5, grid=grid)
                G = A.gather(root=None)
                if not np.array_equal(G, ref):
                    ok, msg = False, f"grid {shape} block {block} differs"
        assert_all(comm, ok, msg)


def test_random_normal_and_complex_are_grid_independent(comm):
    outs = []
    for _shape, grid in subgrids(comm, [(1, 1), (1, 2), (2, 2), (3, 1)]):
        if grid is not None:
            A = dm.random((33, 21), "normal", seed=9, loc=1.0, scale=2.0, grid=grid, block=(4, 5))
            C = dm.random((33, 21), seed=9, dtype=np.complex64, grid=grid, block=(3, 2))
            outs.append((A.gather(None), C.gather(None)))
    ok = all(np.array_equal(a, outs[0][0]) and np.array_equal(c, outs[0][1]) for a, c in outs)
    ok = ok and all(c.dtype == np.complex64 and np.all(c.imag != 0) for _, c in outs)
    assert_all(comm, ok, "normal/complex random depends on the grid")


def _check_case(grid, a, block):
    """All foundation operations on one global array; returns a list of failures."""
    bad = []
    A = dm.from_global(a if grid.rank == 0 else None, grid=grid, block=block)
    rows, cols = A.global_indices()
    if not np.array_equal(A.local, a[np.ix_(rows, cols)]):
        bad.append("local piece")
    if A.local_shape != A.layout.local_shape(*grid.coords):
        bad.append("local_shape")
    G = A.gather(root=grid.size - 1)
    if grid.rank == grid.size - 1 and not np.array_equal(G, a):
        bad.append("gather")
    if grid.rank != grid.size - 1 and G is not None:
        bad.append("gather returned data off root")
    if not np.array_equal(A.T.gather(None), a.T):
        bad.append("transpose")
    nb = (block[1] % 5 + 1, block[0] % 4 + 2)
    R = A.redistribute(block=nb)
    if R.block != nb or not np.array_equal(R.gather(None), a):
        bad.append("redistribute")
    B = dm.from_global(a, grid=grid, block=nb, root=None)  # different block: auto-redistributed
    for name, got, want in [
        ("+", A + B, a + a), ("-", A - 2.0 * B, a - 2.0 * a), ("*", A * B, a * a),
        ("/", (A + 3.0) / (B + 3.0), (a + 3.0) / (a + 3.0)), ("neg", -A, -a),
        ("abs", abs(A - 0.5), abs(a - 0.5)), ("rsub", 1.0 - A, 1.0 - a),
        ("rdiv", 2.0 / (A + 1), 2.0 / (a + 1)),
    ]:
        if not np.allclose(got.gather(None), want, rtol=1e-6, atol=1e-6):
            bad.append(name)
    for ord_ in (None, "fro", 1, np.inf, "max"):
        want = np.abs(a).max() if ord_ == "max" else np.linalg.norm(a, ord_)
        if not np.isclose(dm.norm(A, ord_), want, rtol=1e-5):
            bad.append(f"norm {ord_}")
    return bad


def test_roundtrip_transpose_redistribute_norms_elementwise(comm):
    for shape, grid in subgrids(comm):
        bad = []
        if grid is not None:
            for (m, n), block in itertools.product(SIZES, BLOCKS):
                if (m * 7 + n + block[0]) % 3 and grid.size > 1:
                    continue  # a third of the size x block product per grid keeps this quick
                a = np.random.default_rng(m * 1000 + n).standard_normal((m, n))
                bad += [f"{shape} {(m, n)} {block}: {b}" for b in _check_case(grid, a, block)]
        assert_all(comm, not bad, "; ".join(bad[:5]))


def test_dtypes_round_trip_and_astype(comm):
    gen = np.random.default_rng(2)
    a = gen.standard_normal((11, 9)) + 1j * gen.standard_normal((11, 9))
    bad = []
    for shape, grid in subgrids(comm, [(1, 1), (2, 2), (1, 3), (2, 1)]):
        if grid is None:
            continue
        for dt in (np.float32, np.float64, np.complex64, np.complex128):
            x = a.astype(dt) if np.dtype(dt).kind == "c" else a.real.astype(dt)
            A = dm.from_global(x, grid=grid, block=(2, 3), root=None)
            if A.dtype != dt or not np.array_equal(A.gather(None), x):
                bad.append(f"{shape} {np.dtype(dt)}")
            if not np.array_equal(A.T.gather(None), x.T) or A.T.dtype != dt:
                bad.append(f"{shape} {np.dtype(dt)} T")
            if not np.array_equal(A.H.gather(None), x.conj().T):
                bad.append(f"{shape} {np.dtype(dt)} H")
        F = dm.from_global(a.real, grid=grid, root=None).astype(np.float32)
        if F.dtype != np.float32:
            bad.append("astype")
        i = dm.from_global(np.arange(6).reshape(2, 3), grid=grid, root=None)
        if i.dtype != np.float64:
            bad.append("int input should become float64")
    assert_all(comm, not bad, str(bad))


def test_constructors_match_numpy(comm):
    bad = []
    for shape, grid in subgrids(comm, [(1, 1), (1, 2), (2, 2), (3, 1)]):
        if grid is None:
            continue
        for (m, n), block in [((5, 7), (2, 3)), ((1, 9), (1, 1)), ((0, 4), (1, 2)),
                              ((3, 0), (2, 2))]:
            kw = dict(grid=grid, block=block)
            checks = [
                (dm.zeros((m, n), **kw), np.zeros((m, n))),
                (dm.ones((m, n), dtype=np.float32, **kw), np.ones((m, n), np.float32)),
                (dm.full((m, n), 2.5 + 1j, dtype=np.complex128, **kw), np.full((m, n), 2.5 + 1j)),
                (dm.eye(m, n, k=1, **kw), np.eye(m, n, k=1)),
                (dm.eye(m, n, k=-2, **kw), np.eye(m, n, k=-2)),
                (dm.from_function(lambda i, j: 1.0 / (i + j + 1), (m, n), **kw),
                 1.0 / (np.arange(m)[:, None] + np.arange(n)[None, :] + 1)),
                (dm.from_function(lambda i, j: 3.0, (m, n), **kw), np.full((m, n), 3.0)),
            ]
            for k, (A, want) in enumerate(checks):
                g = A.gather(None)
                if g.shape != want.shape or g.dtype != want.dtype or not np.array_equal(g, want):
                    bad.append(f"{shape} {(m, n)} check {k}")
    assert_all(comm, not bad, str(bad))


def test_default_grid_and_block():
    A = dm.random((130, 70), seed=1)
    assert A.grid is dm.ProcessGrid.default()
    pr, pc = A.grid.shape
    assert A.block == (min(64, -(-130 // pr)), min(64, -(-70 // pc)))
    assert np.array_equal(A.gather(None), rng.uniform01(np.arange(130), np.arange(70), 70, 1))


def test_norms_in_row_chunks(comm, monkeypatch):
    """Norms form |A| a few local rows at a time: chunk edges, NaN, integers, complex."""
    import distmat.norms as norms

    monkeypatch.setattr(norms, "ROWS", 3)
    gen = np.random.default_rng(8)
    z = gen.standard_normal((23, 17)) + 1j * gen.standard_normal((23, 17))
    nan = gen.standard_normal((23, 17))
    nan[19, 4] = np.nan
    cases = [gen.standard_normal((23, 17)).astype(np.float32), z,
             gen.integers(-9, 9, (23, 17)), nan, np.zeros((2, 5))]
    bad = []
    for shape, grid in subgrids(comm, [(1, 1), (2, 2), (3, 1), (1, 3)]):
        if grid is None:
            continue
        for a in cases:
            A = dm.from_global(a, grid=grid, block=(4, 3), root=None)
            for o, ref in ((None, np.linalg.norm(a)), (1, np.linalg.norm(a, 1)),
                           (np.inf, np.linalg.norm(a, np.inf)), ("max", np.abs(a).max())):
                got = dm.norm(A, o)
                same = (np.isnan(got) and np.isnan(ref)) or np.isclose(got, ref, rtol=1e-6)
                if not same:
                    bad.append(f"{shape} {a.dtype} ord={o}: {got} vs {ref}")
    assert_all(comm, not bad, "; ".join(bad[:5]))
