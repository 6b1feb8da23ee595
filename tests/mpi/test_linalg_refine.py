"""Mixed-precision solve (refine="mixed"): float32 factors, float64 refinement, fallback.

Acceptance 3: a float64-level residual (ScaLAPACK ratio with float64 eps <= 1) on a matrix of
condition number about 1e6 from the float32 factors, and a correct fallback near 1e10.
"""

import numpy as np
import pytest

import distmat as dm
from distmat.testing import assert_all, scaled_error, subgrids

pytestmark = pytest.mark.mpi


def inf(x):
    return np.linalg.norm(x, np.inf)


def with_condition(n, cond, seed, spd=False):
    """A matrix with 2-norm condition number ``cond`` (same on every rank)."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((n, n)))
    v = u if spd else np.linalg.qr(rng.standard_normal((n, n)))[0]
    s = np.logspace(0, -np.log10(cond), n)
    return (u * s) @ v.T


def _solve_ratio(a, x, b):
    return scaled_error(inf(a @ x - b), inf(a), inf(x), n=a.shape[0], dtype=np.float64)


def test_mixed_reaches_float64_accuracy_at_cond_1e6(comm):
    for shape, grid in subgrids(comm, [(1, 1), (1, 2), (2, 2), (3, 1)]):
        bad = []
        if grid is not None:
            for n, block, panel, nrhs, kind in [(120, (16, 16), 32, 3, "gen"),
                                                (77, (5, 7), 12, 1, "gen"),
                                                (90, (8, 8), 24, 4, "pos")]:
                a = with_condition(n, 1e6, n, spd=kind == "pos")
                b = np.random.default_rng(1).standard_normal((n, nrhs))
                A = dm.from_global(a, grid=grid, block=block, root=None)
                B = dm.from_global(b, grid=grid, block=(block[0], 2), root=None)
                X = dm.linalg.solve(A, B, assume_a=kind, refine="mixed", panel=panel)
                info = X.refine_info
                x = X.gather(None)
                r = _solve_ratio(a, x, b)
                x32 = dm.linalg.solve(A.astype(np.float32), B.astype(np.float32), panel=panel,
                                      assume_a=kind).gather(None).astype(np.float64)
                r32 = _solve_ratio(a, x32, b)
                if not (r <= 1.0 and info.converged and not info.fallback
                        and 1 <= info.iterations <= 10 and X.dtype == np.float64
                        and X.block == B.block and r32 > 1e3):
                    bad.append(f"n={n} {kind}: ratio {r:.3g} (float32 alone {r32:.3g}) {info}")
        assert_all(comm, not bad, f"grid {shape}: " + "; ".join(bad))


def test_mixed_falls_back_at_cond_1e10(comm):
    for shape, grid in subgrids(comm, [(1, 1), (2, 1), (2, 2)]):
        bad = []
        if grid is not None:
            for kind in ("gen", "pos"):
                n = 80
                a = with_condition(n, 1e10, 3, spd=kind == "pos")
                b = np.random.default_rng(2).standard_normal((n, 2))
                A = dm.from_global(a, grid=grid, block=(6, 6), root=None)
                B = dm.from_global(b, grid=grid, block=(6, 1), root=None)
                X = dm.linalg.solve(A, B, assume_a=kind, refine="mixed", panel=16)
                info = X.refine_info
                x = X.gather(None)
                ref = dm.linalg.solve(A, B, assume_a=kind, panel=16).gather(None)
                r = _solve_ratio(a, x, b)
                if not (info.fallback and not info.converged and info.reason and r <= 1.0
                        and np.allclose(x, ref, rtol=0, atol=1e-12 * inf(ref))):
                    bad.append(f"{kind}: ratio {r:.3g} {info}")
        assert_all(comm, not bad, f"grid {shape}: " + "; ".join(bad))


def test_mixed_on_float32_input_is_a_plain_solve(comm):
    with dm.ProcessGrid(comm) as grid:
        A = dm.from_global(with_condition(30, 10.0, 4).astype(np.float32), grid=grid, root=None)
        B = dm.ones((30, 1), grid=grid, dtype=np.float32)
        X = dm.linalg.solve(A, B, refine="mixed")
        Y = dm.linalg.solve(A, B)
        ok = (X.dtype == np.float32 and not hasattr(X, "refine_info")
              and np.array_equal(X.gather(None), Y.gather(None)))
        assert_all(comm, ok, "refine='mixed' on float32 input")
