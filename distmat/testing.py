"""Helpers for testing code that runs on many ranks (used by distmat's own MPI tests).

Assertions on rank-local data must be agreed, or one failing rank leaves the others waiting
in the next collective: :func:`assert_all` makes every rank fail together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
from mpi4py import MPI

from .grid import ProcessGrid

__all__ = ["assert_all", "raises", "subgrids", "GRID_SHAPES", "scaled_error"]

#: Grid shapes the MPI tests sweep; those needing more ranks than exist are left out.
GRID_SHAPES = ((1, 1), (1, 2), (2, 1), (2, 2), (1, 3), (3, 1), (1, 4), (4, 1), (2, 3), (3, 2),
               (8, 1))


def assert_all(comm: MPI.Comm, ok: bool, msg: str = "") -> None:
    """Raise AssertionError on every rank of ``comm`` unless ``ok`` holds on every rank.

    Collective.  The message names the failing ranks and their own messages.
    """
    res = comm.allgather((bool(ok), "" if ok else str(msg)))
    bad = [(r, m) for r, (good, m) in enumerate(res) if not good]
    if bad:
        detail = "; ".join(f"rank {r}: {m}" for r, m in bad)
        raise AssertionError(f"failed on {len(bad)} of {comm.Get_size()} ranks: {detail}")


def raises(exc: type[BaseException], fn: Callable[[], object], *words: str) -> str:
    """``""`` if ``fn()`` raises ``exc`` whose message holds every one of ``words``.

    Otherwise a description of what happened instead.  Never raises, so a test can call it on
    every rank and agree on the outcome with one :func:`assert_all`.
    """
    try:
        fn()
    except exc as e:
        msg = str(e)
        return "" if all(w in msg for w in words) else f"message {msg!r} lacks {words}"
    except Exception as e:  # noqa: BLE001 - reported, not raised
        return f"raised {type(e).__name__}: {e}"
    return f"did not raise {exc.__name__}"


def subgrids(comm: MPI.Comm, shapes: Iterable[tuple[int, int]] = GRID_SHAPES
             ) -> Iterator[tuple[tuple[int, int], ProcessGrid | None]]:
    """For each shape that fits in ``comm``, a grid over its first ``pr * pc`` ranks.

    Yields ``(shape, grid)``; ranks outside the grid get ``grid=None`` and must skip the work
    (but still take part in any :func:`assert_all` on ``comm``).  Collective over ``comm``;
    each grid is freed when the loop moves on.
    """
    for shape in shapes:
        p = shape[0] * shape[1]
        if p > comm.Get_size():
            continue
        sub = comm.Split(0 if comm.Get_rank() < p else MPI.UNDEFINED, comm.Get_rank())
        if sub == MPI.COMM_NULL:
            yield shape, None
            continue
        grid = ProcessGrid(sub, shape)
        sub.Free()
        try:
            yield shape, grid
        finally:
            grid.free()


def scaled_error(residual_norm: float, *scale: float, n: int, dtype: np.dtype) -> float:
    """ScaLAPACK-style test ratio ``residual / (prod(scale) * max(n, 1) * eps)``.

    A zero denominator gives 0 for a zero residual and inf otherwise; NaN stays NaN (fails).
    """
    eps = float(np.finfo(np.dtype(dtype)).eps)
    den = float(np.prod(scale)) * max(n, 1) * eps
    if den == 0.0:
        return 0.0 if residual_norm == 0.0 else float("inf")
    return residual_norm / den
