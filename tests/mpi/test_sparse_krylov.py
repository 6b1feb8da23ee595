"""Krylov solvers against scipy.sparse.linalg with the same preconditioner (acceptance 3)."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

import distmat as dm
from distmat.testing import assert_all, subgrids

pytestmark = pytest.mark.mpi


def _scipy_precond(A, bs, kind):
    if kind is None:
        return None
    if kind == "jacobi":
        return sp.diags_array(1.0 / A.diagonal())
    D = A.toarray()
    n = D.shape[0]
    return sp.block_diag([np.linalg.inv(D[i:i + bs, i:i + bs]) for i in range(0, n, bs)])


def _count(name, f, A, b, M, **kw):
    n = [0]

    def cb(*_):
        n[0] += 1

    if name == "gmres":
        kw["callback_type"] = "pr_norm"
    x, info = f(A, b, rtol=1e-8, M=M, callback=cb, **kw)
    return x, info, n[0]


CASES = [("cg", 0.0), ("bicgstab", 0.0), ("gmres", 0.0), ("bicgstab", 0.8), ("gmres", 0.8)]


@pytest.mark.grids
def test_iteration_counts_match_scipy(comm):
    for shape, grid in subgrids(comm, [(1, 1), (2, 1), (2, 2), (2, 3)]):
        ok, msg = True, ""
        if grid is not None:
            for name, conv in CASES:
                bs = 5 if conv else 4
                S = dm.sparse.poisson2d(11, 9, blocksize=bs, convection=conv, grid=grid)
                A = S.gather(root=None)
                n = A.shape[0]
                bg = np.sin(np.arange(n) + 1.0)
                b = dm.from_global(bg[:, None], grid=grid, root=None, block=(7, 1))
                for pre in (None, "jacobi", "block_jacobi"):
                    M = None if pre is None else getattr(dm.sparse.linalg, pre)(S)
                    x, info, it = _count(name, getattr(dm.sparse.linalg, name), S, b, M)
                    _, info_s, it_s = _count(name, getattr(spla, name), A, bg,
                                             _scipy_precond(A, bs, pre))
                    xg = x.gather(root=None)
                    res = np.linalg.norm(bg - A @ xg[:, 0]) / np.linalg.norm(bg)
                    if not (info == 0 == info_s and abs(it - it_s) <= 2 and res <= 1e-8
                            and x.shape == (n, 1) and x.block == (7, 1)):
                        ok, msg = False, (f"grid {shape} {name} conv={conv} M={pre}: iters "
                                          f"{it} vs scipy {it_s}, info {info}, res {res:.2e}")
        assert_all(comm, ok, msg)


def test_block_operator_dense_operator_and_callable_m(comm):
    with dm.ProcessGrid(comm) as grid:
        S = dm.sparse.block_operator(6, 5, ncomp=4, grid=grid)
        A = S.gather(root=None)
        n = A.shape[0]
        bg = np.cos(np.arange(n))[:, None]
        b = dm.from_global(bg, grid=grid, root=None, block=(4, 1))
        Mbj = dm.sparse.linalg.block_jacobi(S)
        x1, i1 = dm.sparse.linalg.cg(S, b, rtol=1e-10, M=Mbj)
        x2, i2 = dm.sparse.linalg.cg(S.todense(), b, rtol=1e-10, M=lambda r: Mbj(r))
        x3, i3 = dm.sparse.linalg.gmres(S, b, rtol=1e-10, restart=7, M=Mbj)
        xs, _ = spla.cg(A, bg[:, 0], rtol=1e-10, M=_scipy_precond(A, 4, "block"))
        ok = i1 == i2 == i3 == 0
        for x in (x1, x2, x3):
            ok = ok and np.linalg.norm(A @ x.gather(root=None) - bg) <= 1e-9 * np.linalg.norm(bg)
        ok = ok and np.allclose(x1.gather(root=None)[:, 0], xs, rtol=1e-6, atol=1e-8)
        # x0 given, maxiter reached -> info = maxiter
        x4, i4 = dm.sparse.linalg.cg(S, b, x0=x1, rtol=1e-12, maxiter=1)
        x5, i5 = dm.sparse.linalg.bicgstab(S, b, rtol=1e-14, maxiter=2)
        ok = ok and i4 in (0, 1) and i5 == 2
        assert_all(comm, ok, f"infos {i1} {i2} {i3} {i4} {i5}")


def test_bad_input_and_breakdown(comm):
    def raises(exc, fn, match):
        try:
            fn()
            return False, "no error"
        except exc as e:
            return match in str(e), str(e)

    with dm.ProcessGrid(comm) as grid:
        S = dm.sparse.poisson2d(6, blocksize=4, grid=grid)
        g = np.ones((36, 1))
        g[35 if grid.rank == grid.size - 1 else 0, 0] = np.nan  # NaN somewhere, on one rank
        bnan = dm.from_global(g, grid=grid, root=grid.size - 1)
        for f in (dm.sparse.linalg.cg, dm.sparse.linalg.gmres, dm.sparse.linalg.bicgstab):
            ok, msg = raises(ValueError, lambda f=f: f(S, bnan), "NaN")
            assert_all(comm, ok, msg)
        b = dm.ones((36, 1), grid=grid)
        ok, msg = raises(dm.ShapeMismatchError, lambda: dm.sparse.linalg.cg(
            S, dm.ones((35, 1), grid=grid)), "(35, 1)")
        assert_all(comm, ok, msg)
        # indefinite matrix: CG reports breakdown (-10) instead of looping
        neg = dm.sparse.eye(36, blocksize=4, grid=grid) * -1.0
        x, info = dm.sparse.linalg.cg(neg, b)
        assert_all(comm, info == -10, f"cg info {info}")
        # singular diagonal block -> SingularMatrixError everywhere
        Z = dm.sparse.from_scipy(sp.csr_array(np.triu(np.ones((8, 8)), 1)), blocksize=4,
                                 grid=grid, root=None)
        ok, msg = raises(dm.SingularMatrixError, lambda: dm.sparse.linalg.block_jacobi(Z),
                         "singular")
        assert_all(comm, ok, msg)
        ok, msg = raises(dm.SingularMatrixError, lambda: dm.sparse.linalg.jacobi(Z), "zero")
        assert_all(comm, ok, msg)
        # zero right-hand side: x = 0 at once
        x, info = dm.sparse.linalg.bicgstab(S, dm.zeros((36, 1), grid=grid))
        assert_all(comm, info == 0 and not np.any(x.local), "zero rhs")


def test_several_rhs_complex_and_float32(comm):
    with dm.ProcessGrid(comm) as grid:
        S = dm.sparse.poisson2d(9, 8, blocksize=4, convection=0.5, grid=grid)
        A = S.gather(root=None)
        n = A.shape[0]
        Bg = np.stack([np.cos(np.arange(n) * (j + 1)) for j in range(3)], axis=1)
        B = dm.from_global(Bg, grid=grid, root=None, block=(5, 2))
        ok, msg = True, ""
        for f in (dm.sparse.linalg.gmres, dm.sparse.linalg.bicgstab):
            X, info = f(S, B, rtol=1e-9, M=dm.sparse.linalg.block_jacobi(S))
            Xg = X.gather(root=None)
            res = np.linalg.norm(A @ Xg - Bg, axis=0) / np.linalg.norm(Bg, axis=0)
            if not (info == 0 and X.shape == (n, 3) and X.block == (5, 2) and res.max() < 1e-8):
                ok, msg = False, f"{f.__name__} info {info} res {res}"
        # complex dtype (Hermitian positive definite operator, complex right-hand side)
        Sc = dm.sparse.poisson2d(9, 8, blocksize=4, grid=grid, dtype=np.complex128)
        bc = dm.from_global((Bg[:, :1] * (1 + 2j)), grid=grid, root=None)
        x, info = dm.sparse.linalg.cg(Sc, bc, rtol=1e-10)
        Ac = Sc.gather(root=None)
        rc = np.linalg.norm(Ac @ x.gather(root=None) - Bg[:, :1] * (1 + 2j))
        ok = ok and info == 0 and rc < 1e-8 * np.linalg.norm(Bg[:, 0]) * 3 and \
            x.dtype == np.complex128
        # float32 end to end
        S32 = S.astype(np.float32)
        b32 = dm.from_global(Bg[:, :1].astype(np.float32), grid=grid, root=None)
        x32, info32 = dm.sparse.linalg.bicgstab(S32, b32, rtol=1e-4)
        r32 = np.linalg.norm(A @ x32.gather(root=None) - Bg[:, :1]) / np.linalg.norm(Bg[:, 0])
        ok = ok and info32 == 0 and x32.dtype == np.float32 and r32 < 1e-3
        assert_all(comm, ok, msg or f"complex {info} {rc}, float32 {info32} {r32}")
