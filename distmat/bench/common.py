"""Pieces every benchmark shares: timing, a quiet barrier, MPI share and JSON Lines output."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from mpi4py import MPI

__all__ = ["wait_quietly", "append_jsonl", "finish", "timed", "best", "mpi_share"]


def timed(comm: MPI.Comm, fn: Callable[[], Any]) -> tuple[float, Any]:
    """``(seconds of the slowest rank, result)`` of one ``fn()`` started after a barrier."""
    comm.Barrier()
    t0 = time.perf_counter()
    out = fn()
    dt = np.array([time.perf_counter() - t0])
    comm.Allreduce(MPI.IN_PLACE, dt, op=MPI.MAX)
    return float(dt[0]), out


def best(comm: MPI.Comm, fn: Callable[[], Any], reps: int, warmup: int
         ) -> tuple[float, list[float], Any]:
    """``(best time, all times, last result)`` of ``reps`` timed runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times, out = [], None
    for _ in range(max(1, reps)):
        t, out = timed(comm, fn)
        times.append(t)
    return min(times), times, out


def mpi_share(grid: Any, fn: Callable[[], Any]) -> float:
    """Share of one timed ``fn()`` the slowest rank spent inside MPI (``dm.profile``)."""
    from ..profile import profile

    with profile(grid) as prof:
        t, _ = timed(grid.comm, fn)
    return prof.total.seconds.max / t if t > 0 else 0.0


def wait_quietly(comm: MPI.Comm) -> None:
    """Barrier that sleeps instead of spinning (so waiting ranks leave the cores alone)."""
    req = comm.Ibarrier()
    while not req.Test():
        time.sleep(0.005)


def append_jsonl(path: str, rows: Iterable[dict]) -> int:
    """Append ``rows`` to the JSON Lines file ``path`` in one write; returns the row count.

    The lines are built first and written with a single call, so an interrupted benchmark
    never leaves half a record behind.  numpy scalars are written as floats.
    """
    rows = list(rows)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    text = "".join(json.dumps(r, default=float) + "\n" for r in rows)
    with open(path, "a") as f:
        f.write(text)
    return len(rows)


def finish(say: Callable[[str], None], out: str | None, rows: list[dict], allok: bool,
           rank0: bool, *, grids: Iterable[Any] = (), limiter: Any = None) -> int:
    """The end of a benchmark run: write the rows (rank 0), print the verdict, restore the
    BLAS thread limit, free the grids; returns the exit code (0 when every row PASSED)."""
    if rank0 and out:
        say(f"# wrote {append_jsonl(out, rows)} rows to {out}")
    say(f"# {'all PASSED' if allok else 'some FAILED'}")
    if limiter is not None:
        limiter.restore_original_limits()
    for g in grids:
        g.free()
    return 0 if allok else 1
