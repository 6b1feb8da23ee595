"""LU with partial pivoting, lu_solve, solve(assume_a="gen"), inv, det and slogdet.

Accuracy is judged by ScaLAPACK's own test ratios (infinity norms, eps of the working
precision; NaN fails): ||A[perm] - L U|| / (||A|| n eps) <= 1 and
||A X - B|| / (||A|| ||X|| n eps) <= 1, ||A inv(A) - I|| / (||A|| ||inv(A)|| n eps) <= 1.
Every rank builds the same inputs from a fixed seed; cases are sampled deterministically per
grid so each file stays fast at 4 ranks.
"""


import numpy as np
import pytest
from linalg_cases import inf, sample_cases, trsm_path

import distmat as dm
from distmat.testing import assert_all, scaled_error, subgrids
from distmat.testing import raises as _raises

pytestmark = pytest.mark.mpi

SMALL_GRIDS = [(1, 1), (1, 2), (2, 1), (2, 2), (1, 3), (3, 1), (1, 4), (4, 1)]
SIZES = [1, 2, 3, 5, 8, 13, 21, 34, 47, 60]
BLOCKS = [(1, 1), (2, 3), (3, 2), (4, 4), (5, 7), (7, 1), (6, 5), (7, 7)]
PANELS = [1, 2, 3, 4, 7, 16, None]
NRHS = [1, 2, 5, 11, 30]


def lu_ratios(a, lu, perm, b, x, dtype):
    n = a.shape[0]
    L = np.tril(lu, -1) + np.eye(n, dtype=lu.dtype)
    U = np.triu(lu)
    up = np.complex128 if np.dtype(dtype).kind == "c" else np.float64
    r_fac = scaled_error(inf(a[perm].astype(up) - L.astype(up) @ U.astype(up)), inf(a), n=n,
                         dtype=dtype)
    r_sol = scaled_error(inf(a.astype(up) @ x.astype(up) - b), inf(a), inf(x), n=n,
                         dtype=dtype)
    return float(r_fac), float(r_sol)


def _cases(shape, count):
    return sample_cases(shape, count, SIZES, BLOCKS, PANELS, NRHS)


@pytest.mark.grids
def test_lu_factor_and_solve_sweep(comm):
    for shape, grid in subgrids(comm):
        bad = []
        if grid is not None:
            for i, (n, block, panel, nrhs, dt) in enumerate(_cases(shape, 20)):
                rng = np.random.default_rng(n * 1000 + nrhs)
                a = rng.uniform(-1, 1, (n, n)).astype(dt)
                b = rng.uniform(-1, 1, (n, nrhs)).astype(dt)
                A = dm.from_global(a, grid=grid, block=block, root=None)
                B = dm.from_global(b, grid=grid, block=(block[1], 3), root=None)
                f = dm.linalg.lu_factor(A, panel=panel)
                lu = f.lu.gather(None)
                for trans in (0, 1):
                    with trsm_path(i % 2 == 0):
                        x = f.solve(B, trans=trans).gather(None)
                    at = a if trans == 0 else a.T
                    r_fac, _ = lu_ratios(a, lu, f.perm, b, x, dt)
                    r_sol = scaled_error(inf(at.astype(np.float64) @ x - b), inf(a), inf(x),
                                         n=n, dtype=dt)
                    if not (r_fac <= 1.0 and r_sol <= 1.0) or x.dtype != dt:
                        bad.append(f"n={n} block={block} panel={panel} nrhs={nrhs} {dt.__name__}"
                                   f" trans={trans}: factor {r_fac:.3g} solve {r_sol:.3g}")
                if not np.array_equal(np.sort(f.perm), np.arange(n)):
                    bad.append(f"n={n}: perm is not a permutation")
        assert_all(comm, not bad, f"grid {shape}: " + "; ".join(bad[:3]))


