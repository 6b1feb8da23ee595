"""The job runner: runs a validated plan under MPI and writes one JSON Lines record per task
repetition.  Started by the launcher as::

    mpiexec -n N python -m mpi4py -m launch.runner PLAN.json

Rank 0 prints progress lines (``[3/8] matmul n=4096 ...``) and owns the results file, which
it rewrites atomically (temporary file, then rename) after every record, so an interrupted
job leaves the records of the repetitions that completed and never a truncated line.

A task that raises on any rank is fatal: that rank writes its traceback to
``rank-<r>.error.json`` in the output directory, prints one line to stderr and calls
``MPI_Abort``, which ends every rank (no hang).  The launcher reads the files to say which
rank failed and why.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import time
import traceback
from typing import Any

from . import model as M
from . import tasks as T

__all__ = ["main", "write_jsonl_atomic", "read_jsonl"]


def write_jsonl_atomic(path: str, records: list[dict]) -> None:
    """Write ``records`` as JSON Lines to ``path`` through a temporary file and a rename."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        for r in records:
            f.write(json.dumps(r, default=_jsonable) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _jsonable(x: Any) -> Any:
    try:
        import numpy as np

        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(x)


def read_jsonl(path: str) -> list[dict]:
    """The records of a JSON Lines file (empty list if it does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _write_json_atomic(path: str, obj: dict) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=_jsonable)
    os.replace(tmp, path)


def _versions() -> dict:
    import mpi4py
    import numpy
    import scipy
    from mpi4py import MPI

    import distmat

    return {"distmat": distmat.__version__, "numpy": numpy.__version__,
            "scipy": scipy.__version__, "mpi4py": mpi4py.__version__,
            "mpi": MPI.Get_library_version().strip().splitlines()[0].strip(),
            "python": platform.python_version()}


def _fail(comm: Any, out_dir: str, where: dict, exc: BaseException) -> None:
    """Record this rank's failure and abort the whole job."""
    rank = comm.Get_rank()
    info = {"rank": rank, "size": comm.Get_size(), "host": socket.gethostname(),
            "pid": os.getpid(), "type": type(exc).__name__, "message": str(exc),
            "traceback": "".join(traceback.format_exception(type(exc), exc,
                                                            exc.__traceback__)),
            **where}
    try:
        _write_json_atomic(os.path.join(out_dir, f"rank-{rank}.error.json"), info)
    except OSError:
        pass
    task = f" in [{where['case']}/{where['cases']}] {where['label']}" if "case" in where else ""
    print(f"distmat-launch: rank {rank} failed{task}: {type(exc).__name__}: {exc}",
          file=sys.stderr, flush=True)
    comm.Abort(3)


class _Runner:
    def __init__(self, plan: dict, comm: Any):
        import distmat as dm

        self.plan = plan
        self.comm = comm
        self.rank = comm.Get_rank()
        self.dm = dm
        self.grid = dm.ProcessGrid(comm, tuple(plan["grid"]))
        self.out_dir = plan["out_dir"]
        self.results = plan["results"]
        self.records = read_jsonl(self.results) if self.rank == 0 else []
        self.versions = _versions()
        procs = comm.allgather({"rank": self.rank, "host": socket.gethostname(),
                                "pid": os.getpid()})
        self.hosts = sorted({p["host"] for p in procs})
        if self.rank == 0:  # lets the launcher name a rank that dies without a traceback
            _write_json_atomic(os.path.join(self.out_dir, "ranks.json"), {"ranks": procs})
        self.ctx = T.Context(self.grid, M.AlphaBeta(source="none"), self.out_dir,
                             plan["config_dir"], self.say)

    def say(self, text: str) -> None:
        if self.rank == 0:
            print(text, flush=True)

    def base_record(self) -> dict:
        return {"job": self.plan["job"]["name"], "run_id": self.plan["run_id"],
                "ranks": self.grid.size, "grid": list(self.grid.shape),
                "host": self.hosts[0], "hosts": self.hosts, "versions": self.versions,
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def emit(self, record: dict) -> None:
        if self.rank == 0:
            self.records.append(record)
            write_jsonl_atomic(self.results, self.records)

    def calibrate(self) -> None:
        size = self.grid.size
        if size == 1:
            self.ctx.ab = M.AlphaBeta(0.0, 0.0, "single rank (no communication)")
            return
        sizes = [8, 1024, 16384, 262144, 1048576]
        rows, ok = T.pingpong_sweep(self.grid.comm, sizes, 20, size - 1)
        a, b = M.fit_alpha_beta([r["bytes"] for r in rows], [r["seconds"] for r in rows])
        self.ctx.ab = M.AlphaBeta(a, b, "startup ping-pong")
        self.emit({"record": "calibration", **self.base_record(), "op": "pingpong",
                   "sizes": rows, "fit": self.ctx.ab.as_dict(), "passed": ok})
        bw = f"{1e-9 / b:.2f} GB/s" if b > 0 else "inf"
        self.say(f"# alpha-beta model: alpha = {a * 1e6:.2f} us, 1/beta = {bw} "
                 f"(ping-pong rank 0 <-> rank {size - 1})")

    def run_case(self, i: int, n: int, case: dict) -> None:
        dm, comm = self.dm, self.grid.comm
        p = case["params"]
        op = case["op"]
        label = case["label"]
        self.say(f"[{i}/{n}] {label}  (grid {self.grid.shape[0]}x{self.grid.shape[1]}, "
                 f"{p['dtype']})")
        c = T.build(self.ctx, op, p)
        for _ in range(p["warmup"]):
            if c.prepare:
                c.prepare()
            c.run()
        out = None
        for rep in range(1, p["repeat"] + 1):
            if c.prepare:
                c.prepare()
            comm.Barrier()
            with dm.profile(self.grid) as prof:
                t0 = time.perf_counter()
                out = c.run()
                dt = time.perf_counter() - t0
            tt = comm.allgather(dt)
            tmax, tmin = max(tt), min(tt)
            residual = passed = None
            if p["check"] and c.check is not None:
                residual, passed = c.check(out)
            rec = self.record(case, c, rep, tmax, tmin, prof, residual, passed)
            self.emit(rec)
            gf = f"{rec['gflops']:9.3f} GFLOP/s" if rec["gflops"] else " " * 17
            self.say(f"      rep {rep}/{p['repeat']} {tmax:10.4f} s {gf}  comm "
                     f"{100 * rec['comm_share']:5.1f}%  {rec['status']}")
        if p["output"] and c.save is not None and out is not None:
            path = p["output"] if os.path.isabs(p["output"]) else os.path.join(self.out_dir,
                                                                             p["output"])
            dm.save(c.save(out), path)
            self.say(f"      wrote {path}")
        if op == "pingpong":
            fit = c.extra["_state"].get("fit")
            if fit is not None:
                self.ctx.ab = M.AlphaBeta(fit.alpha, fit.beta, "pingpong task")
        if c.close:
            c.close()

    def record(self, case: dict, c: T.Case, rep: int, tmax: float, tmin: float, prof: Any,
               residual: float | None, passed: bool | None) -> dict:
        p = case["params"]
        tot = prof.total
        nr = self.grid.size
        flops = c.flops
        extra = {k: v for k, v in c.extra.items() if not k.startswith("_")}
        if "_calibration" in c.extra:
            extra.update(c.extra["_calibration"]())
        if "_iters" in c.extra:
            iters = c.extra["_iters"]["iters"]
            extra["iterations"] = iters
            flops = iters * c.extra["_per_iter_flops"] * (4 if p["dtype"].startswith("c")
                                                           else 1)
        comm = {"bytes_sent_max": tot.bytes_sent.max, "bytes_sent_mean": tot.bytes_sent.sum / nr,
                "bytes_recv_max": tot.bytes_recv.max, "bytes_recv_mean": tot.bytes_recv.sum / nr,
                "msgs_sent_max": tot.msgs_sent.max, "msgs_sent_mean": tot.msgs_sent.sum / nr,
                "msgs_recv_max": tot.msgs_recv.max, "msgs_recv_mean": tot.msgs_recv.sum / nr,
                "mpi_seconds_max": tot.seconds.max, "mpi_seconds_mean": tot.seconds.sum / nr,
                "by_operation": {k: {"bytes_recv_max": v.bytes_recv.max,
                                     "bytes_sent_max": v.bytes_sent.max,
                                     "seconds_max": v.seconds.max}
                                 for k, v in prof.ops.items()}}
        mod: dict = {**self.ctx.ab.as_dict()}
        if c.model is not None:
            mod.update(c.model(self.ctx.ab))
            item = c.itemsize
            if mod.get("model_words") is not None:
                mod["model_bytes"] = mod["model_words"] * item
            if "bound_words" in mod:
                mod["bound_bytes"] = mod["bound_words"] * item
                mod["bound_bytes_mi"] = mod.get("bound_words_mi", 0.0) * item
        meas = comm["bytes_recv_max"]
        if mod.get("model_bytes") is not None and mod["model_bytes"] > 0:
            mod["measured_over_model"] = meas / mod["model_bytes"]
        if mod.get("bound_bytes"):
            mod["measured_over_bound"] = meas / mod["bound_bytes"]
        status = "DONE" if passed is None else ("PASSED" if passed else "FAILED")
        shown = {k: v for k, v in p.items() if k not in ("warmup", "repeat", "check", "name")}
        return {"record": "task", **self.base_record(), "task_index": case["task_index"],
                "case": case["index"], "cases": case["count"], "name": case["name"],
                "op": case["op"], "label": case["label"], "params": shown,
                "rep": rep, "repeat": p["repeat"], "dtype": p["dtype"], "time_s": tmax,
                "time_min_s": tmin, "flops": flops,
                "gflops": flops / tmax / 1e9 if flops and tmax > 0 else None,
                "comm": comm, "comm_share": min(1.0, tot.seconds.max / tmax) if tmax > 0 else 0.0,
                "model": mod, "check": None if passed is None else {
                    "residual": residual, "tolerance": p["tolerance"], "passed": passed},
                "status": status, **extra}


def main(argv: list[str] | None = None) -> int:
    """Run the plan file given as the only argument. Collective over COMM_WORLD."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m mpi4py -m launch.runner PLAN.json", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        plan = json.load(f)
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    want = plan["ranks"]
    if comm.Get_size() != want:
        msg = (f"the MPI world has {comm.Get_size()} rank(s) but the job was planned for "
               f"{want}: check the rank count, or that mpi4py's MPI matches the launcher's "
               f"(with mismatched PMI every process starts alone as rank 0 of 1)")
        print(f"distmat-launch: {msg}", file=sys.stderr, flush=True)
        if comm.Get_rank() == 0:
            try:
                _write_json_atomic(os.path.join(plan["out_dir"], "rank-0.error.json"),
                                   {"rank": 0, "type": "WorldSizeMismatch", "message": msg,
                                    "traceback": ""})
            except OSError:
                pass
        return 3
    where: dict = {}
    try:
        runner = _Runner(plan, comm)
        runner.say(f"# job {plan['job']['name']}: {len(plan['cases'])} case(s) on "
                   f"{comm.Get_size()} rank(s), grid {plan['grid'][0]}x{plan['grid'][1]}, "
                   f"{runner.versions['mpi']}")
        if plan["job"].get("calibrate", True):
            where = {"label": "startup calibration"}
            runner.calibrate()
        n = len(plan["cases"])
        for i, case in enumerate(plan["cases"], 1):
            where = {"case": i, "cases": n, "label": case["label"], "op": case["op"],
                     "task_index": case["task_index"]}
            runner.run_case(i, n, case)
        where = {"label": "shutdown"}
        comm.Barrier()
        runner.grid.free()
    except BaseException as e:  # noqa: BLE001 - any failure ends the whole job
        _fail(comm, plan["out_dir"], where, e)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
