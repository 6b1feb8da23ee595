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
        _check_equal(comm, dm.load(shared_dir / "sparse.mtx", grid=grid, sparse=False),
                     sp.toarray(), "sparse mtx as dense")
        S = dm.load(shared_dir / "sparse.mtx", grid=grid, block=3)
        assert_all(comm, isinstance(S, dm.sparse.BlockSparseMatrix) and S.bs == 3,
                   f"got {S!r}")
        _check_equal(comm, S.todense(), sp.toarray(), "sparse mtx")


def _sparse_ref():
    import scipy.sparse

    return scipy.sparse.random(23, 17, density=0.2, random_state=4, format="csr")


@pytest.mark.parametrize("save_bs,load_bs", [(4, 4), (5, 2), (1, 7)])
def test_block_sparse_round_trip(comm, shared_dir, save_bs, load_bs):
    import scipy.sparse

    ref = _sparse_ref()
    path = shared_dir / "s.npz"
    for gshape, grid in subgrids(comm, ((1, 1), (2, 1), (2, 2))):
        if grid is not None:
            S = dm.sparse.from_scipy(ref, blocksize=save_bs, grid=grid, root=None)
            dm.save(S, path)
        comm.Barrier()
        ok = comm.rank != 0 or (scipy.sparse.load_npz(path) != ref).nnz == 0
        assert_all(comm, ok, f"scipy.sparse.load_npz disagrees after save on {gshape}")
        for lshape, lgrid in subgrids(comm, ((1, 1), (1, 2), (3, 1))):
            if lgrid is None:
                continue
            T = dm.load(path, grid=lgrid, block=load_bs)
            _check_equal(lgrid.comm, T.todense(), ref.toarray(), f"{gshape} -> {lshape}")
            U = dm.load(path, grid=lgrid)  # default: the saved block size
            assert_all(lgrid.comm, U.bs == save_bs, f"blocksize {U.bs} != {save_bs}")
        comm.Barrier()


def test_block_sparse_interrupted_and_damaged(comm, shared_dir):
    import scipy.sparse

    ref = _sparse_ref()
    path = shared_dir / "s.npz"
    with dm.ProcessGrid(comm) as grid:
        S = dm.sparse.from_scipy(ref, blocksize=4, grid=grid, root=None)

        def crash():
            if grid.rank == 0:
                raise OSError("quota exceeded (simulated)")

        dio._before_rename = crash
        try:
            try:
                dm.save(S, path)
                ok, msg = False, "did not raise"
            except OSError as e:
                ok, msg = "quota" in str(e), str(e)
        finally:
            dio._before_rename = None
        assert_all(comm, ok, msg)
        comm.Barrier()
        assert_all(comm, os.listdir(shared_dir) == [], f"left: {os.listdir(shared_dir)}")
        dm.save(S, path)
        comm.Barrier()
        if comm.rank == 0:  # replace the data with another matrix behind the sidecar's back
            scipy.sparse.save_npz(path, (2 * ref).tocsr(), compressed=False)
        comm.Barrier()
        try:
            dm.load(path, grid=grid)
            ok, msg = False, "stale file loaded"
        except ValueError as e:
            ok, msg = "stale or damaged" in str(e), str(e)
        assert_all(comm, ok, msg)


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
