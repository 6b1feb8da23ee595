"""The alpha-beta communication model and the matmul lower bound (pure functions, no MPI).

A message of ``w`` bytes costs ``alpha + beta * w`` seconds (latency ``alpha``, inverse
bandwidth ``beta``).  The calibration tasks (``pingpong``, ``bcast``) measure both; every
operation's record then carries, for the algorithm and parameters actually used:

* ``model_words``: the words (matrix entries) each rank receives, in the same *logical*
  sense as the ledger (what the algorithm asks MPI to move, once per receiving rank), so
  ``comm_bytes_recv_max / itemsize`` is directly comparable;
* ``model_msgs``: the messages each rank receives;
* ``model_seconds``: the alpha-beta time, with binomial-tree broadcasts costing
  ``ceil(log2 q)`` message steps along a grid row or column of ``q`` ranks;
* for matmul, ``bound_words``: the Irony-Toledo-Tiskin memory-dependent lower bound
  ``m n k / (2 sqrt(2) p sqrt(M)) - M`` words per rank, with ``M`` the words of memory each
  rank holds (by default the ``(mk + kn + mn) / p`` of a 2D algorithm), and
  ``bound_words_mi``, the memory-independent bound ``(m n k / p)^(2/3)`` minus the rank's own
  share of the inputs (Ballard et al.).

References: Irony, Toledo, Tiskin, "Communication lower bounds for distributed-memory matrix
multiplication", JPDC 64 (2004); van de Geijn and Watts, "SUMMA", CCPE 9 (1997).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "AlphaBeta",
    "fit_alpha_beta",
    "tree_steps",
    "summa_words",
    "summa",
    "itt_lower_bound",
    "memory_independent_bound",
    "transpose",
    "transpose_words",
    "redistribute",
    "redistribute_words",
    "lu",
    "cholesky",
    "triangular_solve",
    "krylov",
    "bcast",
    "allreduce",
    "pingpong",
    "spmm",
]


@dataclass(frozen=True)
class AlphaBeta:
    """Latency ``alpha`` (s) and inverse bandwidth ``beta`` (s/byte) of one message."""

    alpha: float = 0.0
    beta: float = 0.0
    source: str = "none"

    def time(self, msgs: float, nbytes: float) -> float:
        """Seconds for ``msgs`` messages carrying ``nbytes`` bytes in all."""
        return msgs * self.alpha + nbytes * self.beta

    def as_dict(self) -> dict[str, float | str]:
        return {"alpha_s": self.alpha, "beta_s_per_byte": self.beta,
                "bandwidth_GBps": (1e-9 / self.beta) if self.beta > 0 else None,
                "source": self.source}


def fit_alpha_beta(nbytes: Sequence[float], seconds: Sequence[float],
                   steps: float = 1.0) -> tuple[float, float]:
    """Least-squares fit of ``seconds = steps * (alpha + beta * nbytes)``.

    Relative errors are minimised (each point weighted by ``1 / seconds``), so the small
    messages that fix ``alpha`` count as much as the large ones that fix ``beta``.  Both are
    clipped at zero.  Needs at least two distinct sizes.
    """
    if len(nbytes) != len(seconds):
        raise ValueError(f"nbytes and seconds differ in length ({len(nbytes)} and "
                         f"{len(seconds)})")
    pts = [(float(b), float(t) / steps) for b, t in zip(nbytes, seconds, strict=True)
           if t > 0]
    if len({b for b, _ in pts}) < 2:
        raise ValueError("fit_alpha_beta needs timings at two or more distinct sizes")
    # weighted normal equations for t ~ a + b x, weight 1/t^2
    s00 = s01 = s11 = r0 = r1 = 0.0
    for x, t in pts:
        w = 1.0 / (t * t)
        s00 += w
        s01 += w * x
        s11 += w * x * x
        r0 += w * t
        r1 += w * x * t
    det = s00 * s11 - s01 * s01
    alpha = (r0 * s11 - r1 * s01) / det
    beta = (s00 * r1 - s01 * r0) / det
    if alpha < 0:  # refit the slope alone
        alpha, beta = 0.0, r1 / s11
    if beta < 0:
        alpha, beta = r0 / s00, 0.0
    return max(alpha, 0.0), max(beta, 0.0)


def tree_steps(q: int) -> int:
    """Message steps of a binomial-tree broadcast or reduction over ``q`` ranks."""
    return 0 if q <= 1 else math.ceil(math.log2(q))


def summa_words(m: int, n: int, k: int, pr: int, pc: int) -> float:
    """Words the busiest rank receives in SUMMA for ``C(m x n) = A(m x k) B(k x n)``.

    Each rank receives, over all panels, the ``k (1 - 1/pc)`` columns of its ``m / pr`` rows
    of ``A`` that other grid columns own, and the ``k (1 - 1/pr)`` rows of its ``n / pc``
    columns of ``B`` that other grid rows own: ``k (m / pr (1 - 1/pc) + n / pc (1 - 1/pr))``,
    about ``2 n^2 / sqrt(p)`` on a large square grid with ``m = n = k``.
    """
    return k * (m / pr * (1.0 - 1.0 / pc) + n / pc * (1.0 - 1.0 / pr))


def summa(m: int, n: int, k: int, pr: int, pc: int, panel: int, itemsize: int,
          ab: AlphaBeta, trans_a: bool = False, trans_b: bool = False) -> dict:
    """Model of SUMMA for ``C = op(A) op(B)`` in the variant each form uses.

    ``NN`` keeps C in place and broadcasts A panels along grid rows and B panels down grid
    columns (:func:`summa_words`).  ``TN`` keeps B in place: A^T panels along rows, C row
    panels reduced down columns, ``k m / pr (1 - 1/pc) + m n / pc (1 - 1/pr)`` words.
    ``NT`` keeps A in place: ``n k / pc (1 - 1/pr) + m n / pr (1 - 1/pc)``.  ``TT`` is ``NN``
    of ``B^T A^T`` plus a transpose of the result (``m n / p (1 - 1/lcm(pr, pc))`` words).
    Steps: ``ceil(k / panel)``, at least one per owner of the looped dimension; each costs a
    binomial-tree broadcast (or reduction) per side.
    """
    form = ("T" if trans_a else "N") + ("T" if trans_b else "N")
    fr, fc = 1.0 - 1.0 / pc, 1.0 - 1.0 / pr
    p = pr * pc
    steps = max(1, math.ceil(k / max(panel, 1)), max(pr, pc) if p > 1 else 1)
    if form == "NN":
        side_r, side_c = m * k / pr * fr, k * n / pc * fc
    elif form == "TN":
        side_r, side_c = k * m / pr * fr, m * n / pc * fc
    elif form == "NT":
        side_r, side_c = m * n / pr * fr, n * k / pc * fc
    else:
        side_r, side_c = n * k / pr * fr, k * m / pc * fc
    words = side_r + side_c
    msgs = steps * ((pc > 1) + (pr > 1))
    seconds = (steps * tree_steps(pc) * ab.alpha + tree_steps(pc) * side_r * itemsize * ab.beta
               + steps * tree_steps(pr) * ab.alpha + tree_steps(pr) * side_c * itemsize * ab.beta)
    if form == "TT" and p > 1:
        t = transpose(n, m, pr, pc, itemsize, ab)
        words += m * n / p * (1.0 - 1.0 / math.lcm(pr, pc))
        msgs += t["model_msgs"]
        seconds += t["model_seconds"]
    return {"model_algorithm": f"summa {form} {pr}x{pc} panel={panel}", "model_words": words,
            "model_msgs": msgs, "model_seconds": seconds}


def itt_lower_bound(m: int, n: int, k: int, p: int, memory_words: float | None = None) -> float:
    """Irony-Toledo-Tiskin lower bound on the words some rank must receive (>= 0).

    ``m n k / (2 sqrt(2) p sqrt(M)) - M`` with ``M`` the memory per rank in words; by
    default ``(m k + k n + m n) / p``, what a 2D algorithm holds.
    """
    if p <= 1:
        return 0.0
    M = memory_words if memory_words is not None else (m * k + k * n + m * n) / p
    if M <= 0:
        return 0.0
    return max(0.0, m * n * k / (2.0 * math.sqrt(2.0) * p * math.sqrt(M)) - M)


def memory_independent_bound(m: int, n: int, k: int, p: int) -> float:
    """Memory-independent bound ``(m n k / p)^(2/3) - (m k + k n) / p`` words (>= 0)."""
    if p <= 1:
        return 0.0
    return max(0.0, (m * n * k / p) ** (2.0 / 3.0) - (m * k + k * n) / p)


def _owner_counts(n: int, nb: int, p: int) -> list[int]:
    """How many of ``n`` indices each of ``p`` processes owns (block-cyclic, block ``nb``)."""
    counts = [0] * p
    for b0 in range(0, n, nb):
        counts[(b0 // nb) % p] += min(nb, n - b0)
    return counts


def _pair_counts(n: int, nb: int, p: int, nb2: int, p2: int) -> dict[tuple[int, int], int]:
    """Counts of indices by (owner under (nb, p), owner under (nb2, p2))."""
    out: dict[tuple[int, int], int] = {}
    cuts = sorted(set(range(0, n, nb)) | set(range(0, n, nb2)) | {n})
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        key = ((a // nb) % p, (a // nb2) % p2)
        out[key] = out.get(key, 0) + b - a
    return out


def redistribute_words(shape: tuple[int, int], block: tuple[int, int],
                       new_block: tuple[int, int], grid: tuple[int, int]) -> float:
    """Exact words the busiest rank receives when ``block`` changes to ``new_block``."""
    (m, n), (mb, nb), (mb2, nb2), (pr, pc) = shape, block, new_block, grid
    rows, cols = _pair_counts(m, mb2, pr, mb, pr), _pair_counts(n, nb2, pc, nb, pc)
    rn, cn = _owner_counts(m, mb2, pr), _owner_counts(n, nb2, pc)
    worst = 0
    for r in range(pr):
        for c in range(pc):
            stay = rows.get((r, r), 0) * cols.get((c, c), 0)
            worst = max(worst, rn[r] * cn[c] - stay)
    return float(worst)


def transpose_words(shape: tuple[int, int], block: tuple[int, int],
                    grid: tuple[int, int]) -> float:
    """Exact words the busiest rank receives in ``A.T`` (result block ``(nb, mb)``).

    Entry ``(i, j)`` moves from ``(rowner(i), cowner(j))`` to ``(rowner'(j), cowner'(i))``;
    rank ``(r, c)`` keeps the entries with ``rowner(i) = r = rowner'(j)`` and
    ``cowner(j) = c = cowner'(i)``.
    """
    (m, n), (mb, nb), (pr, pc) = shape, block, grid
    i_pairs = _pair_counts(m, mb, pr, mb, pc)   # (old row owner, new col owner) of index i
    j_pairs = _pair_counts(n, nb, pc, nb, pr)   # (old col owner, new row owner) of index j
    rn, cn = _owner_counts(n, nb, pr), _owner_counts(m, mb, pc)
    worst = 0
    for r in range(pr):
        for c in range(pc):
            stay = i_pairs.get((r, c), 0) * j_pairs.get((c, r), 0)
            worst = max(worst, rn[r] * cn[c] - stay)
    return float(worst)


def transpose(m: int, n: int, pr: int, pc: int, itemsize: int, ab: AlphaBeta,
              block: tuple[int, int] | None = None) -> dict:
    """All-to-all transpose: the busiest rank's words (exact given the block), else
    ``m n / p``."""
    p = pr * pc
    if block is not None:
        words = transpose_words((m, n), block, (pr, pc))
    else:
        words = 0.0 if p == 1 else m * n / p
    msgs = 0 if p == 1 else (1 if pr == pc else min(p - 1, max(pr, pc)))
    return {"model_algorithm": f"alltoallv transpose {pr}x{pc}", "model_words": words,
            "model_msgs": msgs, "model_seconds": ab.time(msgs, words * itemsize)}


def redistribute(m: int, n: int, pr: int, pc: int, itemsize: int, ab: AlphaBeta,
                 block: tuple[int, int] | None = None,
                 new_block: tuple[int, int] | None = None) -> dict:
    """All-to-all redistribution: exact busiest-rank words when both blocks are given."""
    p = pr * pc
    if block is not None and new_block is not None:
        words = redistribute_words((m, n), block, new_block, (pr, pc))
    else:
        words = 0.0 if p == 1 else m * n / p
    msgs = 0 if p == 1 else p - 1
    return {"model_algorithm": f"alltoallv {pr}x{pc}", "model_words": words,
            "model_msgs": msgs, "model_seconds": ab.time(msgs, words * itemsize)}


def lu(n: int, pr: int, pc: int, panel: int, itemsize: int, ab: AlphaBeta) -> dict:
    """Right-looking 2D block-cyclic LU with partial pivoting (ScaLAPACK PDGETRF shape).

    Step ``j`` broadcasts the ``(n - j) x panel`` L panel along grid rows and the
    ``panel x (n - j)`` U row along grid columns: ``(n^2 / 2)(1 / pr + 1 / pc)`` words in
    all, and one pivot reduction per column (``n tree_steps(pr)`` latency terms).
    """
    words = n * n / 2.0 * ((1.0 - 1.0 / pc) / pr + (1.0 - 1.0 / pr) / pc)
    npanels = max(1, math.ceil(n / max(panel, 1)))
    msgs = npanels * ((pc > 1) + (pr > 1)) + n * (pr > 1)
    seconds = (npanels * (tree_steps(pc) + tree_steps(pr)) * ab.alpha
               + n * tree_steps(pr) * ab.alpha
               + (tree_steps(pc) * (n * n / 2.0 / pr) + tree_steps(pr) * (n * n / 2.0 / pc))
               * itemsize * ab.beta)
    return {"model_algorithm": f"lu 2D {pr}x{pc} panel={panel}", "model_words": words,
            "model_msgs": msgs, "model_seconds": seconds}


def cholesky(n: int, pr: int, pc: int, panel: int, itemsize: int, ab: AlphaBeta) -> dict:
    """Right-looking 2D Cholesky: the panel goes along grid rows and (transposed) columns."""
    r = lu(n, pr, pc, panel, itemsize, ab)
    npanels = max(1, math.ceil(n / max(panel, 1)))
    r["model_msgs"] = npanels * ((pc > 1) + (pr > 1))
    r["model_seconds"] -= n * tree_steps(pr) * ab.alpha
    r["model_algorithm"] = f"cholesky 2D {pr}x{pc} panel={panel}"
    return r


def triangular_solve(n: int, nrhs: int, pr: int, pc: int, panel: int, itemsize: int,
                     ab: AlphaBeta) -> dict:
    """Blocked triangular solve with ``nrhs`` right-hand sides (two of them: L then U)."""
    npanels = max(1, math.ceil(n / max(panel, 1)))
    words = 2.0 * (n * n / 2.0 / pr * (pc > 1) + n * nrhs / pc * (pr > 1))
    msgs = 2 * npanels * ((pc > 1) + (pr > 1))
    return {"model_algorithm": f"trsm 2D {pr}x{pc}", "model_words": words,
            "model_msgs": msgs, "model_seconds": ab.time(msgs, words * itemsize)}


def krylov(n_rows: int, p: int, iterations: int, halo_words: float, reductions: int,
           itemsize: int, ab: AlphaBeta) -> dict:
    """A Krylov solver: per iteration one halo exchange and ``reductions`` all-reduces."""
    msgs = iterations * (2 * (p > 1) + reductions * tree_steps(p) * 2)
    words = iterations * (halo_words + reductions * (p > 1))
    return {"model_algorithm": f"krylov p={p} iters={iterations}", "model_words": words,
            "model_msgs": msgs, "model_seconds": ab.time(msgs, words * itemsize)}


def spmm(n: int, nrhs: int, pr: int, pc: int, itemsize: int, ab: AlphaBeta) -> dict:
    """Block-sparse times dense with the dense operand replicated along grid rows."""
    words = (n * nrhs / pr) * (pc > 1)
    msgs = (pc > 1) * tree_steps(pc)
    return {"model_algorithm": f"spmm 2D {pr}x{pc}", "model_words": words,
            "model_msgs": msgs, "model_seconds": ab.time(msgs, words * itemsize)}


def bcast(nbytes: int, p: int, ab: AlphaBeta) -> dict:
    """Binomial-tree broadcast of ``nbytes`` over ``p`` ranks."""
    s = tree_steps(p)
    return {"model_algorithm": f"binomial bcast p={p}", "model_words": nbytes if p > 1 else 0,
            "model_msgs": 1 if p > 1 else 0, "model_seconds": s * ab.time(1, nbytes)}


def allreduce(nbytes: int, p: int, ab: AlphaBeta) -> dict:
    """Reduce then broadcast along a binomial tree (``2 log2 p`` steps)."""
    s = tree_steps(p)
    return {"model_algorithm": f"tree allreduce p={p}", "model_words": nbytes if p > 1 else 0,
            "model_msgs": 1 if p > 1 else 0, "model_seconds": 2 * s * ab.time(1, nbytes)}


def pingpong(nbytes: int, ab: AlphaBeta) -> dict:
    """One-way time of a ``nbytes`` message (half a round trip)."""
    return {"model_algorithm": "point-to-point", "model_words": nbytes, "model_msgs": 1,
            "model_seconds": ab.time(1, nbytes)}
