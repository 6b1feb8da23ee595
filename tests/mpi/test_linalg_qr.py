"""QR factorizations: TSQR (distmat.linalg.tsqr) and dm.linalg.qr (blocked Householder / TSQR).

Accuracy is judged by ScaLAPACK's QR test ratios (pdqrdriver; 1-norms, eps of the working
precision, ``N = max(m, n)``; NaN fails), threshold 5.0:
``||A - Q R|| / (||A|| N eps)`` and ``||I - Q^H Q|| / (N eps)``.
Every rank builds the same inputs from a fixed seed; cases are sampled deterministically per
grid so the file stays fast at 4 ranks.
"""

import numpy as np
import pytest

import distmat as dm
from distmat.linalg.tsqr import tsqr
from distmat.testing import assert_all, scaled_error, subgrids
from distmat.testing import raises as _raises

pytestmark = pytest.mark.mpi

THRESH = 5.0


def one(x):
    """1-norm, 0 for an empty array."""
    return np.linalg.norm(x, 1) if x.size else 0.0


def qr_ratios(a, q, r, dtype):
    """(factorization, orthogonality) ratios in float64 (complex128 for complex input)."""
    m, n = a.shape
    up = np.complex128 if np.iscomplexobj(a) else np.float64
    a, q, r = a.astype(up), q.astype(up), r.astype(up)
    big = max(m, n)
    fac = scaled_error(one(a - q @ r), one(a), n=big, dtype=dtype)
    orth = scaled_error(one(np.eye(q.shape[1]) - q.conj().T @ q), n=big, dtype=dtype)
    return float(fac), float(orth)


def _same_everywhere(comm, x):
    """True on every rank iff the array ``x`` is bitwise the same on every rank."""
    ref = comm.bcast(np.ascontiguousarray(x).tobytes() if comm.Get_rank() == 0 else None, 0)
    return ref == np.ascontiguousarray(x).tobytes()


def _matrix(m, n, dt, seed):
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1, 1, (m, n))
    if np.dtype(dt).kind == "c":
        a = a + 1j * rng.uniform(-1, 1, (m, n))
    return a.astype(dt)


# ------------------------------------------------------------------------------------ TSQR

TSQR_CASES = [  # m, n, block, dtype
    (1, 1, (1, 1), np.float64), (2, 1, (1, 1), np.float32), (3, 3, (2, 2), np.float64),
    (5, 4, (1, 3), np.float64), (9, 2, (4, 1), np.float32), (17, 5, (3, 2), np.float64),
    (40, 40, (7, 7), np.float64), (61, 13, (5, 6), np.float32), (100, 7, (7, 3), np.float64),
    (250, 33, (16, 8), np.float32), (300, 64, (64, 64), np.float64),
    (23, 6, (4, 5), np.complex128),
]


@pytest.mark.grids
def test_tsqr_sweep(comm):
    """Q and R meet the ratios, R is upper triangular with diag >= 0 and equal on every rank."""
    for shape, grid in subgrids(comm):
        bad = []
        if grid is not None:
            for m, n, block, dt in TSQR_CASES:
                a = _matrix(m, n, dt, m * 100 + n)
                A = dm.from_global(a, grid=grid, block=block, root=None)
                Q, R = tsqr(A)
                q = Q.gather(None)
                fac, orth = qr_ratios(a, q, R, dt)
                ok = (fac <= THRESH and orth <= THRESH and R.shape == (n, n)
                      and np.array_equal(R, np.triu(R)) and np.all(np.diagonal(R).real >= 0)
                      and np.all(np.diagonal(R).imag == 0) and Q.block == block
                      and Q.shape == (m, n) and Q.dtype == dt and R.dtype == dt)
                _, R2 = tsqr(A, want_q=False)
                ok = ok and np.allclose(R2, R, rtol=0, atol=50 * np.finfo(dt).eps * one(a))
                if not ok:
                    bad.append(f"m={m} n={n} block={block} {np.dtype(dt).name}: "
                               f"fac {fac:.3g} orth {orth:.3g}")
                if not _same_everywhere(grid.comm, R):
                    bad.append(f"m={m} n={n}: R differs between ranks")
        assert_all(comm, not bad, f"grid {shape}: " + "; ".join(bad[:3]))


