"""The SUMMA panel plan and byte model (pure index math), and the BLAS thread policy."""

import itertools

import numpy as np
import pytest

from distmat import threads
from distmat.layout import global_to_local, owner_of
from distmat.summa_plan import DEFAULT_PANEL, index_or_slice, model_bytes, plan


def _as_array(idx):
    if isinstance(idx, slice):
        return np.arange(idx.start, idx.stop)
    return np.asarray(idx)


@pytest.mark.parametrize("n,b1,p1,b2,p2,width", [
    (n, b1, p1, b2, p2, w)
    for n, (b1, p1), (b2, p2), w in itertools.product(
        [0, 1, 7, 23, 64, 100], [(1, 1), (3, 2), (4, 3), (7, 1)], [(1, 2), (3, 2), (5, 4)],
        [1, 5, 512])
])
def test_plan_covers_each_index_once_with_one_owner_per_side(n, b1, p1, b2, p2, width):
    steps = plan(n, b1, p1, b2, p2, width)
    seen = []
    for st in steps:
        assert 1 <= st.width <= width
        l1, l2 = _as_array(st.local1), _as_array(st.local2)
        assert l1.size == l2.size == st.width
        # recover the global indices from side 1 and check side 2 agrees
        g1 = (l1 // b1) * b1 * p1 + st.owner1 * b1 + l1 % b1
        g2 = (l2 // b2) * b2 * p2 + st.owner2 * b2 + l2 % b2
        assert np.array_equal(g1, g2)
        assert np.all(owner_of(g1, b1, p1) == st.owner1)
        assert np.all(owner_of(g1, b2, p2) == st.owner2)
        assert np.array_equal(global_to_local(g1, b1, p1), l1)
        assert st.start == g1.min()
        seen.append(g1)
    allg = np.concatenate(seen) if seen else np.empty(0, int)
    assert np.array_equal(np.sort(allg), np.arange(n))
    assert [s.start for s in steps] == sorted(s.start for s in steps)


def test_square_grid_equal_blocks_gives_contiguous_owner_panels():
    steps = plan(1024, 64, 2, 64, 2, 256)
    assert len(steps) == 4
    assert all(isinstance(s.local1, slice) and isinstance(s.local2, slice) for s in steps)
    assert all(s.owner1 == s.owner2 and s.width == 256 for s in steps)


def test_index_or_slice():
    assert index_or_slice(np.array([3, 4, 5])) == slice(3, 6)
    assert index_or_slice(np.array([], dtype=int)) == slice(0, 0)
    arr = np.array([1, 3, 4])
    assert index_or_slice(arr) is arr


def test_plan_rejects_bad_width():
    with pytest.raises(ValueError, match="panel width"):
        plan(10, 2, 1, 2, 1, 0)
    assert DEFAULT_PANEL >= 64


def test_model_bytes():
    # 1 x 2 grid, NN: each rank receives half of A (m k / 2 words)
    assert model_bytes("NN", 100, 100, 100, (1, 2), 8) == 100 * 100 / 2 * 8
    assert model_bytes("NN", 7, 9, 5, (1, 1), 8) == 0
    # the transposed forms mirror each other
    assert model_bytes("TN", 30, 40, 50, (2, 3), 4) == pytest.approx(
        model_bytes("NT", 40, 30, 50, (3, 2), 4))
    with pytest.raises(ValueError, match="form"):
        model_bytes("XX", 1, 1, 1, (1, 1), 8)


def test_thread_policy_env(monkeypatch):
    saved = dict(threads._state)
    before = {d["library"]: d["threads"] for d in threads.blas_info()}
    try:
        for raw, want in [("3", 3), ("off", None), ("auto",
                          max(1, threads.cores() // threads.local_ranks()))]:
            threads._state.update(done=False, threads=None)
            monkeypatch.setenv(threads.ENV_VAR, raw)
            assert threads.ensure_blas_threads() == want
            assert threads.blas_threads() == want
        threads._state.update(done=False, threads=None)
        monkeypatch.setenv(threads.ENV_VAR, "many")
        with pytest.raises(ValueError, match="DISTMAT_BLAS_THREADS"):
            threads.ensure_blas_threads()
        with pytest.raises(ValueError, match="positive integer"):
            threads.set_blas_threads(0)
        info = threads.blas_info()
        assert info and all({"api", "version", "kernel", "threads"} <= set(d) for d in info)
    finally:
        threads._state.update(saved)
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=min(before.values()), user_api="blas")


def test_local_ranks_from_launcher_env(monkeypatch):
    for var in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"):
        monkeypatch.delenv(var, raising=False)
    assert threads.local_ranks() == 1
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4(x2)")
    assert threads.local_ranks() == 4
    monkeypatch.setenv("MPI_LOCALNRANKS", "6")
    assert threads.local_ranks() == 6


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
@pytest.mark.parametrize("conj", [False, True])
def test_strided_gemm_into_a_column_block(dtype, conj):
    from distmat.summa_kernels import gemm_abt

    g = np.random.default_rng(1)

    def rand(shape):
        x = g.standard_normal(shape)
        if np.dtype(dtype).kind == "c":
            x = x + 1j * g.standard_normal(shape)
        return x.astype(dtype)

    C, A, B = rand((9, 13)), rand((6, 5)), rand((7, 5))
    want = C.copy()
    want[2:8, 4:11] = 2.0 * A @ (B.conj() if conj else B).T + 0.5 * want[2:8, 4:11]
    gemm_abt(C[2:8, 4:11], A, B, 2.0, 0.5, conj)
    tol = 50 * np.finfo(dtype).eps * (1 + np.abs(want).max())
    assert np.abs(C - want).max() <= tol
    # a non-unit column stride takes the numpy path with the same result
    C2 = np.zeros((6, 14), dtype)
    gemm_abt(C2[:, ::2], A, B, 1.0, 0.0, conj)
    assert np.abs(C2[:, ::2] - A @ (B.conj() if conj else B).T).max() <= tol