def test_solve_matches_scipy_semantics(comm):
    """solve(assume_a='gen'), promotion float32 x float64, and the scipy-style unpacking."""
    import scipy.linalg as sla

    for shape, grid in subgrids(comm, [(1, 1), (2, 2), (1, 3), (4, 1)]):
        bad = []
        if grid is not None:
            rng = np.random.default_rng(7)
            a = rng.standard_normal((45, 45))
            b = rng.standard_normal((45, 4))
            A = dm.from_global(a.astype(np.float32), grid=grid, block=(4, 6), root=None)
            B = dm.from_global(b, grid=grid, block=(5, 2), root=None)
            X = dm.linalg.solve(A, B, panel=8)
            x = X.gather(None)
            if X.dtype != np.float64 or X.block != (5, 2) or X.shape != (45, 4):
                bad.append(f"result metadata {X!r}")
            a32 = a.astype(np.float32).astype(np.float64)
            if not scaled_error(inf(a32 @ x - b), inf(a32), inf(x), n=45,
                                dtype=np.float64) <= 1.0:
                bad.append("promoted solve inaccurate")
            lu, piv = dm.linalg.lu_factor(dm.from_global(a, grid=grid, block=(4, 4), root=None))
            lu_ref, piv_ref = sla.lu_factor(a)
            if not (np.array_equal(piv, piv_ref) and np.allclose(lu.gather(None), lu_ref,
                                                                 atol=1e-12)):
                bad.append("lu_factor differs from scipy's (same pivots expected)")
        assert_all(comm, not bad, f"grid {shape}: " + "; ".join(bad))


def test_permutation_like_and_pivot_growth(comm):
    for shape, grid in subgrids(comm, [(1, 1), (2, 2), (1, 4), (3, 1), (2, 1)]):
        bad = []
        if grid is not None:
            for h, block in [(5, (5, 5)), (12, (4, 3)), (20, (7, 7))]:
                # [[0, I], [I, 0]]: every diagonal block is singular
                n = 2 * h
                a = np.zeros((n, n))
                a[:h, h:] = np.eye(h)
                a[h:, :h] = np.eye(h)
                b = np.arange(n * 3, dtype=float).reshape(n, 3)
                A = dm.from_global(a, grid=grid, block=block, root=None)
                B = dm.from_global(b, grid=grid, block=block, root=None)
                f = dm.linalg.lu_factor(A, panel=block[1])
                x = f.solve(B).gather(None)
                r_fac, r_sol = lu_ratios(a, f.lu.gather(None), f.perm, b, x, np.float64)
                if not (r_fac <= 1 and r_sol <= 1 and np.array_equal(x, a @ b)):
                    bad.append(f"[[0,I],[I,0]] h={h}: {r_fac:.3g} {r_sol:.3g}")
            # Wilkinson's growth matrix: U[:, -1] grows like 2^(n-1)
            n = 50
            a = np.eye(n) - np.tril(np.ones((n, n)), -1)
            a[:, -1] = 1.0
            b = np.ones((n, 2))
            A = dm.from_global(a, grid=grid, block=(3, 4), root=None)
            f = dm.linalg.lu_factor(A, panel=5)
            lu = f.lu.gather(None)
            x = f.solve(dm.from_global(b, grid=grid, block=(3, 1), root=None)).gather(None)
            r_fac, r_sol = lu_ratios(a, lu, f.perm, b, x, np.float64)
            growth = np.abs(lu).max() / np.abs(a).max()
            if not (r_fac <= 1 and r_sol <= 1 and growth >= 2.0 ** (n - 2)):
                bad.append(f"growth matrix: {r_fac:.3g} {r_sol:.3g} growth {growth:.3g}")
        assert_all(comm, not bad, f"grid {shape}: " + "; ".join(bad))


def test_larger_random_cases(comm):
    with dm.ProcessGrid(comm) as grid:
        bad = []
        for n, dt, block, nrhs in [(1000, np.float64, (64, 64), 3),
                                   (1000, np.float32, (32, 48), 7)]:
            A = dm.random((n, n), seed=n, low=-1.0, grid=grid, block=block, dtype=dt)
            B = dm.random((n, nrhs), seed=n + 1, grid=grid, block=(block[0], 4), dtype=dt)
            a, b = A.gather(None), B.gather(None)
            f = dm.linalg.lu_factor(A)
            x = f.solve(B).gather(None)
            r_fac, r_sol = lu_ratios(a, f.lu.gather(None), f.perm, b, x, dt)
            if not (r_fac <= 1 and r_sol <= 1):
                bad.append(f"n={n} {dt.__name__}: factor {r_fac:.3g} solve {r_sol:.3g}")
        assert_all(comm, not bad, f"grid {grid.shape}: " + "; ".join(bad))