def test_tsqr_tall_case_and_rank_independence(comm):
    """m = 100000, n = 64: ratios hold and R matches numpy's (up to signs) on any grid."""
    m, n = 100000, 64
    with dm.ProcessGrid(comm, (comm.Get_size(), 1)) as grid:
        A = dm.random((m, n), seed=11, low=-1.0, grid=grid, block=(4096, n))
        Q, R = tsqr(A)
        a = A.gather(None)
        q = Q.gather(None)
        fac, orth = qr_ratios(a, q, R, np.float64)
        r_np = np.linalg.qr(a, mode="r")
        r_np = np.sign(np.diagonal(r_np))[:, None] * r_np
        close = np.abs(R - r_np).max() <= 1e-12 * np.abs(r_np).max()
        assert_all(comm, fac <= THRESH and orth <= THRESH and close,
                   f"fac {fac:.3g} orth {orth:.3g} close to numpy {close}")
    with dm.ProcessGrid(comm) as grid:  # the default grid moves the rows first
        B = dm.random((20000, 40), seed=3, low=-1.0, grid=grid, block=(64, 8),
                      dtype=np.float32)
        Q, R = tsqr(B)
        fac, orth = qr_ratios(B.gather(None), Q.gather(None), R, np.float32)
        assert_all(comm, fac <= THRESH and orth <= THRESH, f"float32: {fac:.3g} {orth:.3g}")


def test_tsqr_fewer_rows_than_ranks(comm):
    """Ranks holding no rows (m < P, or a row block leaving ranks empty) take part."""
    for shape, grid in subgrids(comm, [(1, 1), (2, 1), (3, 1), (4, 1), (1, 4), (2, 2)]):
        bad = []
        if grid is not None:
            for m, n, block in [(1, 1, (1, 1)), (2, 2, (1, 1)), (3, 1, (5, 5)), (6, 2, (6, 1)),
                                (5, 5, (2, 1))]:
                a = _matrix(m, n, np.float64, m + 7 * n)
                A = dm.from_global(a, grid=grid, block=block, root=None)
                Q, R = tsqr(A)
                fac, orth = qr_ratios(a, Q.gather(None), R, np.float64)
                if not (fac <= THRESH and orth <= THRESH):
                    bad.append(f"m={m} n={n} block={block}: {fac:.3g} {orth:.3g}")
        assert_all(comm, not bad, f"grid {shape}: " + "; ".join(bad))


def test_tsqr_errors_and_ledger(comm):
    with dm.ProcessGrid(comm) as grid:
        W = dm.ones((3, 5), grid=grid)
        err = _raises(dm.ShapeMismatchError, lambda: tsqr(W), "(3, 5)", "m >= n")
        assert_all(comm, not err, err)
        err = _raises(TypeError, lambda: tsqr(np.ones((5, 3))), "DistMatrix")
        assert_all(comm, not err, err)
        A = dm.random((400, 8), seed=1, grid=grid, block=(16, 4))
        with dm.profile(grid) as prof:
            tsqr(A)
        levels = int(np.ceil(np.log2(grid.size))) if grid.size > 1 else 0
        st = prof.ops.get("tsqr")
        # per rank: one all-to-all each way on a 2D grid (<= P - 1 messages each), and at
        # most one tree message per level up and down plus the broadcast of R
        limit = 2 * (grid.size - 1) + 2 * levels + grid.size
        ok = grid.size == 1 or (st is not None and st.msgs_sent.max <= limit)
        assert_all(comm, ok, f"ledger {None if st is None else st.as_dict()}")


# ------------------------------------------------------------------------ dm.linalg.qr

SIZES = [1, 2, 3, 5, 8, 13, 21, 34, 47, 60]
BLOCKS = [(1, 1), (2, 3), (3, 2), (4, 4), (5, 7), (7, 1), (6, 5), (7, 7), (1, 6)]


def _qr_cases(shape, count):
    """A deterministic sample of (m, n, block, dtype) over tall, square and wide shapes.

    At most ~25 panel steps per case (a step is several collectives; ranks oversubscribe).
    """
    import itertools

    cases = [c for c in itertools.product(SIZES, SIZES, BLOCKS, (np.float64, np.float32))
             if min(c[0], c[1]) / c[2][1] <= 25]
    rng = np.random.default_rng(shape[0] * 10 + shape[1])
    pick = rng.choice(len(cases), size=count, replace=False)
    return [cases[i] for i in sorted(pick)]


