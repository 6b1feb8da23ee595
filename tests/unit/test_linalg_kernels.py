"""The rank-local in-place BLAS kernels of the dense solvers (no MPI)."""

import numpy as np
import pytest

from distmat.linalg import _kernels
from distmat.linalg._kernels import copy_tiled, gemm_update, syrk_update


@pytest.mark.parametrize("dt", [np.float32, np.float64, np.complex64, np.complex128])
@pytest.mark.parametrize("b_transposed", [False, True])
def test_gemm_update_strided_views(dt, b_transposed):
    rng = np.random.default_rng(0)
    tol = 1e-4 if dt in (np.float32, np.complex64) else 1e-12
    for m, n, k, r0, c0 in [(37, 31, 5, 13, 9), (1, 1, 1, 0, 0), (50, 3, 17, 0, 40),
                            (4, 40, 1, 46, 3)]:
        big = rng.standard_normal((50, 43)).astype(dt)
        a = rng.standard_normal((m + 7, k + 2)).astype(dt)[3:3 + m, 1:1 + k]  # strided
        b = rng.standard_normal((k, n)).astype(dt)
        bb = np.ascontiguousarray(b.T) if b_transposed else b
        want = big.copy()
        want[r0:r0 + m, c0:c0 + n] -= a @ b
        got = big.copy()
        gemm_update(got[r0:r0 + m, c0:c0 + n], a, bb, b_transposed=b_transposed)
        assert np.allclose(got, want, rtol=tol, atol=tol)
        got2 = big.copy()
        gemm_update(got2[r0:r0 + m, c0:c0 + n], a, bb, b_transposed=b_transposed, alpha=2.0)
        want2 = big.copy()
        want2[r0:r0 + m, c0:c0 + n] += 2.0 * (a @ b)
        assert np.allclose(got2, want2, rtol=tol, atol=tol)


def test_gemm_update_empty_and_fallback():
    c = np.ones((3, 0))
    gemm_update(c, np.ones((3, 2)), np.ones((2, 0)))
    c = np.ones((4, 4))[:, ::2]          # non-unit column stride: numpy fallback
    a, b = np.ones((4, 2)), np.ones((2, 2))
    gemm_update(c, a, b)
    assert np.array_equal(c, -np.ones((4, 2)))


@pytest.mark.parametrize("dt", [np.float64, np.complex64])
def test_trsm_inplace_all_forms(dt):
    from distmat.linalg._kernels import trsm_inplace

    rng = np.random.default_rng(1)
    tol = 1e-3 if dt == np.complex64 else 1e-10
    for left in (True, False):
        for lower in (True, False):
            for tr in "NTC":
                for unit in (False, True):
                    for step in (1, 2):   # step 2: a non-unit stride takes the scipy fallback
                        t = (rng.standard_normal((6, 6)) + 4 * np.eye(6)).astype(dt)
                        big = rng.standard_normal((20, 30)).astype(dt)
                        shape = (6, 9) if left else (9, 6)
                        b = big[2:2 + shape[0], 3:3 + step * shape[1]:step]
                        b0 = b.copy()
                        trsm_inplace(b, t, left=left, lower=lower, trans=tr, unit_diagonal=unit)
                        tt = np.tril(t) if lower else np.triu(t)
                        if unit:
                            np.fill_diagonal(tt, 1)
                        op = {"N": tt, "T": tt.T, "C": tt.conj().T}[tr]
                        res = op @ b - b0 if left else b @ op - b0
                        assert np.abs(res).max() < tol, (left, lower, tr, unit, step)


def _rand(rng, shape, dt):
    x = rng.standard_normal(shape)
    if np.dtype(dt).kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dt)


@pytest.fixture(params=["blas", "numpy"])
def kernels(request, monkeypatch):
    """Both the BLAS path and the numpy fallback (no BLAS pointers)."""
    if request.param == "numpy":
        monkeypatch.setattr(_kernels, "_load", lambda *a, **k: None)
    return request.param


