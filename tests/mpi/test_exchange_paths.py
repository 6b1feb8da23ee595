"""The exchange engine's two copy paths agree: rectangle copies along runs of consecutive
rows and columns, and numpy's fancy indexing for layouts too fragmented for that."""

import importlib

import numpy as np
import pytest

import distmat as dm
from distmat.testing import assert_all, subgrids

pytestmark = pytest.mark.mpi
engine = importlib.import_module("distmat.redistribute")   # the module, not the function


def _moves(grid, a):
    """Redistributions, a transpose and a gather of ``a`` (global ndarray) on ``grid``."""
    out = []
    for blk in [(1, 1), (3, 2), (8, 8), (5, 13)]:
        A = dm.from_global(a, grid=grid, block=blk, root=None)
        for nb in [(1, 1), (4, 3), (16, 16)]:
            out.append(A.redistribute(block=nb).gather(None))
        out.append(A.T.gather(None))
        out.append(A.redistribute(block=(2, 5)).T.gather(None))
    return out


def test_run_copies_and_fancy_indexing_agree(comm, monkeypatch):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((37, 29)) + 1j * rng.standard_normal((37, 29))
    for shape, grid in subgrids(comm, [(1, 1), (1, 2), (2, 1), (2, 2), (1, 3), (3, 1)]):
        bad = []
        if grid is not None:
            with monkeypatch.context() as m:
                m.setattr(engine, "MAX_RUN_COPIES", 10 ** 9)   # always rectangle runs
                runs = _moves(grid, a)
                m.setattr(engine, "MAX_RUN_COPIES", 0)         # always fancy indexing
                fancy = _moves(grid, a)
            for i, (x, y) in enumerate(zip(runs, fancy, strict=True)):
                want = a.T if x.shape == a.T.shape and x.shape != a.shape else a
                if not (np.array_equal(x, y) and np.array_equal(x, want)):
                    bad.append(f"move {i}")
        assert_all(comm, not bad, f"grid {shape}: " + ", ".join(bad))