@pytest.mark.grids
def test_qr_householder_sweep(comm):
    """Blocked Householder QR over sizes 1..60 (tall, square, wide), blocks 1..7."""
    for shape, grid in subgrids(comm):
        bad = []
        if grid is not None:
            cases = _qr_cases(shape, 14) + [(60, 60, (7, 7), np.float64),
                                            (13, 60, (2, 3), np.float32),
                                            (60, 8, (1, 1), np.float64)]
            for m, n, block, dt in cases:
                a = _matrix(m, n, dt, m * 61 + n)
                A = dm.from_global(a, grid=grid, block=block, root=None)
                Q, R = dm.linalg.qr(A, method="householder")
                q, r = Q.gather(None), R.gather(None)
                fac, orth = qr_ratios(a, q, r, dt)
                k = min(m, n)
                r_only = dm.linalg.qr(A, mode="r", method="householder").gather(None)
                ok = (fac <= THRESH and orth <= THRESH and q.shape == (m, k)
                      and r.shape == (k, n) and np.array_equal(r, np.triu(r))
                      and np.all(np.diagonal(r) >= 0) and Q.block == block and R.block == block
                      and q.dtype == dt and r.dtype == dt and np.array_equal(r_only, r))
                if not ok:
                    bad.append(f"m={m} n={n} block={block} {np.dtype(dt).name}: "
                               f"fac {fac:.3g} orth {orth:.3g}")
        assert_all(comm, not bad, f"grid {shape}: " + "; ".join(bad[:3]))


def test_qr_auto_tsqr_panels_and_complex(comm):
    """method='auto' picks TSQR for tall-skinny; panel widths; complex128; R matches numpy."""
    from distmat.linalg.qr import choose_method

    ok_rule = (choose_method((1000, 32)) == "tsqr" and choose_method((100, 60)) == "householder"
               and choose_method((60, 100)) == "householder"
               and choose_method((10 ** 6, 300)) == "householder")
    assert_all(comm, ok_rule, "choose_method rule")
    for shape, grid in subgrids(comm, [(1, 1), (2, 2), (1, 3), (3, 1), (2, 1)]):
        bad = []
        if grid is not None:
            for m, n, block, method, panel, dt in [
                    (200, 12, (9, 4), "auto", None, np.float64),
                    (200, 12, (9, 4), "tsqr", None, np.float32),
                    (45, 37, (8, 8), "householder", 3, np.float64),
                    (45, 37, (8, 8), "householder", 100, np.float64),
                    (31, 40, (4, 6), "householder", None, np.complex128),
                    (90, 20, (5, 5), "auto", None, np.complex128)]:
                a = _matrix(m, n, dt, m + n)
                A = dm.from_global(a, grid=grid, block=block, root=None)
                with dm.profile(grid) as prof:
                    Q, R = dm.linalg.qr(A, method=method, panel=panel)
                q, r = Q.gather(None), R.gather(None)
                fac, orth = qr_ratios(a, q, r, dt)
                r_np = np.linalg.qr(a.astype(np.complex128 if np.iscomplexobj(a)
                                             else np.float64), mode="r")
                ph = np.diagonal(r_np) / np.abs(np.diagonal(r_np))
                r_np = np.conj(ph)[:, None] * r_np
                tol = 100 * np.finfo(dt).eps * np.abs(r_np).max() * max(m, n)
                if not (fac <= THRESH and orth <= THRESH and np.abs(r - r_np).max() <= tol
                        and set(prof.ops) <= {"qr"} and R.block == block):
                    bad.append(f"m={m} n={n} {method} panel={panel} {np.dtype(dt).name}: "
                               f"fac {fac:.3g} orth {orth:.3g} ops {sorted(prof.ops)}")
        assert_all(comm, not bad, f"grid {shape}: " + "; ".join(bad))


def test_qr_smaller_than_grid(comm):
    """Matrices with fewer rows or columns than the grid (ranks with empty local arrays)."""
    for shape, grid in subgrids(comm, [(2, 2), (1, 4), (4, 1), (2, 1), (1, 3), (3, 1)]):
        bad = []
        if grid is not None:
            for m, n in [(1, 1), (1, 3), (3, 1), (2, 2), (1, 5), (5, 2)]:
                a = _matrix(m, n, np.float64, 3 * m + n)
                A = dm.from_global(a, grid=grid, block=(1, 1), root=None)
                for method in ("householder", "auto"):
                    Q, R = dm.linalg.qr(A, method=method)
                    fac, orth = qr_ratios(a, Q.gather(None), R.gather(None), np.float64)
                    if not (fac <= THRESH and orth <= THRESH):
                        bad.append(f"m={m} n={n} {method}: {fac:.3g} {orth:.3g}")
            Z = dm.zeros((6, 4), grid=grid, block=(2, 2))  # zero columns: H = I, R = 0
            Q, R = dm.linalg.qr(Z, method="householder")
            q = Q.gather(None)
            if not (np.allclose(q.T @ q, np.eye(4)) and not np.any(R.gather(None))):
                bad.append("zero matrix")
        assert_all(comm, not bad, f"grid {shape}: " + "; ".join(bad))


