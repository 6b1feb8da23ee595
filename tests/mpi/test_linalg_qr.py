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


def _raises(exc, fn, *words):
    """'' if ``fn()`` raises ``exc`` whose message holds ``words``; else what went wrong."""
    try:
        fn()
    except exc as e:
        msg = str(e)
        return "" if all(w in msg for w in words) else f"message {msg!r} lacks {words}"
    except Exception as e:  # noqa: BLE001
        return f"raised {type(e).__name__}: {e}"
    return f"did not raise {exc.__name__}"
