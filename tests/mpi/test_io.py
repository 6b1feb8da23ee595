"""Parallel I/O: dm.save / dm.load through MPI-IO into standard .npy files (acceptance 5)."""

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

import distmat as dm
import distmat.io as dio
from distmat.testing import assert_all, subgrids

pytestmark = pytest.mark.mpi

SAVE_GRIDS = ((1, 1), (1, 2), (2, 1), (2, 2), (1, 3), (3, 1))
LOAD_GRIDS = ((1, 1), (2, 1), (1, 4), (2, 2), (3, 1))


@pytest.fixture
def shared_dir(comm):
    d = comm.bcast(tempfile.mkdtemp(prefix="distmat-io-") if comm.rank == 0 else None, root=0)
    yield Path(d)
    comm.Barrier()
    if comm.rank == 0:
        shutil.rmtree(d, ignore_errors=True)


def _reference(shape, dtype):
    rng = np.random.default_rng(7)
    a = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        a = a + 1j * rng.standard_normal(shape)
    return a.astype(dtype)


def _check_equal(comm, A, ref, what):
    rows, cols = A.global_rows, A.global_cols
    ok = A.local.dtype == ref.dtype and np.array_equal(A.local, ref[np.ix_(rows, cols)])
    assert_all(comm, ok, f"{what}: local piece differs from the reference")


@pytest.mark.parametrize("shape,dtype", [((13, 7), np.float64), ((5, 11), np.float32),
                                         ((9, 9), np.complex128), ((2, 3), np.complex64)])
def test_round_trip_across_grids_and_blocks(comm, shared_dir, shape, dtype):
    ref = _reference(shape, dtype)
    path = shared_dir / f"m-{shape[0]}x{shape[1]}-{np.dtype(dtype).name}.npy"
    for gshape, grid in subgrids(comm, SAVE_GRIDS):
        if grid is not None:
            A = dm.from_global(ref, grid=grid, block=(2, 3), root=None)
            dm.save(A, path)
        comm.Barrier()
        ok = comm.rank != 0 or np.array_equal(np.load(path), ref)
        assert_all(comm, ok, f"numpy.load disagrees after save on grid {gshape}")
        for lshape, lgrid in subgrids(comm, LOAD_GRIDS):
            if lgrid is None:
                continue
            for block in ((1, 1), (3, 2), (4, 5)):
                B = dm.load(path, grid=lgrid, block=block)
                _check_equal(lgrid.comm, B, ref, f"save {gshape} -> load {lshape} {block}")
        comm.Barrier()


def test_numpy_written_files_load(comm, shared_dir):
    ref = _reference((10, 6), np.float64)
    ints = np.arange(12, dtype=np.int32)
    if comm.rank == 0:
        np.save(shared_dir / "c.npy", ref)
        np.save(shared_dir / "f.npy", np.asfortranarray(ref))
        np.save(shared_dir / "i.npy", ints)
        np.save(shared_dir / "be.npy", ref.astype(">f8"))
    comm.Barrier()
    with dm.ProcessGrid(comm) as grid:
        for name in ("c", "f", "be"):
            _check_equal(comm, dm.load(shared_dir / f"{name}.npy", grid=grid, block=(3, 4)),
                         ref, name)
        v = dm.load(shared_dir / "i.npy", grid=grid, block=(5, 1))
        _check_equal(comm, v, ints.astype(np.float64)[:, None], "int vector")


def test_interrupted_save_leaves_no_file_and_keeps_old_one(comm, shared_dir):
    path = shared_dir / "x.npy"
    with dm.ProcessGrid(comm) as grid:
        A = dm.random((12, 8), seed=3, grid=grid, block=(5, 3))
        dm.save(A, path)
        old = dm.random((12, 8), seed=3, grid=grid, block=(12, 8)).gather(root=None)
        B = dm.random((12, 8), seed=4, grid=grid, block=(5, 3))

        def crash():
            if grid.rank == grid.size - 1:
                raise OSError("disk full (simulated)")

        dio._before_rename = crash
        try:
            try:
                dm.save(B, path)
                ok, msg = False, "save did not raise"
            except OSError as e:
                ok, msg = "disk full" in str(e), str(e)
            assert_all(comm, ok, msg)
        finally:
            dio._before_rename = None
        dm.save(B, shared_dir / "fresh.npy")  # saving works again afterwards
        comm.Barrier()
        left = sorted(os.listdir(shared_dir))
        assert_all(comm, left == sorted(["x.npy", "x.npy" + dio.META_SUFFIX, "fresh.npy",
                                         "fresh.npy" + dio.META_SUFFIX]), f"files: {left}")
        ok = comm.rank != 0 or np.array_equal(np.load(path), old)
        assert_all(comm, ok, "the old file changed after an interrupted save")
        C = dm.load(path, grid=grid, block=(4, 4))
        _check_equal(comm, C, old, "old file")


