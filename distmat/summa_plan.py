"""SUMMA panel planning and communication model (layer 0: pure index math, no MPI).

A SUMMA step broadcasts one panel of each operand.  distmat picks each panel as a set of
indices of the looped dimension that has ONE owner on each side, so one broadcast per side
moves it and the owner's local indices are a plain (often contiguous) selection of its local
array.  The two sides may use different block sizes: the plan groups the indices by their
pair of owners ``(owner on side 1, owner on side 2)`` and cuts each group, in increasing
global order, into panels of at most ``width`` indices.

With equal blocks on a square grid there are ``p`` groups (the owner pairs ``(c, c)``) and
every panel is a contiguous range of the owner's local columns; on a ``1 x p`` grid the
groups are the owners' local column sets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .layout import global_to_local

__all__ = ["DEFAULT_PANEL", "Step", "plan", "index_or_slice", "model_bytes", "FORMS"]

#: Default panel width (indices of the looped dimension per SUMMA step).  Measured on this
#: project's 2-core machine (OpenBLAS, SkylakeX kernel): a local GEMM of a 2048 x 1024 result
#: by panels of 128 / 256 / 512 / 1024 ran at 92 / 98 / 98 / 96 % of one numpy GEMM of the
#: whole product.  In the full benchmark (2 ranks, n = 4096, float64, block 128) 1024 beat
#: 512 by about 3% (NN ratio 0.89-0.94 against 0.87-0.88 over repeated runs): fewer steps
#: mean fewer panel copies and progress checks, and four steps still overlap each panel's
#: broadcast with the previous GEMM.
DEFAULT_PANEL = 1024

#: The operand forms: ``"NN"`` (A @ B), ``"TN"`` (A^T @ B), ``"NT"`` (A @ B^T), ``"TT"``.
FORMS = ("NN", "TN", "NT", "TT")


def index_or_slice(idx: np.ndarray) -> slice | np.ndarray:
    """``idx`` as a slice when it is a contiguous increasing range, else unchanged."""
    if idx.size == 0:
        return slice(0, 0)
    lo = int(idx[0])
    if int(idx[-1]) - lo + 1 == idx.size and (idx.size < 2 or bool(np.all(np.diff(idx) == 1))):
        return slice(lo, lo + idx.size)
    return idx


@dataclass(frozen=True)
class Step:
    """One SUMMA step: ``width`` indices of the looped dimension.

    ``owner1`` / ``owner2`` are the process coordinates owning them on the two sides and
    ``local1`` / ``local2`` their local indices there (a slice when contiguous).  ``start``
    is the smallest global index (steps are ordered by it).
    """

    start: int
    width: int
    owner1: int
    local1: slice | np.ndarray
    owner2: int
    local2: slice | np.ndarray


def plan(n: int, b1: int, p1: int, b2: int, p2: int, width: int = DEFAULT_PANEL) -> list[Step]:
    """Cut ``range(n)`` into SUMMA steps with one owner per side.

    Parameters
    ----------
    n : int
        Length of the looped dimension.
    b1, p1 : int
        Block size and number of processes of the dimension's distribution on side 1.
    b2, p2 : int
        The same on side 2.
    width : int
        Largest number of indices per step (>= 1).

    Returns
    -------
    list of Step
        Steps covering every index exactly once, ordered by their first global index.
    """
    if width < 1:
        raise ValueError(f"panel width must be >= 1, got {width}")
    if n == 0:
        return []
    g = np.arange(n, dtype=np.int64)
    o1 = (g // b1) % p1
    o2 = (g // b2) % p2
    key = o1 * p2 + o2
    order = np.argsort(key, kind="stable")
    skey = key[order]
    bounds = np.flatnonzero(np.diff(skey)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [n]))
    steps = []
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        own1, own2 = divmod(int(skey[a]), p2)
        for c in range(a, b, width):
            gs = g[order[c:min(c + width, b)]]
            steps.append(Step(int(gs[0]), int(gs.size), own1,
                              index_or_slice(global_to_local(gs, b1, p1)), own2,
                              index_or_slice(global_to_local(gs, b2, p2))))
    steps.sort(key=lambda s: s.start)
    return steps


def model_bytes(form: str, m: int, n: int, k: int, grid_shape: tuple[int, int],
                itemsize: int, comm_itemsize: int | None = None) -> float:
    """SUMMA's communication volume: mean bytes received per rank for ``C = op(A) op(B)``.

    ``C`` is ``m x n`` and ``k`` the inner dimension, on a ``pr x pc`` grid.  ``itemsize`` is
    the product dtype's; ``comm_itemsize`` that of the operand panels when they travel
    compressed (``matmul(..., comm_dtype=)``; default ``itemsize``).  Result panels (the
    reductions of ``TN`` and ``NT`` and the transpose of ``TT``) always travel at
    ``itemsize``.

    - ``NN`` (stationary C): the A panels along grid rows, the B panels down grid columns,
      ``m k / pr (1 - 1/pc) + k n / pc (1 - 1/pr)`` words.
    - ``TN`` (stationary B): the A^T panels along grid rows and a reduction of the C row
      panels down grid columns, ``k m / pr (1 - 1/pc) + m n / pc (1 - 1/pr)`` words.
    - ``NT`` (stationary A): the B^T panels down grid columns and a reduction of the C
      column panels along grid rows, ``n k / pc (1 - 1/pr) + m n / pr (1 - 1/pc)`` words.
    - ``TT``: ``NN`` of ``op(B)^T op(A)^T`` plus one transpose of the ``m x n`` result:
      ``m n / p (1 - 1/lcm(pr, pc))`` words (an entry stays put when its block row and block
      column agree modulo both grid dimensions; square blocks assumed).
    """
    pr, pc = grid_shape
    p = pr * pc
    fr, fc = 1.0 - 1.0 / pc, 1.0 - 1.0 / pr
    if form == "NN":
        operand, result = m * k / pr * fr + k * n / pc * fc, 0.0
    elif form == "TN":
        operand, result = k * m / pr * fr, m * n / pc * fc
    elif form == "NT":
        operand, result = n * k / pc * fc, m * n / pr * fr
    elif form == "TT":
        operand = n * k / pr * fr + k * m / pc * fc
        result = m * n / p * (1.0 - 1.0 / math.lcm(pr, pc))
    else:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    citem = itemsize if comm_itemsize is None else comm_itemsize
    return operand * citem + result * itemsize
