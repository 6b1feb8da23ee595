"""Rank-local pieces of distmat.sparse: block-size checks, stencils, block extraction, kernels."""

import numpy as np
import pytest
import scipy.sparse as sp

from distmat.sparse.bsr import check_blocksize, nblocks
from distmat.sparse.convert import scipy_to_blocks
from distmat.sparse.generators import stencil_triplets
from distmat.sparse.spmm import local_product


def test_check_blocksize():
    assert check_blocksize(4, (10, 3)) == 4
    assert check_blocksize((3, 3), (2, 10)) == 3
    for bad in (0, -1, 2.0, True, (2, 3), "4"):
        with pytest.raises(ValueError, match="blocksize"):
            check_blocksize(bad, (10, 10))
    with pytest.raises(ValueError, match=r"larger than both dimensions of the shape \(5, 6\)"):
        check_blocksize(7, (5, 6))
    assert nblocks(10, 3) == 4 and nblocks(9, 3) == 3 and nblocks(0, 3) == 0


@pytest.mark.parametrize("dims", [(4,), (3, 5), (2, 3, 4)])
def test_stencil_matches_kronsum(dims):
    def T(k):
        return sp.diags_array([-np.ones(k - 1), 2 * np.ones(k), -np.ones(k - 1)],
                              offsets=[-1, 0, 1])

    ref = T(dims[-1])
    for d in reversed(dims[:-1]):
        ref = sp.kronsum(ref, T(d))
    n = int(np.prod(dims))
    r, c, v = stencil_triplets(np.arange(n), dims)
    A = sp.coo_array((v, (r, c)), shape=(n, n))
    assert abs(A - ref).max() == 0


def test_scipy_to_blocks_pads_and_sums_duplicates():
    A = sp.coo_array(([1.0, 2.0, 5.0], ([0, 0, 6], [0, 0, 4])), shape=(7, 5))
    bi, bj, data, dt, shape = scipy_to_blocks(A, 3)
    assert shape == (7, 5) and dt == np.float64 and data.shape == (2, 3, 3)
    assert list(zip(bi.tolist(), bj.tolist(), strict=True)) == [(0, 0), (2, 1)]
    assert data[0, 0, 0] == 3.0 and data[1, 0, 1] == 5.0 and data.sum() == 8.0


@pytest.mark.parametrize("bs,k", [(3, 1), (16, 8), (20, 5)])
def test_local_product_matches_dense(bs, k):
    rng = np.random.default_rng(bs)
    nlbr, nJ = 5, 4
    mask = rng.random((nlbr, nJ)) < 0.5
    mask[2] = False  # an empty block row
    li, pos = np.nonzero(mask)
    data = rng.standard_normal((li.size, bs, bs))
    indptr = np.r_[0, np.cumsum(mask.sum(axis=1))]
    Xn = rng.standard_normal((nJ, bs, k))
    Y = local_product(indptr, pos, data, Xn)
    dense = np.zeros((nlbr * bs, nJ * bs))
    for t in range(li.size):
        dense[li[t] * bs:(li[t] + 1) * bs, pos[t] * bs:(pos[t] + 1) * bs] = data[t]
    assert np.allclose(Y.reshape(-1, k), dense @ Xn.reshape(-1, k))


def test_default_blocksize():
    assert check_blocksize(None, (10, 3)) == 10
    assert check_blocksize(None, (1000, 3)) == 64
    assert check_blocksize(None, (0, 0)) == 1
