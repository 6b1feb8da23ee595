"""Tables and plots from result files (JSON Lines written by the job runner).

Tables follow HPL and OSU output: a ``#`` header, fixed-width columns, one row per record,
PASSED/FAILED at the end.  Plots are drawn afterwards with matplotlib's Agg backend (the
optional extra ``distmat[plot]``), never inside the MPI job.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable

__all__ = ["load", "task_table", "calibration_table", "summary", "plot", "PlotUnavailable"]


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def load(paths: Iterable[str]) -> list[dict]:
    """Records of the given files; a directory means its ``results.jsonl``."""
    out: list[dict] = []
    for p in paths:
        if os.path.isdir(p):
            p = os.path.join(p, "results.jsonl")
        with open(p) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{p}:{n}: not a JSON record ({e})") from None
    return out


def _num(x: float | None, width: int, fmt: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return f"{'-':>{width}}"
    return f"{x:>{width}{fmt}}"


def _bytes(x: float | None, width: int) -> str:
    if x is None:
        return f"{'-':>{width}}"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:>{width - 1}.2f}{unit}"
    return f"{x:>{width}.0f}"


def task_table(records: list[dict]) -> str:
    """One row per task repetition (HPL style)."""
    rows = [r for r in records if r.get("record") == "task"]
    head = (f"# {'task':<42}{'p':>4}{'grid':>7}{'rep':>5}{'time s':>11}{'GFLOP/s':>10}"
            f"{'comm%':>7}{'recv B/rk':>11}{'model B':>10}{'bound B':>10}{'meas/mod':>9}"
            f"{'resid':>10}  check")
    lines = [head, "# " + "-" * (len(head) - 2)]
    for r in rows:
        m = r.get("model", {})
        chk = r.get("check") or {}
        lab = r.get("label", r.get("op", "?"))
        lab = lab if len(lab) <= 41 else lab[:38] + "..."
        g = r.get("grid", [0, 0])
        rep = f"{r.get('rep', 1)}/{r.get('repeat', 1)}"
        lines.append(
            f"  {lab:<42}{r.get('ranks', 0):>4}{f'{g[0]}x{g[1]}':>7}"
            f"{rep:>5}"
            f"{_num(r.get('time_s'), 11, '.4f')}{_num(r.get('gflops'), 10, '.3f')}"
            f"{_num(100 * r.get('comm_share', 0.0), 7, '.1f')}"
            f"{_bytes(r.get('comm', {}).get('bytes_recv_max'), 11)}"
            f"{_bytes(m.get('model_bytes'), 10)}{_bytes(m.get('bound_bytes'), 10)}"
            f"{_num(m.get('measured_over_model'), 9, '.2f')}"
            f"{_num(chk.get('residual'), 10, '.3g')}  {r.get('status', '?')}")
    return "\n".join(lines)


def calibration_table(records: list[dict]) -> str:
    """OSU-style latency/bandwidth rows of the calibration records and tasks."""
    lines = []
    for r in records:
        if not (r.get("record") == "calibration" or (r.get("record") == "task"
                                                     and "sizes" in r)):
            continue
        fit = r.get("fit") or {}
        title = r.get("label", "startup ping-pong" if r.get("record") == "calibration" else "")
        lines.append(f"# {title} on {r.get('ranks')} ranks: alpha = "
                     f"{1e6 * fit.get('alpha_s', 0.0):.2f} us, bandwidth = "
                     f"{fit.get('bandwidth_GBps') or float('inf'):.2f} GB/s")
        lines.append(f"# {'Size (B)':>12}{'Latency (us)':>16}{'Bandwidth (MB/s)':>18}")
        for s in r["sizes"]:
            t = s["seconds"]
            bw = s["bytes"] / t / 1e6 if t > 0 else float("inf")
            lines.append(f"  {s['bytes']:>12}{1e6 * t:>16.2f}{bw:>18.2f}")
    return "\n".join(lines)


def summary(records: list[dict]) -> tuple[str, int, int]:
    """Table text plus counts of passed and failed checks."""
    tasks = [r for r in records if r.get("record") == "task"]
    failed = sum(r.get("status") == "FAILED" for r in tasks)
    passed = sum(r.get("status") == "PASSED" for r in tasks)
    text = task_table(records)
    cal = calibration_table(records)
    if cal:
        text = cal + "\n\n" + text
    text += (f"\n\n{len(tasks)} record(s): {passed} PASSED, {failed} FAILED, "
             f"{len(tasks) - passed - failed} without a check")
    return text, passed, failed


def _series(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Task records grouped by (op, parameters other than the rank count), best of reps."""
    best: dict[tuple, dict] = {}
    for r in records:
        if r.get("record") != "task" or "sizes" in r:
            continue
        params = {k: v for k, v in r.get("params", {}).items() if k not in ("seed", "output")}
        key = (r["op"], json.dumps(params, sort_keys=True), r.get("ranks"))
        if key not in best or r["time_s"] < best[key]["time_s"]:
            best[key] = r
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for (op, params, _), r in best.items():
        groups[(op, params)].append(r)
    return groups


