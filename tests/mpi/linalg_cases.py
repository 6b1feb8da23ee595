"""Helpers shared by the dense-solver MPI tests (imported by test_linalg_*.py)."""

import itertools
from contextlib import contextmanager

import numpy as np

from distmat.linalg import triangular as tri


def inf(x):
    """Infinity norm, 0 for an empty array."""
    return np.linalg.norm(x, np.inf) if x.size else 0.0


@contextmanager
def trsm_path(replicated):
    """Solve with the replicated-right-hand-side TRSM (True) or the distributed one (False)."""
    old = tri.REPLICATE_NRHS
    tri.REPLICATE_NRHS = old if replicated else -1
    try:
        yield
    finally:
        tri.REPLICATE_NRHS = old


def sample_cases(shape, count, sizes, blocks, panels, nrhs, salt=0):
    """A deterministic sample of (n, block, panel, nrhs, dtype) cases for one grid shape.

    Only cases with at most 12 panel steps are drawn (collective latency dominates on
    oversubscribed ranks); the seed depends on the grid shape and ``salt``.
    """
    all_cases = [c for c in itertools.product(sizes, blocks, panels, nrhs,
                                              (np.float64, np.float32))
                 if -(-c[0] // (c[2] or 128)) <= 12]
    rng = np.random.default_rng(shape[0] * 10 + shape[1] + 100 * salt)
    pick = rng.choice(len(all_cases), size=count, replace=False)
    return [all_cases[i] for i in sorted(pick)]
