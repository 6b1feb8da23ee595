"""A short tour of distmat, run by ``make demo``: create, scatter, operate, gather, report.

Run as ``mpiexec -n 2 python -m mpi4py -m distmat.demo [--n N]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from mpi4py import MPI

import distmat as dm


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1500, help="matrix order (default 1500)")
    args = ap.parse_args(argv)
    n = args.n
    comm = MPI.COMM_WORLD
    rank = comm.rank
    say = print if rank == 0 else (lambda *a, **k: None)
    rows = []

    def check(name: str, ok: bool, detail: str, seconds: float) -> None:
        ok = bool(comm.allreduce(int(not ok), op=MPI.SUM) == 0)
        rows.append((name, detail, seconds, "PASSED" if ok else "FAILED"))
        say(f"[{len(rows)}] {name}: {'PASSED' if ok else 'FAILED'}", flush=True)

    with dm.ProcessGrid(comm) as grid:
        say(f"distmat {dm.__version__} on {grid.size} rank(s), grid {grid.shape}, "
            f"{MPI.Get_library_version().splitlines()[0].strip()}", flush=True)
        with dm.profile(grid) as prof:
            t = time.perf_counter()
            A = dm.random((n, n), "normal", seed=42, grid=grid, block=(64, 64))
            ref = dm.random((n, n), "normal", seed=42, grid=grid, block=(n, n)).gather(root=0)
            dt = time.perf_counter() - t
            G = A.gather(root=0)
            check("random: same matrix for block 64 and n", rank != 0 or np.array_equal(G, ref),
                  f"n={n}", dt)

            t = time.perf_counter()
            B = dm.from_global(ref if rank == 0 else None, grid=grid, block=(50, 70))
            dt = time.perf_counter() - t
            Bg = B.gather(root=0)
            check("scatter (from_global) round trip", rank != 0 or np.array_equal(Bg, ref),
                  "block=(50, 70)", dt)

            t = time.perf_counter()
            C = 2.0 * A - B.redistribute(block=A.block) / 4.0
            dt = time.perf_counter() - t
            Cg = C.gather(root=0)
            check("elementwise 2A - B/4", rank != 0 or np.allclose(Cg, 1.75 * ref), "", dt)

            t = time.perf_counter()
            T = A.T
            dt = time.perf_counter() - t
            Tg = T.gather(root=0)
            check("distributed transpose", rank != 0 or np.array_equal(Tg, ref.T), "", dt)

            for ord_ in ("fro", 1, np.inf):
                t = time.perf_counter()
                val = dm.norm(A, ord_)
                dt = time.perf_counter() - t
                ok = rank != 0 or np.isclose(val, np.linalg.norm(ref, ord_))
                check(f"norm {ord_}", ok, f"{val:.6g}", dt)
    say("")
    say(f"# {'check':<48}{'detail':>14}{'seconds':>10}  result")
    for name, detail, sec, res in rows:
        say(f"  {name:<48}{detail:>14}{sec:>10.4f}  {res}")
    say("")
    say("Communication (max / sum over ranks):")
    say(prof.table())
    failed = sum(r[3] != "PASSED" for r in rows)
    say(f"\n{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