def test_interrupted_write_of_new_name_leaves_nothing(comm, shared_dir):
    path = shared_dir / "new.npy"
    with dm.ProcessGrid(comm) as grid:
        A = dm.random((7, 9), seed=1, grid=grid)

        def crash():
            raise KeyboardInterrupt  # not an Exception: every rank gets it here

        dio._before_rename = crash
        try:
            try:
                dm.save(A, path)
                ok = False
            except KeyboardInterrupt:
                ok = True
        finally:
            dio._before_rename = None
        assert_all(comm, ok, "save was not interrupted")
        comm.Barrier()
        assert_all(comm, os.listdir(shared_dir) == [], f"left: {os.listdir(shared_dir)}")


def test_damaged_or_stale_file_is_refused(comm, shared_dir):
    path = shared_dir / "d.npy"
    with dm.ProcessGrid(comm) as grid:
        A = dm.random((16, 16), seed=9, grid=grid)
        dm.save(A, path)
        comm.Barrier()
        if comm.rank == 0:  # flip one value in place: size and header still fine
            arr = np.load(path, mmap_mode="r+")
            arr[3, 5] += 1.0
            arr.flush()
            del arr
        comm.Barrier()
        try:
            dm.load(path, grid=grid)
            ok, msg = False, "damaged file loaded"
        except ValueError as e:
            ok, msg = "checksum" in str(e), str(e)
        assert_all(comm, ok, msg)
        if comm.rank == 0:  # truncate
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) - 8)
        comm.Barrier()
        try:
            dm.load(path, grid=grid)
            ok, msg = False, "truncated file loaded"
        except ValueError as e:
            ok, msg = "truncated" in str(e), str(e)
        assert_all(comm, ok, msg)
        try:
            dm.load(shared_dir / "missing.npy", grid=grid)
            ok, msg = False, "missing file loaded"
        except FileNotFoundError as e:
            ok, msg = "missing.npy" in str(e), str(e)
        assert_all(comm, ok, msg)


def test_matrix_market_dense_and_sparse(comm, shared_dir):
    import scipy.io
    import scipy.sparse

    ref = _reference((6, 5), np.float64)
    sp = scipy.sparse.random(8, 7, density=0.3, random_state=2, format="coo")
    if comm.rank == 0:
        scipy.io.mmwrite(str(shared_dir / "dense.mtx"), ref)
        scipy.io.mmwrite(str(shared_dir / "sparse.mtx"), sp)
    comm.Barrier()
    with dm.ProcessGrid(comm) as grid:
        _check_equal(comm, dm.load(shared_dir / "dense.mtx", grid=grid, block=(2, 2)), ref,
                     "dense mtx")
        _check_equal(comm, dm.load(shared_dir / "sparse.mtx", grid=grid), sp.toarray(),
                     "sparse mtx")


def test_empty_local_pieces_and_tiny_matrices(comm, shared_dir):
    path = shared_dir / "t.npy"
    ref = _reference((1, 2), np.float64)
    with dm.ProcessGrid(comm) as grid:
        A = dm.from_global(ref, grid=grid, root=None, block=(1, 1))
        dm.save(A, path)
        comm.Barrier()
        assert_all(comm, comm.rank != 0 or np.array_equal(np.load(path), ref), "tiny")
        _check_equal(comm, dm.load(path, grid=grid, block=(1, 1)), ref, "tiny load")
        Z = dm.zeros((0, 3), grid=grid)
        dm.save(Z, shared_dir / "z.npy")
        comm.Barrier()
        assert_all(comm, comm.rank != 0 or np.load(shared_dir / "z.npy").shape == (0, 3),
                   "empty")
        assert_all(comm, dm.load(shared_dir / "z.npy", grid=grid).shape == (0, 3), "empty")
