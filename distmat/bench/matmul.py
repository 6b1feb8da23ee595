"""SUMMA matmul benchmark: GFLOP/s against p x single-thread numpy, ledger bytes vs model.

Run (``make bench-matmul`` runs it on 1, 2 and 4 ranks)::

    mpiexec -n 2 python -m mpi4py -m distmat.bench.matmul [--n 1024 2048 4096] \\
        [--dtype float64 float32] [--form NN TN NT] [--comm-dtype float32] \\
        [--out results/matmul.jsonl]

One row per (n, dtype, form) case, OSU / HPL style:

- ``time``: the best over ``--reps`` runs of the slowest rank's time (after a barrier and
  ``--warmup`` runs);
- ``GFLOP/s``: ``2 n^3 / time`` (times 4 for complex types);
- ``ratio``: GFLOP/s over ``p`` times the single-thread numpy ``matmul`` rate measured in the
  same run, on rank 0 alone while the other ranks sleep in a non-blocking barrier;
- ``bytes/rank`` (mean over ranks of the bytes received, from the ledger of one profiled run)
  next to the SUMMA model's count (:func:`distmat.summa_plan.model_bytes`) and their ratio;
- ``MPI%``: the share of the profiled run's time the slowest rank spent inside MPI calls
  (including waits for broadcasts);
- ``check``: Freivalds' residual ratio (passes at <= 1), and PASSED/FAILED.  With
  ``--comm-dtype`` (compressed panels, :func:`distmat.matmul`'s ``comm_dtype=``) the model
  counts the narrower panels and the check is against the product of the rounded operands,
  which is what compressed SUMMA computes on every grid.

Each rank uses ``--threads`` BLAS threads (default 1: the target is p ranks x 1 thread); the
header says which BLAS library and kernel ran.  Rows also go to ``--out`` as JSON Lines.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from datetime import datetime, timezone

import numpy as np
from mpi4py import MPI
from threadpoolctl import threadpool_limits

import distmat as dm
from distmat import threads
from distmat.bench.common import finish, wait_quietly
from distmat.freivalds import Freivalds
from distmat.summa_kernels import comm_codec
from distmat.summa_plan import DEFAULT_PANEL, model_bytes

FORMS = {"NN": (False, False), "TN": (True, False), "NT": (False, True), "TT": (True, True)}


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mpi4py -m distmat.bench.matmul",
                                description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[1024, 2048, 4096],
                   help="matrix orders (square n x n products)")
    p.add_argument("--dtype", nargs="+", default=["float64", "float32"],
                   choices=["float32", "float64", "complex64", "complex128"])
    p.add_argument("--form", nargs="+", default=["NN", "TN", "NT"], choices=list(FORMS),
                   help="NN: A @ B, TN: A^T @ B, NT: A @ B^T, TT: A^T @ B^T")
    p.add_argument("--block", type=int, default=128, help="storage block (square)")
    p.add_argument("--panel", type=int, default=DEFAULT_PANEL, help="SUMMA panel width")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="BLAS threads per rank")
    p.add_argument("--grid", type=int, nargs=2, default=None, metavar=("PR", "PC"))
    p.add_argument("--comm-dtype", default=None,
                   choices=["float32", "float16", "bfloat16", "complex64"],
                   help="compressed operand panels (matmul's comm_dtype=); default off")
    p.add_argument("--out", default="results/matmul.jsonl", help="JSON Lines file ('' = none)")
    args = p.parse_args(argv)
    for dt in args.dtype:
        try:
            comm_codec(args.comm_dtype, np.dtype(dt))
        except (TypeError, ValueError) as e:
            p.error(f"--comm-dtype {args.comm_dtype} with --dtype {dt}: {e}")
    return args


def numpy_gflops(n: int, dtype: np.dtype, reps: int) -> float:
    """Single-thread numpy matmul rate for ``n x n`` (best of ``reps`` after one warm-up)."""
    gen = np.random.default_rng(1)
    a = gen.standard_normal((n, n)).astype(dtype)
    b = gen.standard_normal((n, n)).astype(dtype)
    c = np.empty((n, n), dtype=dtype)
    best = np.inf
    with threadpool_limits(limits=1, user_api="blas"):
        np.matmul(a, b, out=c)
        for _ in range(reps):
            t0 = time.perf_counter()
            np.matmul(a, b, out=c)
            best = min(best, time.perf_counter() - t0)
    return _flops(n, dtype) / best / 1e9


def _flops(n: int, dtype: np.dtype) -> float:
    return (8.0 if np.dtype(dtype).kind == "c" else 2.0) * n ** 3


def _run_case(grid: dm.ProcessGrid, n: int, dtype: np.dtype, form: str, args) -> dict:
    comm = grid.comm
    ta, tb = FORMS[form]
    blk = (args.block, args.block)
    A = dm.random((n, n), seed=11, dtype=dtype, grid=grid, block=blk)
    B = dm.random((n, n), seed=12, dtype=dtype, grid=grid, block=blk)
    C = dm.zeros((n, n), dtype=dtype, grid=grid, block=blk)
    codec = comm_codec(args.comm_dtype, dtype)

    def once() -> float:
        comm.Barrier()
        t0 = time.perf_counter()
        dm.matmul(A, B, trans_a=ta, trans_b=tb, out=C, panel=args.panel,
                  comm_dtype=args.comm_dtype)
        dt = np.array([time.perf_counter() - t0])
        comm.Allreduce(MPI.IN_PLACE, dt, op=MPI.MAX)
        return float(dt[0])

    for _ in range(args.warmup):
        once()
    times = [once() for _ in range(args.reps)]
    with dm.profile(grid) as prof:
        tprof = once()
    st = prof.ops.get("matmul")
    recv = st.bytes_recv.sum if st is not None else 0.0
    mpi_s = st.seconds.max if st is not None else 0.0
    if codec is not None:   # compressed SUMMA multiplies the rounded operands
        A = A._wrap(codec.round(A.local), A.shape, A.block, A.grid)
        B = B._wrap(codec.round(B.local), B.shape, B.block, B.grid)
    ratio_check = Freivalds(A, B, "T" if ta else "N", "T" if tb else "N", 1.0, 0.0, None,
                            np.dtype(dtype)).ratio(C)
    buf = np.array([ratio_check])
    comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.MAX)
    best = min(times)
    model = model_bytes(form, n, n, n, grid.shape, np.dtype(dtype).itemsize,
                        codec.wire.itemsize if codec is not None else None)
    ledger = recv / grid.size
    return {"time_s": best, "times_s": times, "gflops": _flops(n, dtype) / best / 1e9,
            "bytes_per_rank": ledger, "model_bytes_per_rank": model,
            "ledger_over_model": ledger / model if model else (1.0 if ledger == 0 else np.inf),
            "mpi_share": mpi_s / tprof if tprof > 0 else 0.0,
            "check": float(buf[0]), "passed": bool(buf[0] <= 1.0)}


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    world = MPI.COMM_WORLD
    grid = dm.ProcessGrid(world, tuple(args.grid) if args.grid else None)
    rank0 = grid.rank == 0
    dm.set_blas_threads(args.threads)
    p = grid.size

    def say(msg: str, err: bool = False) -> None:
        if rank0:
            print(msg, file=sys.stderr if err else sys.stdout, flush=True)

    blas = threads.blas_info()
    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                          "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    say(f"# distmat SUMMA matmul benchmark  {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC  "
        f"host {socket.gethostname()}  cores {threads.cores()}  ranks {p}  grid "
        f"{grid.shape[0]}x{grid.shape[1]}  block {args.block}  panel {args.panel}  "
        f"comm_dtype {args.comm_dtype or 'off'}")
    for b in blas:
        say(f"# BLAS {b['api']} {b['version']} kernel {b['kernel']} threads {b['threads']} "
            f"({b['library']})")
    say("# env " + " ".join(f"{k}={v}" for k, v in env.items() if v is not None))
    local = threads.local_ranks(grid.comm)
    if local > threads.cores():
        say(f"# note: {local} ranks share {threads.cores()} cores on this host "
            f"(oversubscribed): expect ratios well below 1")
    say("# time = best of reps of the slowest rank; ratio = GFLOP/s / (p x 1-thread numpy); "
        "bytes = mean received per rank")
    head = (f"# {'ranks':>5} {'grid':>5} {'n':>6} {'dtype':>10} {'form':>4} {'time s':>9} "
            f"{'GFLOP/s':>9} {'np 1t':>8} {'ratio':>6} {'bytes/rank':>12} {'model':>12} "
            f"{'led/mod':>7} {'MPI%':>5} {'check':>8} {'result':>7}")
    say(head)
    rows = []
    allok = True
    for dtname in args.dtype:
        dtype = np.dtype(dtname)
        for n in args.n:
            say(f"# progress: numpy baseline n={n} {dtname} on rank 0", err=True)
            npg = np.zeros(1)
            if rank0:
                npg[0] = numpy_gflops(n, dtype, max(1, args.reps))
                grid.comm.Ibarrier().Wait()
            else:
                wait_quietly(grid.comm)
            grid.comm.Bcast(npg, 0)
            for form in args.form:
                say(f"# progress: n={n} {dtname} {form}", err=True)
                r = _run_case(grid, n, dtype, form, args)
                ratio = r["gflops"] / (p * npg[0])
                allok &= r["passed"]
                row = {"bench": "matmul", "ranks": p, "grid": list(grid.shape), "n": n,
                       "dtype": dtname, "form": form, "block": args.block, "panel": args.panel,
                       "threads": args.threads, "comm_dtype": args.comm_dtype,
                       "numpy_1t_gflops": float(npg[0]),
                       "ratio": ratio, **r, "blas": blas, "env": env}
                rows.append(row)
                say(f"  {p:>5} {grid.shape[0]:>2}x{grid.shape[1]:<2} {n:>6} {dtname:>10} "
                    f"{form:>4} {r['time_s']:>9.4f} {r['gflops']:>9.2f} {npg[0]:>8.2f} "
                    f"{ratio:>6.3f} {r['bytes_per_rank']:>12.4g} "
                    f"{r['model_bytes_per_rank']:>12.4g} {r['ledger_over_model']:>7.3f} "
                    f"{100 * r['mpi_share']:>5.1f} {r['check']:>8.2g} "
                    f"{'PASSED' if r['passed'] else 'FAILED':>7}")
    return finish(say, args.out, rows, allok, rank0, grids=[grid])


if __name__ == "__main__":
    sys.exit(main())
