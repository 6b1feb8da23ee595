"""Dense solver benchmark: LU and Cholesky factor + solve, and the mixed-precision solve.

Run (``make bench-solve`` runs it on 1 and 2 ranks)::

    mpiexec -n 2 python -m mpi4py -m distmat.bench.solve [--n 2048 4096] \\
        [--kind lu chol mixed mixed-pos] [--block B] [--panel N] [--out results/solve.jsonl]

One row per (n, kind), OSU / HPL style, float64 input, ``nrhs`` right-hand sides (default 1):

- ``factor s``: best over ``--reps`` runs of the slowest rank's factorization time (after a
  barrier and ``--warmup`` runs); ``solve s``: factor + solve, the same way;
- ``GFLOP/s``: factorization rate, ``2 n^3 / 3`` flops for LU and ``n^3 / 3`` for Cholesky;
- ``1t ref``: single-thread scipy ``lu_factor`` / ``cho_factor`` rate on rank 0 measured in the
  same run (the other ranks sleep in a non-blocking barrier); ``ratio``: GFLOP/s over ``p``
  times that.  For the mixed rows the rate counts the float64 flops over the whole solve
  time, and ``ratio`` is the speed-up over the float64 solve of the same kind in this run
  (that row runs first, and is added when not asked for);
- ``MPI%``: the share of one profiled factor + solve the slowest rank spent inside MPI;
- ``resid``: ScaLAPACK's ``||A x - b|| / (||A|| ||x|| n eps)`` (float64 eps), PASSED at
  <= 1 (<= 3 for Cholesky); mixed rows also give the refinement steps and whether it fell back.

Each rank runs one BLAS thread (threadpoolctl).  Rows also go to ``--out`` as JSON Lines.
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
from distmat.bench.common import finish, wait_quietly
from distmat.bench.common import timed as _timed
from distmat.linalg.refine import residual

KINDS = ("lu", "chol", "mixed", "mixed-pos")


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mpi4py -m distmat.bench.solve",
                                description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[2048, 4096], help="matrix orders")
    p.add_argument("--kind", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--nrhs", type=int, default=1, help="right-hand sides")
    p.add_argument("--block", type=int, default=None,
                   help="storage block (square); on 1 x P grids also the panel width; default "
                        "256 for the LU rows and 128 for the Cholesky rows, the faster of the "
                        "two for each on this 2-core machine")
    p.add_argument("--panel", type=int, default=None, help="algorithmic panel width")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--grid", type=int, nargs=2, default=None, metavar=("PR", "PC"))
    p.add_argument("--out", default="results/solve.jsonl", help="JSON Lines file ('' = none)")
    return p.parse_args(argv)


def _flops(kind: str, n: int) -> float:
    return (2.0 if kind in ("lu", "mixed") else 1.0) * n ** 3 / 3.0


def scipy_gflops(kind: str, n: int, reps: int) -> float:
    """Single-thread scipy lu_factor / cho_factor rate (best of ``reps`` after a warm-up)."""
    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, (n, n))
    if kind != "lu":
        a = a + a.T + 2 * n * np.eye(n)
    fn = sla.lu_factor if kind == "lu" else sla.cho_factor
    a = np.asfortranarray(a)
    best = np.inf
    fn(a)
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(a)  # copies a: no overwrite, like the distributed factorizations
        best = min(best, time.perf_counter() - t0)
    return _flops(kind, n) / best / 1e9


BLOCK = {"lu": 256, "mixed": 256, "chol": 128, "mixed-pos": 128}


def _block(kind: str, args) -> int:
    return args.block or BLOCK[kind]


def _matrices(grid: dm.ProcessGrid, n: int, kind: str, args) -> tuple[dm.DistMatrix, ...]:
    blk = (_block(kind, args), _block(kind, args))
    A = dm.random((n, n), seed=21, low=-1.0, grid=grid, block=blk)
    if kind in ("chol", "mixed-pos"):
        A = A + A.T + dm.eye(n, grid=grid, block=blk) * (2.0 * n)
    B = dm.random((n, args.nrhs), seed=22, low=-1.0, grid=grid, block=(blk[0], 1))
    return A, B




def _run_case(grid: dm.ProcessGrid, n: int, kind: str, args) -> dict:
    comm = grid.comm
    A, B = _matrices(grid, n, kind, args)
    pos = kind in ("chol", "mixed-pos")
    assume = "pos" if pos else "gen"
    refine = "mixed" if kind.startswith("mixed") else None

    def factor():
        if pos:
            return dm.linalg.cho_factor(A, panel=args.panel)   # upper, as scipy's default
        return dm.linalg.lu_factor(A, panel=args.panel)

    def solve():
        return dm.linalg.solve(A, B, assume_a=assume, refine=refine,
                               panel=args.panel)

    for _ in range(args.warmup):
        solve()
    t_fac = [] if refine else [_timed(comm, factor)[0] for _ in range(args.reps)]
    t_sol = []
    X = None
    for _ in range(args.reps):
        t, X = _timed(comm, solve)
        t_sol.append(t)
    with dm.profile(grid) as prof:
        tprof, _ = _timed(comm, solve)
    mpi_s = prof.total.seconds.max
    R = residual(A, X, B)   # A holds both triangles
    eps = float(np.finfo(np.float64).eps)
    den = dm.norm(A, np.inf) * dm.norm(X, np.inf) * n * eps
    resid = dm.norm(R, np.inf) / den if den else 0.0
    best_sol = min(t_sol)
    best_fac = min(t_fac) if t_fac else best_sol
    row = {"factor_s": best_fac if t_fac else None, "solve_s": best_sol,
           "factor_times_s": t_fac, "solve_times_s": t_sol,
           "gflops": _flops(kind, n) / best_fac / 1e9,
           "mpi_share": mpi_s / tprof if tprof > 0 else 0.0,
           "resid": float(resid), "passed": bool(resid <= (3.0 if pos else 1.0))}
    info = getattr(X, "refine_info", None)
    if info is not None:
        row.update(iterations=info.iterations, fallback=info.fallback, reason=info.reason)
    return row


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    world = MPI.COMM_WORLD
    grid = dm.ProcessGrid(world, tuple(args.grid) if args.grid else None)
    rank0 = grid.rank == 0
    p = grid.size
    limiter = threadpool_limits(limits=1, user_api="blas")

    def say(msg: str, err: bool = False) -> None:
        if rank0:
            print(msg, file=sys.stderr if err else sys.stdout, flush=True)

    blas = [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                   "filepath")} for d in threadpool_info()
            if d.get("user_api") == "blas"]
    say(f"# distmat.bench.solve  {datetime.now(timezone.utc).isoformat(timespec='seconds')}  "
        f"ranks {p} grid {grid.shape[0]}x{grid.shape[1]} "
        f"block {args.block or '256 (LU) / 128 (Cholesky)'} panel "
        f"{args.panel or 'default'} nrhs {args.nrhs}")
    for b in blas:
        say(f"# BLAS {b['internal_api']} {b['version']} {b['architecture']} threads "
            f"{b['num_threads']}")
    say(f"# time = best of {args.reps} runs of the slowest rank (scipy reference: best of "
        f"{max(1, args.reps)}); ratio = GFLOP/s / (p x 1-thread scipy); "
        "mixed: ratio = float64 solve time / mixed solve time")
    say(f"# {'ranks':>5} {'grid':>5} {'n':>6} {'kind':>9} {'factor s':>9} {'solve s':>9} "
        f"{'GFLOP/s':>8} {'1t ref':>7} {'ratio':>6} {'MPI%':>5} {'resid':>8} {'iters':>5} "
        f"{'result':>7}")
    rows, allok = [], True
    ref_cache: dict[tuple[str, int], float] = {}
    f64_solve: dict[tuple[str, int], float] = {}
    # a mixed row's ratio is the speed-up over its float64 solve: run that one first
    bases = {"mixed": "lu", "mixed-pos": "chol"}
    kinds = sorted(set(args.kind) | {bases[k] for k in args.kind if k in bases}, key=KINDS.index)
    for n in args.n:
        for kind in kinds:
            base = "lu" if kind in ("lu", "mixed") else "chol"
            if (base, n) not in ref_cache:
                say(f"# progress: scipy 1-thread {base} n={n} on rank 0", err=True)
                g = np.zeros(1)
                if rank0:
                    g[0] = scipy_gflops(base, n, max(1, args.reps))
                    grid.comm.Ibarrier().Wait()
                else:
                    wait_quietly(grid.comm)
                grid.comm.Bcast(g, 0)
                ref_cache[(base, n)] = float(g[0])
            ref = ref_cache[(base, n)]
            say(f"# progress: n={n} {kind}", err=True)
            r = _run_case(grid, n, kind, args)
            if kind.startswith("mixed"):
                plain = f64_solve.get((base, n))
                ratio = plain / r["solve_s"] if plain else float("nan")
            else:
                f64_solve[(base, n)] = r["solve_s"]
                ratio = r["gflops"] / (p * ref)
            allok &= r["passed"]
            row = {"bench": "solve", "ranks": p, "grid": list(grid.shape), "n": n, "kind": kind,
                   "dtype": "float64", "block": _block(kind, args), "panel": args.panel,
                   "nrhs": args.nrhs, "scipy_1t_gflops": ref, "ratio": ratio, **r,
                   "blas": blas}
            rows.append(row)
            fac = f"{r['factor_s']:>9.4f}" if r["factor_s"] is not None else f"{'-':>9}"
            say(f"  {p:>5} {grid.shape[0]:>2}x{grid.shape[1]:<2} {n:>6} {kind:>9} {fac} "
                f"{r['solve_s']:>9.4f} {r['gflops']:>8.2f} {ref:>7.2f} {ratio:>6.3f} "
                f"{100 * r['mpi_share']:>5.1f} {r['resid']:>8.2g} "
                f"{r.get('iterations', '-')!s:>5} {'PASSED' if r['passed'] else 'FAILED':>7}")
    return finish(say, args.out, rows, allok, rank0, grids=[grid], limiter=limiter)


if __name__ == "__main__":
    sys.exit(main())