def _raises_everywhere(comm, exc, fn, *words):
    err = _raises(exc, fn, *words)
    assert_all(comm, not err, err)


def test_singular_matrices_raise_on_every_rank(comm):
    for shape, grid in subgrids(comm, [(1, 1), (2, 2), (1, 3), (3, 1), (1, 2)]):
        bad = []
        if grid is not None:
            rng = np.random.default_rng(3)
            for j, block, panel in [(0, (2, 2), 3), (6, (3, 2), 4), (17, (4, 4), 5),
                                    (29, (5, 3), 8), (29, (30, 30), None)]:
                a = rng.standard_normal((30, 30))
                a[:, j] = 0.0
                A = dm.from_global(a, grid=grid, block=block, root=None)
                bad.append(_raises(dm.SingularMatrixError,
                                   lambda A=A, p=panel: dm.linalg.lu_factor(A, panel=p),
                                   f"column {j}"))
            # Two equal rows.  They must hold column 0's largest entry: then the first pivot
            # is one of them and the other becomes exactly zero (x - 1.0 * x); equal rows
            # elsewhere drift apart by rounding (in LAPACK's getrf too) and give no exact zero.
            a = rng.standard_normal((23, 23))
            a[4, 0] = 10.0
            a[15] = a[4]
            A = dm.from_global(a, grid=grid, block=(3, 5), root=None)
            B = dm.ones((23, 2), grid=grid, block=(3, 5))
            for fn in (lambda A=A, B=B: dm.linalg.solve(A, B, panel=4),
                       lambda A=A: dm.linalg.inv(A, panel=6)):
                bad.append(_raises(dm.SingularMatrixError, fn, "column 22"))
            if not (dm.linalg.det(A) == 0.0 and dm.linalg.slogdet(A) == (0.0, float("-inf"))):
                bad.append("det/slogdet of a singular matrix")
            if not isinstance(dm.SingularMatrixError("x"), np.linalg.LinAlgError):
                bad.append("SingularMatrixError is not a LinAlgError")
        bad = [b for b in bad if b]
        assert_all(comm, not bad, f"grid {shape}: " + "; ".join(bad))


def test_argument_errors(comm):
    with dm.ProcessGrid(comm) as grid:
        A = dm.random((6, 5), seed=1, grid=grid)
        S = dm.random((6, 6), seed=1, grid=grid)
        B = dm.ones((5, 2), grid=grid)
        _raises_everywhere(comm, ValueError, lambda: dm.linalg.lu_factor(A), "(6, 5)")
        _raises_everywhere(comm, ValueError, lambda: dm.linalg.solve(A, B), "(6, 5)")
        _raises_everywhere(comm, ValueError, lambda: dm.linalg.solve(S, B), "(5, 2)", "(6, 6)")
        _raises_everywhere(comm, ValueError, lambda: dm.linalg.inv(A), "(6, 5)")
        _raises_everywhere(comm, ValueError, lambda: dm.linalg.det(A), "(6, 5)")
        _raises_everywhere(comm, ValueError, lambda: dm.linalg.solve(S, S, assume_a="sym"),
                           "assume_a")
        _raises_everywhere(comm, ValueError, lambda: dm.linalg.solve(S, S, refine="half"),
                           "refine")
        _raises_everywhere(comm, ValueError, lambda: dm.linalg.lu_factor(S, panel=0), "panel")
        _raises_everywhere(comm, TypeError, lambda: dm.linalg.solve(S, np.ones((6, 1))),
                           "DistMatrix")
        # a NaN or Inf on one rank only: every rank raises
        for bad_value in (np.nan, np.inf):
            T = S.copy()
            if grid.rank == grid.size - 1 and T.local.size:
                T.local[0, 0] = bad_value
            _raises_everywhere(comm, ValueError, lambda T=T: dm.linalg.lu_factor(T), "infs")
            _raises_everywhere(comm, ValueError, lambda T=T: dm.linalg.solve(S, T), "b must")
            _raises_everywhere(comm, ValueError, lambda T=T: dm.linalg.inv(T), "infs")