def plot(records: list[dict], path: str) -> str:
    """Draw GFLOP/s, communication share and bytes (measured, model, bound) to ``path``.

    The x axis is the rank count when the records span several, else the matrix size.
    Returns the path.  Raises :class:`PlotUnavailable` without matplotlib.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable("plotting needs matplotlib: pip install 'distmat[plot]' "
                              "(or pip install matplotlib)") from None
    groups = _series(records)
    if not groups:
        raise ValueError("no task records to plot")
    ranks = {r["ranks"] for rs in groups.values() for r in rs}
    by_ranks = len(ranks) > 1
    if not by_ranks:  # regroup by op and everything but the size
        regroup: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for rs in groups.values():
            for r in rs:
                params = {k: v for k, v in r["params"].items()
                          if k not in ("n", "m", "k", "nx", "seed", "output")}
                regroup[(r["op"], json.dumps(params, sort_keys=True))].append(r)
        groups = regroup

    def xval(r: dict) -> float:
        if by_ranks:
            return r["ranks"]
        p = r["params"]
        return p.get("n") or p.get("nx") or 0

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for (op, params), rs in sorted(groups.items()):
        rs = sorted(rs, key=xval)
        xs = [xval(r) for r in rs]
        short = op
        if by_ranks:
            p = json.loads(params)
            short += " " + " ".join(f"{k}={p[k]}" for k in ("n", "m", "k", "nx") if k in p
                                    and p[k])
        if any(r.get("gflops") for r in rs):
            axes[0].plot(xs, [r.get("gflops") or 0 for r in rs], "o-", label=short)
        axes[1].plot(xs, [100 * r.get("comm_share", 0) for r in rs], "o-", label=short)
        meas = [r["comm"]["bytes_recv_max"] for r in rs]
        line, = axes[2].plot(xs, meas, "o-", label=f"{short} measured")
        mod = [r.get("model", {}).get("model_bytes") for r in rs]
        if any(mod):
            axes[2].plot(xs, [m if m is not None else float("nan") for m in mod], "x--",
                         color=line.get_color(), label=f"{short} model")
        bnd = [r.get("model", {}).get("bound_bytes") for r in rs]
        if any(bnd):
            axes[2].plot(xs, [b if b is not None else float("nan") for b in bnd], "v:",
                         color=line.get_color(), label=f"{short} lower bound")
    xl = "MPI ranks" if by_ranks else "matrix size n"
    axes[0].set(title="Throughput", xlabel=xl, ylabel="GFLOP/s")
    axes[1].set(title="Communication share of time", xlabel=xl, ylabel="% of time in MPI",
                ylim=(0, 100))
    axes[2].set(title="Bytes received per rank (max)", xlabel=xl, ylabel="bytes")
    if any(line.get_ydata().size for line in axes[2].get_lines()):
        axes[2].set_yscale("symlog", linthresh=1.0)
    for ax in axes:
        if by_ranks:
            ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=7)
    job = records[0].get("job", "") if records else ""
    fig.suptitle(f"distmat {job}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
