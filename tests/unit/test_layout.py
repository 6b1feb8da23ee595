"""Exhaustive checks of the block-cyclic index math against a brute-force owner map."""

import itertools

import numpy as np
import pytest

from distmat import rng
from distmat.layout import (
    Layout,
    check_block,
    global_to_local,
    grid_shape_for,
    numroc,
    owned_indices,
    owner_of,
    panels,
    split_by_owner,
)


def brute_owner(n, nb, nprocs):
    return np.array([(g // nb) % nprocs for g in range(n)], dtype=np.int64)


@pytest.mark.parametrize("n", range(0, 26))
def test_numroc_owned_and_local_index_exhaustive(n):
    for nb, nprocs in itertools.product(range(1, 8), range(1, 6)):
        owners = brute_owner(n, nb, nprocs)
        total = 0
        for p in range(nprocs):
            expect = np.flatnonzero(owners == p)
            got = owned_indices(n, nb, p, nprocs)
            assert np.array_equal(got, expect), (n, nb, p, nprocs)
            assert numroc(n, nb, p, nprocs) == expect.size
            # local index of each owned global index is its position in storage order
            assert np.array_equal(global_to_local(expect, nb, nprocs), np.arange(expect.size))
            total += expect.size
        assert total == n
        assert np.array_equal(owner_of(np.arange(n), nb, nprocs), owners)


def test_layout_local_shapes_tile_the_matrix():
    for m, n, mb, nb, pr, pc in itertools.product((0, 1, 5, 13), (0, 2, 9), (1, 3, 7),
                                                  (1, 2, 5), (1, 2, 3), (1, 2, 4)):
        lay = Layout((m, n), (mb, nb), (pr, pc))
        seen = np.zeros((m, n), dtype=int)
        for r, c in itertools.product(range(pr), range(pc)):
            rows, cols = lay.rows(r), lay.cols(c)
            assert lay.local_shape(r, c) == (rows.size, cols.size)
            seen[np.ix_(rows, cols)] += 1
            assert np.all(lay.row_owner(rows) == r) and np.all(lay.col_owner(cols) == c)
        assert np.all(seen == 1)
        t = lay.transposed()
        assert t.shape == (n, m) and t.block == (nb, mb) and t.grid_shape == (pr, pc)


def test_grid_shape_for_is_near_square_factorisation():
    for p in range(1, 65):
        pr, pc = grid_shape_for(p)
        assert pr * pc == p and pr <= pc
        # no factorisation is squarer
        assert all(p % d or d <= pr for d in range(1, int(p**0.5) + 1))
    assert grid_shape_for(6) == (2, 3) and grid_shape_for(8) == (2, 4)
    with pytest.raises(ValueError):
        grid_shape_for(0)


def test_panels_cover_range():
    for n, w in itertools.product(range(0, 20), range(1, 8)):
        ps = list(panels(n, w))
        covered = [i for s, k in ps for i in range(s, s + k)]
        assert covered == list(range(n))
        assert all(1 <= k <= w for _, k in ps)
    with pytest.raises(ValueError):
        list(panels(5, 0))


@pytest.mark.parametrize("bad", [(0, 1), (1, -2), (1.5, 2), "ab", 3, (1, 2, 3), (True, 1), None])
def test_check_block_rejects(bad):
    with pytest.raises(ValueError, match="block"):
        check_block(bad)


def test_check_block_accepts_numpy_ints():
    assert check_block((np.int64(3), 4)) == (3, 4)


def test_split_by_owner_groups_stably():
    gen = np.random.default_rng(0)
    for size, parts in itertools.product(range(0, 30), range(1, 5)):
        keys = gen.integers(0, parts, size)
        perm, off = split_by_owner(keys, parts)
        order = np.arange(size) if perm is None else perm
        for k in range(parts):
            seg = order[off[k]:off[k + 1]]
            assert np.array_equal(seg, np.flatnonzero(keys == k))


def test_rng_depends_only_on_seed_and_position():
    rows, cols = np.arange(7), np.arange(5)
    full = rng.uniform01(rows, cols, 5, seed=3)
    part = rng.uniform01(np.array([6, 2]), np.array([4, 0]), 5, seed=3)
    assert np.array_equal(part, full[np.ix_([6, 2], [4, 0])])
    assert not np.array_equal(full, rng.uniform01(rows, cols, 5, seed=4))
    assert full.min() >= 0.0 and full.max() < 1.0


def test_rng_statistics_are_plausible():
    u = rng.uniform01(np.arange(400), np.arange(500), 500, seed=11)
    z = rng.standard_normal(np.arange(400), np.arange(500), 500, seed=11)
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    # neighbouring entries are uncorrelated
    assert abs(np.corrcoef(u[:, :-1].ravel(), u[:, 1:].ravel())[0, 1]) < 0.01