@pytest.mark.grids
def test_inverse_det_slogdet(comm):
    for shape, grid in subgrids(comm):
        bad = []
        if grid is not None:
            for n, block, panel, dt in [(1, (1, 1), None, np.float64), (9, (2, 3), 2, np.float64),
                                        (26, (5, 4), 6, np.float32), (37, (7, 7), 16, np.float64)]:
                rng = np.random.default_rng(n)
                a = rng.standard_normal((n, n)).astype(dt)
                A = dm.from_global(a, grid=grid, block=block, root=None)
                with trsm_path(n % 2 == 0):
                    ai = dm.linalg.inv(A, panel=panel).gather(None)
                up = a.astype(np.float64)
                r = scaled_error(inf(up @ ai - np.eye(n)), inf(a), inf(ai), n=n, dtype=dt)
                sign, logdet = dm.linalg.slogdet(A, panel=panel)
                s_ref, l_ref = np.linalg.slogdet(up)
                d = dm.linalg.det(A, panel=panel)
                tol = 1e-4 if dt == np.float32 else 1e-10
                if not (r <= 1.0 and sign == s_ref and abs(logdet - l_ref) <= tol * max(1, n)
                        and np.isclose(d, np.linalg.det(up), rtol=tol * n)):
                    bad.append(f"n={n} {dt.__name__}: inv {r:.3g} slogdet {(sign, logdet)} vs "
                               f"{(s_ref, l_ref)} det {d}")
        assert_all(comm, not bad, f"grid {shape}: " + "; ".join(bad))


def test_row_grid_lookahead(comm):
    """1 x P grids with blocks >= 32 (or panels dividing the block) take the look-ahead path."""
    from distmat.linalg.lu import lookahead_panel

    for shape, grid in subgrids(comm, [(1, 2), (1, 3), (1, 4)]):
        bad = []
        if grid is not None:
            for n, block, panel, dt in [(100, (32, 32), None, np.float64),
                                        (97, (7, 48), 16, np.float64),
                                        (130, (40, 40), None, np.float32),
                                        (33, (3, 32), 1, np.float64),
                                        (70, (64, 64), 8, np.float64),
                                        (75, (32, 32), None, np.complex128),
                                        (61, (32, 32), 16, np.complex64)]:
                rng = np.random.default_rng(n)
                a = rng.uniform(-1, 1, (n, n))
                if np.dtype(dt).kind == "c":
                    a = a + 1j * rng.uniform(-1, 1, (n, n))
                a = a.astype(dt)
                b = rng.uniform(-1, 1, (n, 2)).astype(dt)
                A = dm.from_global(a, grid=grid, block=block, root=None)
                if not lookahead_panel(A, panel):
                    bad.append(f"n={n} block={block} panel={panel}: no look-ahead")
                f = dm.linalg.lu_factor(A, panel=panel)
                x = f.solve(dm.from_global(b, grid=grid, root=None)).gather(None)
                r_fac, r_sol = lu_ratios(a, f.lu.gather(None), f.perm, b, x, dt)
                if not (r_fac <= 1 and r_sol <= 1):
                    bad.append(f"n={n} block={block} panel={panel} {np.dtype(dt)}: "
                               f"{r_fac:.3g} {r_sol:.3g}")
            # [[0, I], [I, 0]] and Wilkinson's growth matrix, panels = 32-column blocks
            h = 40
            a = np.zeros((2 * h, 2 * h))
            a[:h, h:] = a[h:, :h] = np.eye(h)
            b = np.arange(2 * h * 3, dtype=float).reshape(2 * h, 3)
            g = np.eye(50) - np.tril(np.ones((50, 50)), -1)   # 2^49 growth: L U stays exact
            g[:, -1] = 1.0
            for name, m, rhs in (("[[0,I],[I,0]]", a, b), ("growth", g, np.ones((50, 2)))):
                A = dm.from_global(m, grid=grid, block=(32, 32), root=None)
                f = dm.linalg.lu_factor(A)
                x = f.solve(dm.from_global(rhs, grid=grid, block=(32, 1), root=None))
                r_fac, r_sol = lu_ratios(m, f.lu.gather(None), f.perm, rhs, x.gather(None),
                                         np.float64)
                if not (r_fac <= 1 and r_sol <= 1):
                    bad.append(f"{name}: {r_fac:.3g} {r_sol:.3g}")
            # a zero column in a panel of the first and of the second process column, and
            # two equal rows
            for col in (70, 40):
                a = np.random.default_rng(0).standard_normal((96, 96))
                a[:, col] = 0.0
                A = dm.from_global(a, grid=grid, block=(32, 32), root=None)
                bad.append(_raises(dm.SingularMatrixError, lambda A=A: dm.linalg.lu_factor(A),
                                   f"column {col}"))
            # (holding column 0's largest entry: see test_singular_matrices_raise_on_every_rank)
            a = np.random.default_rng(1).standard_normal((96, 96))
            a[10, 0] = 10.0
            a[50] = a[10]
            A = dm.from_global(a, grid=grid, block=(32, 32), root=None)
            bad.append(_raises(dm.SingularMatrixError, lambda A=A: dm.linalg.lu_factor(A),
                               "column 95"))
        bad = [b for b in bad if b]
        assert_all(comm, not bad, f"grid {shape}: " + "; ".join(bad))


