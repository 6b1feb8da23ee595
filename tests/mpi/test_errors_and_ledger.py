"""Agreed errors (acceptance 4) and ledger byte counts (acceptance 5)."""

import time

import numpy as np
import pytest

import distmat as dm
from distmat import comm as dmc
from distmat.testing import assert_all, subgrids

pytestmark = pytest.mark.mpi


def _raises_everywhere(comm, exc_type, fn, match=None):
    """Run fn on every rank; assert every rank raised exc_type (and match), agreed."""
    try:
        fn()
        ok, msg = False, "did not raise"
    except exc_type as e:
        ok = match is None or match in str(e)
        msg = f"{type(e).__name__}: {e}"
    except Exception as e:  # noqa: BLE001
        ok, msg = False, f"raised {type(e).__name__}: {e}"
    assert_all(comm, ok, msg)


def test_shape_mismatch_raises_on_every_rank_quickly(comm):
    with dm.ProcessGrid(comm) as grid:
        A = dm.zeros((10, 6), grid=grid, block=(3, 2))
        B = dm.zeros((6, 10), grid=grid, block=(3, 2))
        t0 = time.perf_counter()
        _raises_everywhere(comm, dm.ShapeMismatchError, lambda: A + B, "(10, 6) and (6, 10)")
        _raises_everywhere(comm, ValueError, lambda: A * B)
        assert time.perf_counter() - t0 < 5.0
        assert issubclass(dm.ShapeMismatchError, ValueError)
        assert issubclass(dm.SingularMatrixError, np.linalg.LinAlgError)


def test_failure_on_one_rank_inside_a_collective_reaches_every_rank(comm):
    with dm.ProcessGrid(comm) as grid:
        last = grid.size - 1

        def f(i, j):
            if grid.rank == last:
                raise ZeroDivisionError("bad entry on the last rank")
            return i + j

        _raises_everywhere(comm, ZeroDivisionError,
                           lambda: dm.from_function(f, (8, 8), grid=grid),
                           f"raised on rank {last}")

        def algorithm():
            with dmc.agreed(grid.comm):
                if grid.rank == 0:
                    raise np.linalg.LinAlgError("zero pivot in column 3")
            dmc.bcast(grid.comm, np.zeros(4), 0)  # never reached: no rank is left waiting here

        _raises_everywhere(comm, np.linalg.LinAlgError, algorithm, "zero pivot in column 3")
        # the grid still works afterwards: no collective was left half-entered
        assert_all(comm, dm.norm(dm.ones((3, 3), grid=grid)) == 3.0)


def test_unrebuildable_exception_becomes_remote_error(comm):
    class Odd(Exception):
        def __init__(self, a, b):
            super().__init__(f"{a}/{b}")

    def run():
        with dmc.agreed(comm):
            if comm.rank == 0:
                raise Odd(1, 2)

    _raises_everywhere(comm, dm.RemoteError, run, "1/2")


def test_argument_errors_are_raised_everywhere(comm):
    _raises_everywhere(comm, ValueError, lambda: dm.ProcessGrid(comm, (comm.size + 1, 1)),
                       "ranks")
    _raises_everywhere(comm, ValueError, lambda: dm.ProcessGrid(comm, (0, comm.size)))
    with dm.ProcessGrid(comm) as grid:
        _raises_everywhere(comm, ValueError, lambda: dm.zeros((3, 3), grid=grid, block=(0, 2)),
                           "block")
        _raises_everywhere(comm, ValueError, lambda: dm.zeros((-1, 3), grid=grid), "shape")
        _raises_everywhere(comm, TypeError, lambda: dm.zeros((3, 3), dtype=np.int32, grid=grid),
                           "dtype")
        _raises_everywhere(comm, ValueError, lambda: dm.norm(dm.zeros((2, 2), grid=grid), 2),
                           "ord")
        # only root holds the bad array: the error still reaches every rank
        _raises_everywhere(comm, ValueError,
                           lambda: dm.from_global(np.zeros(5) if grid.rank == 0 else None,
                                                  grid=grid), "2-D")
        if comm.size > 1:  # root=None but the ranks disagree on the shape
            _raises_everywhere(comm, ValueError,
                               lambda: dm.from_global(np.zeros((2, 2 + (grid.rank == 0))),
                                                      grid=grid, root=None), "differing")
        _raises_everywhere(comm, ValueError, lambda: dm.zeros((2, 2), grid=grid).gather(root=99),
                           "root")
        A = dm.zeros((2, 2), grid=grid)
        for bad in (lambda: np.asarray(A), lambda: bool(A), lambda: len(A)):
            _raises_everywhere(comm, TypeError, bad)
        _raises_everywhere(comm, TypeError, lambda: A + np.ones((2, 2)))


def test_different_grids_raise(comm):
    with dm.ProcessGrid(comm) as g1:
        sub = comm.Split(0 if comm.rank == 0 else 1, comm.rank)
        with dm.ProcessGrid(sub) as g2:
            A = dm.zeros((4, 4), grid=g1)
            B = dm.zeros((4, 4), grid=g2)
            if comm.size > 1:
                _raises_everywhere(comm, dm.GridMismatchError, lambda: A + B, "different")
            same = dm.zeros((4, 4), grid=g1)
            assert_all(comm, (A + same).shape == (4, 4))
        sub.Free()


