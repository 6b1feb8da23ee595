"""Cholesky (cholesky, cho_factor, cho_solve, solve(assume_a="pos")) and solve_triangular.

ScaLAPACK's thresholds: Cholesky factorization ||A - L L^T|| / (||A|| n eps) <= 3 and solve
||A X - B|| / (||A|| ||X|| n eps) <= 3; triangular solve ||T X - B|| / (||T|| ||X|| n eps) <= 1.
"""

from functools import partial

import numpy as np
import pytest
import scipy.linalg as sla
from linalg_cases import inf, sample_cases, trsm_path

import distmat as dm
from distmat.testing import assert_all, scaled_error, subgrids
from distmat.testing import raises as _raises

pytestmark = pytest.mark.mpi

SIZES = [1, 2, 4, 7, 12, 19, 30, 44, 60]
BLOCKS = [(1, 1), (2, 3), (3, 2), (4, 4), (5, 7), (7, 1), (6, 5)]
PANELS = [1, 2, 3, 5, 8, 16, None]
NRHS = [1, 3, 8, 17, 30]


def _cases(shape, count, salt):
    return sample_cases(shape, count, SIZES, BLOCKS, PANELS, NRHS, salt)


def spd(n, dt, seed):
    rng = np.random.default_rng(seed)
    g = rng.uniform(-1, 1, (n, n))
    return (g @ g.T / n + np.eye(n)).astype(dt)


@pytest.mark.grids
def test_cholesky_and_solve_sweep(comm):
    for shape, grid in subgrids(comm):
        bad = []
        if grid is not None:
            for i, (n, block, panel, nrhs, dt) in enumerate(_cases(shape, 16, 0)):
                a = spd(n, dt, n)
                b = np.random.default_rng(nrhs).uniform(-1, 1, (n, nrhs)).astype(dt)
                lower = bool(i % 2)
                # only the triangle that is read holds the matrix; the other holds garbage
                stored = np.tril(a) if lower else np.triu(a)
                stored = stored + (np.triu(np.full_like(a, 7.0), 1) if lower
                                   else np.tril(np.full_like(a, 7.0), -1))
                A = dm.from_global(stored, grid=grid, block=block, root=None)
                B = dm.from_global(b, grid=grid, block=(block[0] % 3 + 1, 2), root=None)
                f = dm.linalg.cho_factor(A, lower=lower, panel=panel)
                c = f.c.gather(None)
                L = c if lower else c.T
                r_fac = scaled_error(inf(a.astype(np.float64) - L.astype(np.float64) @ L.T),
                                     inf(a), n=n, dtype=dt)
                with trsm_path(i % 4 < 2):
                    x = dm.linalg.cho_solve(f, B).gather(None)
                r_sol = scaled_error(inf(a.astype(np.float64) @ x - b), inf(a), inf(x), n=n,
                                     dtype=dt)
                x2 = dm.linalg.solve(A, B, assume_a="pos", lower=lower, panel=panel).gather(None)
                r_sol2 = scaled_error(inf(a.astype(np.float64) @ x2 - b), inf(a), inf(x2), n=n,
                                      dtype=dt)
                tri_ok = np.array_equal(c, np.tril(c) if lower else np.triu(c))
                if not (r_fac <= 3.0 and r_sol <= 3.0 and r_sol2 <= 3.0 and tri_ok
                        and x.dtype == dt and x2.dtype == dt):
                    bad.append(f"n={n} block={block} panel={panel} nrhs={nrhs} lower={lower} "
                               f"{dt.__name__}: factor {r_fac:.3g} solve {r_sol:.3g} "
                               f"triangular {tri_ok}")
        assert_all(comm, not bad, f"grid {shape}: " + "; ".join(bad[:3]))


def test_cholesky_matches_scipy_and_larger_case(comm):
    with dm.ProcessGrid(comm) as grid:
        bad = []
        a = spd(300, np.float64, 5)
        A = dm.from_global(a, grid=grid, block=(16, 24), root=None)
        for lower in (True, False):
            c = dm.linalg.cholesky(A, lower=lower).gather(None)
            if not np.allclose(c, sla.cholesky(a, lower=lower), atol=1e-12):
                bad.append(f"cholesky(lower={lower}) differs from scipy")
        b = np.ones((300, 2))
        x = dm.linalg.solve(A, dm.from_global(b, grid=grid, root=None), assume_a="pos")
        x = x.gather(None)
        if not scaled_error(inf(a @ x - b), inf(a), inf(x), n=300, dtype=np.float64) <= 3.0:
            bad.append("solve(assume_a='pos') n=300")
        for n, dt, block in [(1000, np.float64, (64, 64)), (1000, np.float32, (48, 32))]:
            a = spd(n, dt, n)
            b = np.random.default_rng(n).uniform(-1, 1, (n, 3)).astype(dt)
            A = dm.from_global(a, grid=grid, block=block, root=None)
            c = dm.linalg.cholesky(A, lower=True).gather(None)
            x = dm.linalg.solve(A, dm.from_global(b, grid=grid, root=None),
                                assume_a="pos").gather(None)
            r_fac = scaled_error(inf(a - c @ c.T), inf(a), n=n, dtype=dt)
            r_sol = scaled_error(inf(a @ x - b), inf(a), inf(x), n=n, dtype=dt)
            if not (r_fac <= 3.0 and r_sol <= 3.0):
                bad.append(f"n={n} {np.dtype(dt).name}: factor {r_fac:.3g} solve {r_sol:.3g}")
        assert_all(comm, not bad, "; ".join(bad))