@pytest.mark.parametrize("dt", [np.float32, np.float64, np.complex64, np.complex128])
def test_gemm_update_adjoint_operands(dt, kernels):
    rng = np.random.default_rng(1)
    tol = 1e-4 if dt in (np.float32, np.complex64) else 1e-12
    big = _rand(rng, (40, 50), dt)
    for bt in (False, True):
        for bc in (False, True):
            for aa in (False, True):
                a = _rand(rng, (7, 20) if aa else (20, 7), dt)
                b = _rand(rng, (30, 7) if bt else (7, 30), dt)
                opa = a.conj().T if aa else a
                opb = (b.conj().T if bc else b.T) if bt else b
                got = big.copy()
                gemm_update(got[2:22, 3:33], a, b, b_transposed=bt, b_conj=bc, a_adjoint=aa)
                want = big.copy()
                want[2:22, 3:33] -= opa @ opb
                assert np.allclose(got, want, rtol=tol, atol=tol), (bt, bc, aa)


@pytest.mark.parametrize("dt", [np.float32, np.float64, np.complex64, np.complex128])
def test_gemm_update_column_major_a(dt, kernels):
    """``a_transposed``: A is the row-major view of a column-major panel, not conjugated."""
    rng = np.random.default_rng(4)
    tol = 1e-4 if dt in (np.float32, np.complex64) else 1e-12
    big = _rand(rng, (40, 50), dt)
    panel = np.asfortranarray(_rand(rng, (26, 7), dt))
    for bt in (False, True):
        b = _rand(rng, (30, 7) if bt else (7, 30), dt)
        got = big.copy()
        gemm_update(got[2:22, 3:33], panel[6:].T, b, b_transposed=bt, a_transposed=True,
                    alpha=0.5)
        want = big.copy()
        want[2:22, 3:33] += 0.5 * panel[6:] @ (b.T if bt else b)
        assert np.allclose(got, want, rtol=tol, atol=tol), bt


@pytest.mark.parametrize("order", ["C", "F"])
def test_copy_tiled_any_layout(order, monkeypatch):
    """Tiled copies between row- and column-major arrays, with partial last tiles."""
    monkeypatch.setattr(_kernels, "COPY_TILE", 16)
    rng = np.random.default_rng(5)
    src = rng.standard_normal((70, 90))[3:53, 10:40]
    dst = np.zeros((50, 30), order=order)
    copy_tiled(dst, src)
    assert np.array_equal(dst, src)
    back = np.zeros((60, 40))
    copy_tiled(back[5:55, 2:32], dst)
    assert np.array_equal(back[5:55, 2:32], src) and not back[:5].any() and not back[55:].any()
    z = src + 1j * src[::-1]
    got = np.zeros((30, 50), dtype=complex)
    copy_tiled(got, z.T, conj=True)
    assert np.array_equal(got, z.conj().T)
    copy_tiled(got, z.T)
    assert np.array_equal(got, z.T)


@pytest.mark.parametrize("dt", [np.float32, np.float64, np.complex64, np.complex128])
def test_syrk_update_one_triangle(dt, kernels):
    rng = np.random.default_rng(2)
    tol = 1e-4 if dt in (np.float32, np.complex64) else 1e-12
    big = _rand(rng, (30, 30), dt)
    d = big[5:25, 4:24]
    np.fill_diagonal(d, d.diagonal().real)   # herk keeps the diagonal real
    for upper in (False, True):
        for adjoint in (False, True):
            a = _rand(rng, (6, 20) if adjoint else (20, 6), dt)
            prod = a.conj().T @ a if adjoint else a @ a.conj().T
            got = big.copy()
            syrk_update(got[5:25, 4:24], a, upper=upper, adjoint=adjoint)
            tri = np.triu(np.ones((20, 20), bool)) if upper else np.tril(np.ones((20, 20), bool))
            block, ref = got[5:25, 4:24], big[5:25, 4:24]
            assert np.allclose(block[tri], (ref - prod)[tri], rtol=tol, atol=tol)
            assert np.array_equal(block[~tri], ref[~tri])          # the other triangle kept
            got[5:25, 4:24] = ref
            assert np.array_equal(got, big)                        # nothing outside the block