def _bytes_moved(src_owner, dst_owner, nranks, itemsize):
    """Per-rank (sent, received) element bytes from two owner maps of the global entries."""
    sent = np.zeros(nranks, dtype=np.int64)
    recv = np.zeros(nranks, dtype=np.int64)
    moving = src_owner != dst_owner
    np.add.at(sent, src_owner[moving], 1)
    np.add.at(recv, dst_owner[moving], 1)
    return sent * itemsize, recv * itemsize


def _owner_map(layout, grid):
    (m, n) = layout.shape
    r = layout.row_owner(np.arange(m))[:, None]
    c = layout.col_owner(np.arange(n))[None, :]
    return r * grid.shape[1] + c


def test_ledger_counts_transpose_and_gather_bytes_from_the_layout(comm):
    for shape, grid in subgrids(comm, [(1, 1), (1, 2), (2, 1), (2, 2), (1, 3), (3, 1)]):
        ok, msg = True, ""
        if grid is not None:
            for (m, n), block, dt in [((37, 23), (4, 3), np.float64),
                                      ((5, 50), (1, 7), np.complex64),
                                      ((2, 2), (5, 5), np.float32)]:
                A = dm.random((m, n), seed=3, grid=grid, block=block, dtype=dt)
                with dm.profile(grid) as prof:
                    _ = A.T
                    A.gather(root=0)
                lay = A.layout
                src = _owner_map(lay, grid)
                dst_t = _owner_map(lay.transposed(), grid).T   # owner of entry (i, j) after .T
                sent_t, recv_t = _bytes_moved(src, dst_t, grid.size, A.dtype.itemsize)
                sent_g, recv_g = _bytes_moved(src, np.zeros_like(src), grid.size, A.dtype.itemsize)
                t, g = prof.ops.get("transpose"), prof.ops["gather"]
                got = (t.bytes_sent.local if t else 0, t.bytes_recv.local if t else 0,
                       g.bytes_sent.local, g.bytes_recv.local, g.bytes_sent.sum)
                want = (sent_t[grid.rank], recv_t[grid.rank], sent_g[grid.rank],
                        recv_g[grid.rank], sent_g.sum())
                if got != want:
                    ok, msg = False, f"{shape} {(m, n)}: ledger {got} != layout {want}"
                if t is not None and t.bytes_sent.sum != sent_t.sum():
                    ok, msg = False, f"{shape}: transpose sum {t.bytes_sent.sum} != {sent_t.sum()}"
        assert_all(comm, ok, msg)


def test_nothing_is_recorded_outside_profile(comm):
    with dm.ProcessGrid(comm) as grid:
        A = dm.ones((8, 8), grid=grid)
        _ = A.T
        assert not dmc._recorders
        with dm.profile(grid) as prof:
            dm.norm(A)
        assert "norm" in prof.ops and prof.total.calls.max >= 1
        assert "norm" in prof.table() and prof.as_dict()["nranks"] == grid.size


def test_grid_coordinates_and_subcommunicators(comm):
    for shape, grid in subgrids(comm):
        ok = True
        if grid is not None:
            r, c = grid.coords
            ok = (grid.rank == r * shape[1] + c and grid.row_comm.size == shape[1]
                  and grid.col_comm.size == shape[0] and grid.row_comm.rank == c
                  and grid.col_comm.rank == r and grid.ranks()[r, c] == grid.rank)
        assert_all(comm, ok, f"grid {shape}")
    g = dm.ProcessGrid(comm)
    pr, pc = g.shape
    assert pr * pc == comm.size and pr <= pc
    g.free()
    g.free()  # idempotent


def test_numpy_operands_and_missing_inputs_get_clear_errors(comm):
    with dm.ProcessGrid(comm) as grid:
        A = dm.ones((3, 3), grid=grid)
        a = np.ones((3, 3))
        for fn in (lambda: A @ a, lambda: a @ A, lambda: A + a, lambda: a * A):
            _raises_everywhere(comm, TypeError, fn, "dm.from_global")
        _raises_everywhere(comm, TypeError, lambda: dm.norm(a), "DistMatrix")
        S = dm.sparse.eye(3, blocksize=1, grid=grid)
        for fn in (lambda: S @ a, lambda: a @ S):
            _raises_everywhere(comm, TypeError, fn, "BlockSparseMatrix and a ndarray")
        _raises_everywhere(comm, ValueError, lambda: dm.from_global(None, grid=grid), "None")
        missing = "/nonexistent-distmat-dir/x.npy"
        _raises_everywhere(comm, FileNotFoundError, lambda: dm.save(A, missing), "does not exist")


def test_allsum_is_bitwise_the_same_on_every_rank(comm):
    rng = np.random.default_rng(comm.rank)
    mine = rng.standard_normal(3) * 10.0 ** rng.integers(-8, 8, 3)   # sums that round
    parts = comm.allgather(mine.copy())
    want = parts[0].copy()
    for p in parts[1:]:
        want += p
    got = dmc.allsum(comm, mine)
    everyone = comm.allgather(got.tobytes())
    assert_all(comm, got is mine and np.array_equal(got, want) and len(set(everyone)) == 1,
               f"allsum {got} vs rank-order sum {want}")