def test_not_positive_definite_raises_on_every_rank(comm):
    for shape, grid in subgrids(comm, [(1, 1), (2, 2), (1, 3), (3, 1), (2, 1)]):
        bad = []
        if grid is not None:
            for k, block, panel in [(0, (2, 2), 3), (5, (3, 2), 4), (18, (4, 4), None),
                                    (24, (5, 3), 8)]:
                a = spd(25, np.float64, k)
                a[k, k] = -1.0  # the leading minor of order k + 1 is the first to fail
                A = dm.from_global(a, grid=grid, block=block, root=None)
                for lower in (True, False):
                    bad.append(_raises(np.linalg.LinAlgError,
                                       lambda A=A, p=panel, lo=lower:
                                       dm.linalg.cholesky(A, lower=lo, panel=p),
                                       f"order {k + 1}", "positive definite"))
                B = dm.ones((25, 1), grid=grid)
                bad.append(_raises(np.linalg.LinAlgError,
                                   lambda A=A, B=B: dm.linalg.solve(A, B, assume_a="pos"),
                                   f"order {k + 1}"))
            N = dm.from_global(np.full((4, 4), np.nan), grid=grid, root=None)
            bad.append(_raises(ValueError, partial(dm.linalg.cholesky, N), "infs"))
            bad.append(_raises(ValueError, partial(dm.linalg.cholesky, dm.ones((3, 4), grid=grid)),
                               "(3, 4)"))
        bad = [b for b in bad if b]
        assert_all(comm, not bad, f"grid {shape}: " + "; ".join(bad))


@pytest.mark.grids
def test_solve_triangular_sweep(comm):
    for shape, grid in subgrids(comm):
        bad = []
        if grid is not None:
            for i, (n, block, panel, nrhs, dt) in enumerate(_cases(shape, 16, 1)):
                rng = np.random.default_rng(i)
                lower, trans, unit = bool(i % 2), (0, 1, "T", "N")[i % 4], i % 3 == 0
                t = rng.uniform(-1, 1, (n, n)) + 4 * np.eye(n)  # well conditioned
                t = t.astype(dt)
                b = rng.uniform(-1, 1, (n, nrhs)).astype(dt)
                T = dm.from_global(t, grid=grid, block=block, root=None)
                B = dm.from_global(b, grid=grid, block=(block[1], 4), root=None)
                with trsm_path(i % 5 < 3):
                    X = dm.linalg.solve_triangular(T, B, lower=lower, trans=trans,
                                                   unit_diagonal=unit, panel=panel)
                x = X.gather(None)
                tt = np.tril(t) if lower else np.triu(t)
                if unit:
                    np.fill_diagonal(tt, 1.0)
                op = tt.T if trans in (1, "T") else tt
                r = scaled_error(inf(op.astype(np.float64) @ x - b), inf(tt), inf(x), n=n,
                                 dtype=dt)
                if not (r <= 1.0 and X.block == B.block and x.dtype == dt):
                    bad.append(f"n={n} block={block} panel={panel} lower={lower} "
                               f"trans={trans} unit={unit} {dt.__name__}: {r:.3g}")
        assert_all(comm, not bad, f"grid {shape}: " + "; ".join(bad[:3]))


def test_solve_triangular_errors(comm):
    for shape, grid in subgrids(comm, [(1, 1), (2, 2), (3, 1), (1, 2)]):
        bad = []
        if grid is not None:
            t = np.triu(np.ones((20, 20)))
            t[13, 13] = 0.0
            T = dm.from_global(t, grid=grid, block=(3, 4), root=None)
            B = dm.ones((20, 3), grid=grid, block=(4, 2))
            for replicated in (True, False):
                with trsm_path(replicated):
                    bad.append(_raises(dm.SingularMatrixError,
                                       partial(dm.linalg.solve_triangular, T, B, panel=5),
                                       "(13, 13)"))
            x = dm.linalg.solve_triangular(T, B, unit_diagonal=True, panel=5).gather(None)
            tu = t.copy()
            np.fill_diagonal(tu, 1.0)
            if not np.allclose(tu @ x, 1.0):
                bad.append("unit_diagonal must not read the zero diagonal")
            bad.append(_raises(ValueError, partial(dm.linalg.solve_triangular, T,
                                                   dm.ones((19, 3), grid=grid)), "(19, 3)"))
            bad.append(_raises(ValueError, partial(dm.linalg.solve_triangular, T, B, trans=5),
                               "trans"))
        bad = [b for b in bad if b]
        assert_all(comm, not bad, f"grid {shape}: " + "; ".join(bad))