def test_complex_solves(comm):
    """complex128: LU with trans 0/1/2, Hermitian Cholesky, mixed refinement (complex64)."""
    for shape, grid in subgrids(comm, [(1, 1), (2, 2), (1, 3), (2, 1)]):
        bad = []
        if grid is not None:
            rng = np.random.default_rng(5)
            n = 37
            a = rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))
            b = rng.standard_normal((n, 3)) + 1j * rng.standard_normal((n, 3))
            A = dm.from_global(a, grid=grid, block=(4, 5), root=None)
            B = dm.from_global(b, grid=grid, block=(4, 2), root=None)
            f = dm.linalg.lu_factor(A, panel=6)
            for tr, op in enumerate((a, a.T, a.conj().T)):
                with trsm_path(tr != 1):
                    x = f.solve(B, trans=tr).gather(None)
                r = scaled_error(inf(op @ x - b), inf(a), inf(x), n=n, dtype=np.complex128)
                if not r <= 1.0:
                    bad.append(f"lu trans={tr}: {r:.3g}")
            h = a @ a.conj().T + n * np.eye(n)
            H = dm.from_global(h, grid=grid, block=(4, 5), root=None)
            for lower in (True, False):
                x = dm.linalg.solve(H, B, assume_a="pos", lower=lower, panel=6).gather(None)
                r = scaled_error(inf(h @ x - b), inf(h), inf(x), n=n, dtype=np.complex128)
                if not r <= 3.0:
                    bad.append(f"cholesky lower={lower}: {r:.3g}")
            X = dm.linalg.solve(A, B, refine="mixed", panel=6)
            x = X.gather(None)
            r = scaled_error(inf(a @ x - b), inf(a), inf(x), n=n, dtype=np.complex128)
            if not (r <= 1.0 and X.refine_info.converged):
                bad.append(f"mixed: {r:.3g} {X.refine_info}")
            s, logd = dm.linalg.slogdet(A)
            s_ref, l_ref = np.linalg.slogdet(a)
            if not (abs(s - s_ref) < 1e-10 and abs(logd - l_ref) < 1e-10):
                bad.append(f"slogdet {(s, logd)} vs {(s_ref, l_ref)}")
        assert_all(comm, not bad, f"grid {shape}: " + "; ".join(bad))