def _scaled_ratios(a, q, r, scale, dt):
    """qr_ratios of ``a / scale`` (the products of huge entries overflow float64 itself)."""
    return qr_ratios((a.astype(np.float64) / scale), q, r.astype(np.float64) / scale, dt)


def test_qr_extreme_scaling(comm):
    """Columns whose squares overflow or underflow the working (or float64) precision."""
    for shape, grid in subgrids(comm, [(1, 1), (2, 1), (2, 2), (1, 3)]):
        bad = []
        if grid is not None:
            for scale, dt in ((1e25, np.float32), (1e-25, np.float32), (1e200, np.float64),
                              (1e-200, np.float64)):
                a = (_matrix(23, 11, np.float64, 5) * scale).astype(dt)
                A = dm.from_global(a, grid=grid, block=(3, 4), root=None)
                for method in ("householder", "tsqr"):
                    Q, R = dm.linalg.qr(A, method=method)
                    fac, orth = _scaled_ratios(a, Q.gather(None), R.gather(None), scale, dt)
                    if not (fac <= THRESH and orth <= THRESH):
                        bad.append(f"scale {scale:g} {method}: fac {fac:.3g} orth {orth:.3g}")
        assert_all(comm, not bad, f"grid {shape}: " + "; ".join(bad))


def test_qr_row_grid_lookahead(comm):
    """1 x P grids take the look-ahead path; GEMM chunks smaller than the local columns."""
    import sys

    qr_mod = sys.modules["distmat.linalg.qr"]
    for shape, grid in subgrids(comm, [(1, 2), (1, 3), (1, 4)]):
        bad = []
        if grid is not None:
            old = qr_mod.UPDATE_CHUNK
            qr_mod.UPDATE_CHUNK = 7
            try:
                for m, n, block, panel in [(130, 100, (16, 16), None), (90, 140, (8, 12), 5),
                                           (200, 33, (10, 4), None)]:
                    a = _matrix(m, n, np.float64, m + n)
                    A = dm.from_global(a, grid=grid, block=block, root=None)
                    Q, R = dm.linalg.qr(A, method="householder", panel=panel)
                    fac, orth = qr_ratios(a, Q.gather(None), R.gather(None), np.float64)
                    if not (fac <= THRESH and orth <= THRESH):
                        bad.append(f"m={m} n={n} block={block}: {fac:.3g} {orth:.3g}")
            finally:
                qr_mod.UPDATE_CHUNK = old
        assert_all(comm, not bad, f"grid {shape}: " + "; ".join(bad))


def test_qr_argument_errors(comm):
    with dm.ProcessGrid(comm) as grid:
        A = dm.random((7, 5), seed=1, grid=grid)
        W = dm.random((5, 7), seed=1, grid=grid)
        checks = [
            _raises(ValueError, lambda: dm.linalg.qr(A, mode="complete"), "mode", "complete"),
            _raises(ValueError, lambda: dm.linalg.qr(A, mode="raw"), "mode"),
            _raises(ValueError, lambda: dm.linalg.qr(A, method="givens"), "method"),
            _raises(ValueError, lambda: dm.linalg.qr(A, panel=0), "panel"),
            _raises(TypeError, lambda: dm.linalg.qr(np.ones((3, 3))), "DistMatrix"),
            _raises(dm.ShapeMismatchError, lambda: dm.linalg.qr(W, method="tsqr"), "(5, 7)"),
        ]
        for bad_value in (np.nan, np.inf):
            T = A.copy()
            if grid.rank == grid.size - 1 and T.local.size:
                T.local[0, 0] = bad_value
            checks.append(_raises(ValueError, lambda T=T: dm.linalg.qr(T), "infs"))
        bad = [c for c in checks if c]
        assert_all(comm, not bad, "; ".join(bad))
