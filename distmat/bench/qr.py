"""QR benchmark: TSQR of a tall-skinny matrix and blocked Householder QR of a square one.

Run::

    mpiexec -n 2 python -m mpi4py -m distmat.bench.qr [--m 1000000] [--n 32] \\
        [--square 2048] [--block 128] [--reps 2] [--out results/qr.jsonl]

One row per kind, OSU / HPL style, float64, one BLAS thread per rank:

- ``tsqr-qr``: ``Q`` and ``R`` of the ``m x n`` matrix by TSQR on a ``P x 1`` grid (rows in
  blocks of ``ceil(m / P)``, the natural layout of a tall-skinny matrix; ``--tsqr-grid 2d``
  uses the default grid, which adds one all-to-all each way).  Flops ``2 (2 m n^2 - 2 n^3 / 3)``
  (R, then as many again for Q).  Reference: ``numpy.linalg.qr(a)`` (reduced, forms Q) on rank
  0, one thread, in the same run.
- ``tsqr-r``: ``R`` only (``want_q=False``), flops ``2 m n^2 - 2 n^3 / 3``, against
  ``numpy.linalg.qr(a, mode="r")``.
- ``householder``: ``dm.linalg.qr(A, method="householder")`` of an ``N x N`` matrix (``--square``,
  0 to skip) on the default grid with ``--block``, Q and R, flops ``8 N^3 / 3``, against
  ``scipy.linalg.qr(a, mode="economic")`` on rank 0.

Columns: ``time s`` is the best over ``--reps`` of the slowest rank (after a barrier and a
warm-up); ``1t s`` the single-process reference time; ``speedup`` = ``1t s / time s``;
``ratio`` = GFLOP/s over ``p`` times the reference's (parallel efficiency against one core);
``MPI%`` the share of one profiled run the slowest rank spent inside MPI; ``fac`` and
``orth`` ScaLAPACK's ``||A - Q R||_1 / (||A||_1 N eps)`` and ``||I - Q^T Q||_1 / (N eps)``
(``N = max(m, n)``), PASSED when both are <= 5.  While rank 0 times the reference the other
ranks sleep in a non-blocking barrier.  Rows also go to ``--out`` as JSON Lines.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone

import numpy as np
import scipy.linalg as sla
from mpi4py import MPI
from threadpoolctl import threadpool_info, threadpool_limits

import distmat as dm
from distmat.bench.common import best as _best
from distmat.bench.common import finish, wait_quietly
from distmat.bench.common import mpi_share as _profiled
from distmat.linalg.qr import replicated_to_dist
from distmat.linalg.tsqr import tsqr


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mpi4py -m distmat.bench.qr",
                                description=__doc__.split("\n")[0])
    p.add_argument("--m", type=int, default=1_000_000, help="rows of the tall-skinny matrix")
    p.add_argument("--n", type=int, default=32, help="columns of the tall-skinny matrix")
    p.add_argument("--square", type=int, default=2048,
                   help="order of the square blocked-Householder case (0: skip)")
    p.add_argument("--block", type=int, default=128, help="storage block of the square case")
    p.add_argument("--tsqr-grid", choices=("rows", "2d"), default="rows",
                   help="TSQR input on a P x 1 grid (rows) or the default grid (2d)")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--out", default="results/qr.jsonl", help="JSON Lines file ('' = none)")
    return p.parse_args(argv)






def _reference(grid: dm.ProcessGrid, fn) -> float:
    """Seconds of ``fn()`` on rank 0 (best of 2 after a warm-up), broadcast; others sleep."""
    t = np.zeros(1)
    if grid.rank == 0:
        fn()
        best = np.inf
        for _ in range(2):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        t[0] = best
        grid.comm.Ibarrier().Wait()
    else:
        wait_quietly(grid.comm)
    grid.comm.Bcast(t, 0)
    return float(t[0])


def _ratios(A: dm.DistMatrix, Q: dm.DistMatrix, R: dm.DistMatrix) -> tuple[float, float]:
    """ScaLAPACK's factorization and orthogonality ratios, computed distributed."""
    m, n = A.shape
    eps = float(np.finfo(A.dtype).eps)
    big = max(m, n)
    res = A - dm.matmul(Q, R)
    fac = dm.norm(res, 1) / (dm.norm(A, 1) * big * eps)
    G = dm.matmul(Q, Q, trans_a=True)
    orth = dm.norm(G - dm.eye(G.shape[0], grid=G.grid, block=G.block), 1) / (big * eps)
    return float(fac), float(orth)




