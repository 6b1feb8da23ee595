"""Pieces every benchmark shares: a quiet barrier and JSON Lines output."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable

from mpi4py import MPI

__all__ = ["wait_quietly", "append_jsonl"]


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
