"""The alpha-beta model and lower bounds (pure math), checked against brute force."""

import math

import numpy as np
import pytest

from launch import model as M


def test_fit_recovers_alpha_beta():
    alpha, beta = 3e-6, 2.5e-10
    sizes = [8, 64, 1024, 65536, 1 << 20, 1 << 22]
    times = [alpha + beta * s for s in sizes]
    a, b = M.fit_alpha_beta(sizes, times)
    assert a == pytest.approx(alpha, rel=1e-9) and b == pytest.approx(beta, rel=1e-9)
    a, b = M.fit_alpha_beta(sizes, [3 * t for t in times], steps=3)
    assert a == pytest.approx(alpha, rel=1e-9) and b == pytest.approx(beta, rel=1e-9)
    # noise in a relative sense still gives the right magnitudes
    rng = np.random.default_rng(0)
    noisy = [t * (1 + 0.05 * rng.standard_normal()) for t in times]
    a, b = M.fit_alpha_beta(sizes, noisy)
    assert 0.5 * alpha < a < 2 * alpha and 0.5 * beta < b < 2 * beta
    with pytest.raises(ValueError, match="two or more distinct sizes"):
        M.fit_alpha_beta([8, 8], [1e-6, 1e-6])


def test_summa_words_square_grid():
    n = 4096
    for q in (2, 4, 8):
        p = q * q
        w = M.summa_words(n, n, n, q, q)
        assert w == pytest.approx(2 * n * n / math.sqrt(p) * (1 - 1 / q))
    assert M.summa_words(100, 100, 100, 1, 1) == 0.0
    # rectangular: only the panels that cross the grid are received
    assert M.summa_words(800, 300, 50, 1, 4) == pytest.approx(50 * 800 * 0.75)
    assert M.summa_words(800, 300, 50, 4, 1) == pytest.approx(50 * 300 * 0.75)
    d = M.summa(512, 512, 512, 2, 2, 64, 8, M.AlphaBeta(1e-6, 1e-9))
    assert d["model_msgs"] == 8 * 2 and d["model_words"] == M.summa_words(512, 512, 512, 2, 2)
    # 8 steps of one tree level per side; each side receives half its 256 x 512 panel rows
    assert d["model_seconds"] == pytest.approx(2 * (8e-6 + 1e-9 * 256 * 512 * 0.5 * 8))


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("grid", [(2, 2), (1, 4), (3, 2)])
def test_summa_forms_agree_with_the_library_plan(ta, tb, grid):
    from distmat.summa_plan import model_bytes

    m, n, k = 300, 200, 120
    form = ("T" if ta else "N") + ("T" if tb else "N")
    d = M.summa(m, n, k, *grid, 64, 8, M.AlphaBeta(), ta, tb)
    assert d["model_words"] * 8 == pytest.approx(model_bytes(form, m, n, k, grid, 8))


def test_itt_bound():
    n, p = 8192, 4096
    M_ = 3 * n * n / p
    want = n ** 3 / (2 * math.sqrt(2) * p * math.sqrt(M_)) - M_
    assert want > 0 and M.itt_lower_bound(n, n, n, p) == pytest.approx(want)
    assert M.itt_lower_bound(n, n, n, 1) == 0.0
    # with the memory of a 2D algorithm the bound is vacuous (clipped at 0) on few ranks
    assert M.itt_lower_bound(n, n, n, 64) == 0.0
    M2 = n * n / 64 / 16  # a tight memory makes it bite
    assert M.itt_lower_bound(n, n, n, 64, M2) == pytest.approx(
        n ** 3 / (2 * math.sqrt(2) * 64 * math.sqrt(M2)) - M2)
    # the bound never exceeds what SUMMA moves
    for q in (2, 4, 8, 16):
        assert M.itt_lower_bound(n, n, n, q * q) <= M.summa_words(n, n, n, q, q)
    # more memory, a lower bound
    assert M.itt_lower_bound(n, n, n, p, 4 * M_) < M.itt_lower_bound(n, n, n, p)
    p = 64
    mi = M.memory_independent_bound(n, n, n, p)
    assert mi == pytest.approx((n ** 3 / p) ** (2 / 3) - 2 * n * n / p)


def _owner(idx, nb, p):
    return (idx // nb) % p


def brute_transpose(m, n, mb, nb, pr, pc):
    i, j = np.meshgrid(np.arange(m), np.arange(n), indexing="ij")
    src = _owner(i, mb, pr) * pc + _owner(j, nb, pc)
    dst = _owner(j, nb, pr) * pc + _owner(i, mb, pc)  # T has block (nb, mb)
    recv = np.bincount(dst[src != dst], minlength=pr * pc)
    return recv.max()


def brute_redistribute(m, n, b1, b2, pr, pc):
    i, j = np.meshgrid(np.arange(m), np.arange(n), indexing="ij")
    src = _owner(i, b1[0], pr) * pc + _owner(j, b1[1], pc)
    dst = _owner(i, b2[0], pr) * pc + _owner(j, b2[1], pc)
    return np.bincount(dst[src != dst], minlength=pr * pc).max()


@pytest.mark.parametrize("m,n,mb,nb,pr,pc", [(37, 23, 4, 3, 2, 3), (64, 64, 8, 8, 2, 2),
                                              (50, 70, 7, 5, 1, 4), (9, 31, 2, 5, 3, 1),
                                              (5, 5, 8, 8, 2, 2)])
def test_transpose_and_redistribute_words_match_brute_force(m, n, mb, nb, pr, pc):
    assert M.transpose_words((m, n), (mb, nb), (pr, pc)) == brute_transpose(m, n, mb, nb,
                                                                            pr, pc)
    for b2 in ((3, 4), (mb, nb), (1, 1)):
        assert M.redistribute_words((m, n), (mb, nb), b2, (pr, pc)) == brute_redistribute(
            m, n, (mb, nb), b2, pr, pc)


def test_collective_and_solver_models():
    ab = M.AlphaBeta(2e-6, 1e-9)
    assert M.tree_steps(1) == 0 and M.tree_steps(2) == 1 and M.tree_steps(5) == 3
    assert M.bcast(1000, 4, ab)["model_seconds"] == pytest.approx(2 * (2e-6 + 1e-6))
    assert M.allreduce(1000, 4, ab)["model_seconds"] == pytest.approx(4 * (2e-6 + 1e-6))
    assert M.pingpong(1000, ab)["model_seconds"] == pytest.approx(3e-6)
    lu = M.lu(1000, 2, 2, 100, 8, ab)
    assert lu["model_words"] == pytest.approx(1000 ** 2 / 2 * (0.5 / 2 + 0.5 / 2))
    assert M.lu(1000, 1, 1, 100, 8, ab)["model_words"] == 0.0
    assert ab.as_dict()["bandwidth_GBps"] == pytest.approx(1.0)