def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    world = MPI.COMM_WORLD
    p = world.Get_size()
    limiter = threadpool_limits(limits=1, user_api="blas")
    rows_grid = dm.ProcessGrid(world, (p, 1))
    grid = dm.ProcessGrid(world)
    rank0 = grid.rank == 0

    def say(msg: str, err: bool = False) -> None:
        if rank0:
            print(msg, file=sys.stderr if err else sys.stdout, flush=True)

    blas = [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for d in threadpool_info() if d.get("user_api") == "blas"]
    say(f"# distmat.bench.qr  {datetime.now(timezone.utc).isoformat(timespec='seconds')}  "
        f"ranks {p}  tall {args.m} x {args.n} ({args.tsqr_grid} grid)  square {args.square} "
        f"block {args.block}")
    for b in blas:
        say(f"# BLAS {b['internal_api']} {b['version']} {b['architecture']} threads "
            f"{b['num_threads']}")
    say("# time = best of reps of the slowest rank; 1t = numpy/scipy on one process, one thread;"
        " speedup = 1t s / time s; ratio = GFLOP/s / (p x 1t GFLOP/s)")
    say(f"# {'ranks':>5} {'grid':>5} {'kind':>11} {'m':>8} {'n':>5} {'time s':>8} "
        f"{'GFLOP/s':>8} {'1t s':>8} {'speedup':>7} {'ratio':>6} {'MPI%':>5} {'fac':>7} "
        f"{'orth':>7} {'result':>7}")
    rows, allok = [], True

    def emit(kind: str, g: dm.ProcessGrid, m: int, n: int, t: float, flops: float, ref: float,
             mpi: float, fac: float | None, orth: float | None, times: list[float]) -> None:
        nonlocal allok
        ok = fac is None or (fac <= 5.0 and orth <= 5.0)
        allok &= ok
        gf = flops / t / 1e9
        ratio = (flops / ref / 1e9) and gf / (p * flops / ref / 1e9)
        row = {"bench": "qr", "kind": kind, "ranks": p, "grid": list(g.shape), "m": m, "n": n,
               "dtype": "float64", "time_s": t, "times_s": times, "gflops": gf,
               "flops": flops, "ref_1t_s": ref, "speedup": ref / t, "ratio": ratio,
               "mpi_share": mpi, "fac": fac, "orth": orth, "passed": ok,
               "block": args.block if kind == "householder" else None, "blas": blas}
        rows.append(row)
        fs = (f"{fac:>7.3f} {orth:>7.3f}" if fac is not None else f"{'-':>7} {'-':>7}")
        say(f"  {p:>5} {g.shape[0]:>2}x{g.shape[1]:<2} {kind:>11} {m:>8} {n:>5} {t:>8.4f} "
            f"{gf:>8.2f} {ref:>8.4f} {ref / t:>7.3f} {ratio:>6.3f} {100 * mpi:>5.1f} {fs} "
            f"{'PASSED' if ok else 'FAILED':>7}")

    # ---- TSQR
    m, n = args.m, args.n
    tg = rows_grid if args.tsqr_grid == "rows" else grid
    blk = (-(-m // p), n) if args.tsqr_grid == "rows" else (args.block, args.block)
    say(f"# progress: numpy.linalg.qr {m} x {n} on rank 0", err=True)
    a0 = np.random.default_rng(1).uniform(-1, 1, (m, n)) if rank0 else None
    ref_q = _reference(grid, lambda: np.linalg.qr(a0))
    ref_r = _reference(grid, lambda: np.linalg.qr(a0, mode="r"))
    a0 = None  # free the reference copy
    A = dm.random((m, n), seed=3, low=-1.0, grid=tg, block=blk)
    fl_r = 2.0 * m * n * n - 2.0 * n ** 3 / 3.0
    say("# progress: tsqr", err=True)
    t, times, (Q, R) = _best(tg.comm, lambda: tsqr(A), args.reps, args.warmup)
    mpi = _profiled(tg, lambda: tsqr(A))
    fac, orth = _ratios(A, Q, replicated_to_dist(R, tg, A.block))
    Q = None
    emit("tsqr-qr", tg, m, n, t, 2 * fl_r, ref_q, mpi, fac, orth, times)
    t, times, _ = _best(tg.comm, lambda: tsqr(A, want_q=False), args.reps, args.warmup)
    mpi = _profiled(tg, lambda: tsqr(A, want_q=False))
    emit("tsqr-r", tg, m, n, t, fl_r, ref_r, mpi, None, None, times)
    A = None

    # ---- blocked Householder on a square matrix
    N = args.square
    if N > 0:
        say(f"# progress: scipy.linalg.qr {N} x {N} on rank 0", err=True)
        s0 = np.asfortranarray(np.random.default_rng(2).uniform(-1, 1, (N, N))) if rank0 \
            else None
        ref = _reference(grid, lambda: sla.qr(s0, mode="economic", check_finite=False))
        s0 = None
        S = dm.random((N, N), seed=5, low=-1.0, grid=grid, block=(args.block, args.block))
        say("# progress: householder", err=True)
        t, times, (Q, R) = _best(grid.comm, lambda: dm.linalg.qr(S, method="householder"),
                                 args.reps, args.warmup)
        mpi = _profiled(grid, lambda: dm.linalg.qr(S, method="householder"))
        fac, orth = _ratios(S, Q, R)
        emit("householder", grid, N, N, t, 8.0 * N ** 3 / 3.0, ref, mpi, fac, orth, times)

    return finish(say, args.out, rows, allok, rank0, grids=[grid, rows_grid],
                  limiter=limiter)


if __name__ == "__main__":
    sys.exit(main())
