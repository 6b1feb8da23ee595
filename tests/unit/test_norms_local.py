"""The rank-local pieces of the norms (no MPI): |A| by row chunks."""

import numpy as np

from distmat import norms


def test_abs_rows_chunks_and_integer_extremes(monkeypatch):
    monkeypatch.setattr(norms, "ROWS", 2)
    x = np.array([[-128, 3], [5, -2], [7, 1]], dtype=np.int8)
    got = np.vstack([b.copy() for _, b in norms._abs_rows(x)])
    assert got.dtype == np.float64
    assert np.array_equal(got, np.abs(x.astype(np.float64)))     # 128, not -128
    assert norms._local_max(x) == 128.0
    z = np.array([[3 + 4j, 0], [np.nan, 1]], dtype=np.complex64)
    assert np.isnan(norms._local_max(z))
    assert norms._local_max(z[:1]) == 5.0
    assert norms._local_max(np.zeros((0, 3))) == 0.0