def test_row_grid_lookahead(comm):
    """1 x P grids with blocks >= 32 (or panels dividing the block) take the look-ahead path."""
    for shape, grid in subgrids(comm, [(1, 2), (1, 3), (1, 4)]):
        bad = []
        if grid is not None:
            # the last two run enough steps and local columns for the two-panel lazy update
            # and the split GEMMs of the trailing update
            for n, block, panel, dt in [(100, (32, 32), None, np.float64),
                                        (97, (7, 48), 16, np.float64),
                                        (130, (40, 40), None, np.float64),
                                        (33, (3, 32), 1, np.float64),
                                        (300, (32, 32), 8, np.float32),
                                        (170, (40, 40), 10, np.complex128)]:
                a = spd(n, np.float64, n).astype(dt)
                if dt == np.complex128:   # Hermitian positive definite
                    h = np.random.default_rng(n).uniform(-1, 1, (n, n)) / n
                    a = a + 1j * (h - h.T)
                A = dm.from_global(a, grid=grid, block=block, root=None)
                for lower in (True, False):
                    c = dm.linalg.cholesky(A, lower=lower, panel=panel).gather(None)
                    L = c if lower else c.conj().T
                    r = scaled_error(inf(a - L @ L.conj().T), inf(a), n=n, dtype=dt)
                    if not (r <= 3.0 and np.array_equal(c, np.tril(c) if lower else np.triu(c))):
                        bad.append(f"n={n} block={block} panel={panel} {np.dtype(dt).name} "
                                   f"lower={lower}: {r:.3g}")
            a = spd(96, np.float64, 1)
            a[70, 70] = -1.0
            A = dm.from_global(a, grid=grid, block=(32, 32), root=None)
            bad.append(_raises(np.linalg.LinAlgError, partial(dm.linalg.cholesky, A), "order 71"))
        bad = [b for b in bad if b]
        assert_all(comm, not bad, f"grid {shape}: " + "; ".join(bad))


def test_two_rank_fold(comm):
    """On 1 x 2 grids the factor comes from the folded layout (cholesky_fold), for lower and
    upper: odd and even sizes, partial last blocks, real and complex, garbage in the triangle
    not read, and a not-positive-definite block of either class, found on both ranks."""
    for shape, grid in subgrids(comm, [(1, 2)]):
        bad = []
        if grid is not None:
            for n, nb, dt in [(33, 32, np.float64), (64, 32, np.float32), (65, 32, np.complex128),
                              (97, 32, np.float64), (130, 40, np.complex64),
                              (257, 64, np.float64), (300, 32, np.float64)]:
                a = spd(n, np.float64, n).astype(dt)
                if np.dtype(dt).kind == "c":   # Hermitian positive definite
                    h = np.random.default_rng(n).uniform(-1, 1, (n, n)) / n
                    a = (a + 1j * (h - h.T)).astype(dt)
                junk = np.full((n, n), 7.0, dtype=dt)
                for lower in (True, False):
                    stored = (np.tril(a) + np.triu(junk, 1) if lower
                              else np.triu(a) + np.tril(junk, -1))
                    A = dm.from_global(stored, grid=grid, block=(nb, nb), root=None)
                    assert dm.linalg.cholesky_fold.applies(A, nb)
                    f = dm.linalg.cho_factor(A, lower=lower)
                    c = f.c.gather(None)
                    L = c if lower else c.conj().T
                    r = scaled_error(inf(a - L @ L.conj().T), inf(a), n=n, dtype=dt)
                    b = np.random.default_rng(1).uniform(-1, 1, (n, 3)).astype(dt)
                    x = f.solve(dm.from_global(b, grid=grid, block=(nb, 2), root=None)).gather(None)
                    rs = scaled_error(inf(a @ x - b), inf(a) * inf(x), n=n, dtype=dt)
                    tri = np.array_equal(c, np.tril(c) if lower else np.triu(c))
                    same = np.array_equal(A.gather(None), stored)
                    if not (r <= 3.0 and rs <= 3.0 and tri and same):
                        bad.append(f"n={n} nb={nb} {np.dtype(dt).name} lower={lower}: factor "
                                   f"{r:.3g} solve {rs:.3g} triangular {tri} input kept {same}")
            for k in (0, 20, 40, 70, 99):   # blocks 0 (even), 1 (odd), 2 and 3, the last entry
                a = spd(100, np.float64, k)
                a[k, k] = -1.0
                A = dm.from_global(a, grid=grid, block=(32, 32), root=None)
                for lower in (True, False):
                    bad.append(_raises(np.linalg.LinAlgError,
                                       partial(dm.linalg.cho_factor, A, lower=lower),
                                       f"order {k + 1} "))
        bad = [b for b in bad if b]
        assert_all(comm, not bad, f"grid {shape}: " + "; ".join(bad))
