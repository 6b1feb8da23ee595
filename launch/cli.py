"""``distmat-launch``: validate a job file, run it under mpiexec or srun, report results.

Exit codes: 0 every task ran and every check passed; 1 a check FAILED (or a task did not
produce its records); 2 the job file or the command line is invalid (nothing was started);
3 the job failed while running (a rank raised or was killed); 4 the job passed its timeout
and was killed; 130 interrupted.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from . import report as R
from .config import ConfigError, Job, load_job, resolve_grid
from .runner import read_jsonl, write_jsonl_atomic

__all__ = ["main", "build_command"]

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_CRASH, EXIT_TIMEOUT = 0, 1, 2, 3, 4


def _err(msg: str) -> None:
    print(f"distmat-launch: {msg}", file=sys.stderr, flush=True)


def _default_mpiexec() -> str:
    """The mpiexec next to this Python (the venv's, from the mpich wheel), else PATH's."""
    here = Path(sys.executable).parent / "mpiexec"
    if here.exists():
        return str(here)
    return shutil.which("mpiexec") or "mpiexec"


def build_command(launcher: str, mpiexec: str | None, np_: int, plan: str, python: str,
                  extra: list[str]) -> list[str]:
    """The command that starts the job runner on ``np_`` ranks."""
    runner = [python, "-m", "mpi4py", "-m", "launch.runner", plan]
    if launcher == "srun":
        return [mpiexec or "srun", "-n", str(np_), *extra, *runner]
    return [mpiexec or _default_mpiexec(), "-n", str(np_), *extra, *runner]


def _split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="distmat-launch", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="validate and run a job file",
                         description="Validate CONFIG, start the job under MPI, stream rank "
                         "0's progress, print the results table. Arguments after '--' are "
                         "passed to mpiexec/srun.")
    run.add_argument("config")
    run.add_argument("--np", type=int, help="MPI ranks (overrides [job] ranks)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a key: job.KEY, task.KEY (every task taking it) or "
                     "task.NAME.KEY (NAME or 0-based index); VALUE is TOML (a list sweeps)")
    run.add_argument("--out", help="output directory (default results/NAME-TIMESTAMP)")
    run.add_argument("--timeout", type=float, help="seconds before the whole job is killed")
    run.add_argument("--dry-run", action="store_true",
                     help="validate, write the plan and print the exact command; start nothing")
    run.add_argument("--launcher", choices=("mpiexec", "srun"), default="mpiexec")
    run.add_argument("--mpiexec", help="path of mpiexec/srun (default: this environment's)")
    run.add_argument("--python", default=sys.executable, help="Python for the ranks")

    sl = sub.add_parser("slurm", help="write an sbatch script that runs the job with srun")
    sl.add_argument("config")
    sl.add_argument("--nodes", type=int, required=True)
    sl.add_argument("--ntasks-per-node", type=int, required=True)
    sl.add_argument("--time", help="wall time limit HH:MM:SS")
    sl.add_argument("--partition")
    sl.add_argument("--account")
    sl.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sl.add_argument("--out", help="result directory used by the batch job")
    sl.add_argument("-o", "--output", help="script file (default NAME.sbatch; '-' prints)")

    rp = sub.add_parser("report", help="tables (and a plot) from result files")
    rp.add_argument("results", nargs="+", help="results.jsonl files or output directories")
    rp.add_argument("--plot", metavar="FILE.png", help="draw GFLOP/s, comm share and bytes")

    ops = sub.add_parser("ops", help="list the operations a job file can use")
    ops.add_argument("op", nargs="?", help="show one operation's parameters")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    argv, passthrough = _split_passthrough(argv)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        return EXIT_CONFIG if e.code not in (0, None) else 0
    try:
        if args.command == "run":
            return _cmd_run(args, passthrough)
        if args.command == "slurm":
            return _cmd_slurm(args)
        if args.command == "report":
            return _cmd_report(args)
        return _cmd_ops(args)
    except ConfigError as e:
        config = getattr(args, "config", "")
        _err(f"invalid job {config}:" if len(e.problems) > 1 or config else "invalid input:")
        for p in e.problems:
            print(f"  - {p}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


# ----------------------------------------------------------------------------- run


def _plan(job: Job, np_: int, out_dir: str, results: str, run_id: str) -> dict:
    grid = resolve_grid(job.job["grid"], np_)
    n = len(job.cases)
    cases = [{"index": i, "count": n, "task_index": c.task_index, "name": c.name, "op": c.op,
              "label": c.label(), "params": c.params} for i, c in enumerate(job.cases, 1)]
    return {"job": job.job, "config": os.path.abspath(job.path),
            "config_dir": os.path.dirname(os.path.abspath(job.path)), "ranks": np_,
            "grid": list(grid), "out_dir": os.path.abspath(out_dir),
            "results": os.path.abspath(results), "run_id": run_id, "cases": cases}


def _cmd_run(args: argparse.Namespace, passthrough: list[str]) -> int:
    job = load_job(args.config, args.set, args.np)
    for note in job.skipped:
        print(f"# note: {note}", flush=True)
    timeout = args.timeout if args.timeout is not None else (job.job["timeout"] or None)
    if timeout is not None and timeout <= 0:
        raise ConfigError([f"--timeout must be positive, got {timeout}"])
    exe = args.mpiexec or (_default_mpiexec() if args.launcher == "mpiexec" else "srun")
    if shutil.which(exe) is None and not os.access(exe, os.X_OK):
        raise ConfigError([f"{args.launcher} not found: {exe!r} (use --mpiexec PATH)"])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = args.out or os.path.join("results", f"{job.name}-{stamp}")
    os.makedirs(out_dir, exist_ok=True)
    results = os.path.join(out_dir, "results.jsonl")
    run_id = f"{stamp}-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(k, "1")
    commands = []
    for np_ in job.rank_counts:
        plan = _plan(job, np_, out_dir, results, run_id)
        plan_path = os.path.join(out_dir, f"plan-np{np_}.json")
        tmp = plan_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(plan, f, indent=1)
        os.replace(tmp, plan_path)
        commands.append((np_, build_command(args.launcher, exe, np_, plan_path, args.python,
                                            passthrough)))
    if args.dry_run:
        print(f"# job {job.name}: {len(job.cases)} case(s), {len(commands)} run(s); plans in "
              f"{out_dir}")
        for _, cmd in commands:
            print(shlex.join(cmd))
        return EXIT_OK
    start = time.monotonic()
    expected = 0
    for np_, cmd in commands:
        remaining = None if timeout is None else timeout - (time.monotonic() - start)
        code = _launch(cmd, env, out_dir, results, run_id, np_, remaining, timeout)
        if code != EXIT_OK:
            return code
        expected += sum(c.params["repeat"] for c in job.cases)
    records = [r for r in read_jsonl(results) if r.get("run_id") == run_id]
    text, passed, failed = R.summary(records)
    print()
    print(text)
    got = sum(r.get("record") == "task" for r in records)
    print(f"results: {results}")
    if got != expected:
        _err(f"expected {expected} task record(s), found {got}")
        return EXIT_FAILED
    return EXIT_FAILED if failed else EXIT_OK


class _Streamer(threading.Thread):
    """Copy a pipe line by line to a stream, keeping the last lines."""

    def __init__(self, pipe, sink, bar: bool = False):
        super().__init__(daemon=True)
        self.pipe, self.sink, self.bar = pipe, sink, bar
        self.tail: list[str] = []
        self._bar_shown = False

    def run(self) -> None:
        for line in iter(self.pipe.readline, ""):
            self.tail = (self.tail + [line.rstrip("\n")])[-60:]
            if self._bar_shown:
                self.sink.write("\r\033[K")
                self._bar_shown = False
            self.sink.write(line)
            m = re.match(r"^\[(\d+)/(\d+)\]", line)
            if self.bar and m:
                i, n = int(m.group(1)), int(m.group(2))
                done = int(30 * (i - 1) / max(n, 1))
                self.sink.write(f"[{'#' * done}{'.' * (30 - done)}] {i - 1}/{n} done")
                self._bar_shown = True
            self.sink.flush()
        if self._bar_shown:
            self.sink.write("\r\033[K")
            self.sink.flush()


def _kill_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            if sig == signal.SIGKILL:
                return
            # the leader is gone; make sure no rank of the group survives it
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return
        except subprocess.TimeoutExpired:
            continue


def _launch(cmd: list[str], env: dict, out_dir: str, results: str, run_id: str, np_: int,
            remaining: float | None, timeout: float | None) -> int:
    for stale in glob.glob(os.path.join(out_dir, "rank-*.error.json")):
        os.unlink(stale)
    print(f"# {shlex.join(cmd)}", flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            bufsize=1, env=env, start_new_session=True)
    out = _Streamer(proc.stdout, sys.stdout, bar=sys.stdout.isatty())
    err = _Streamer(proc.stderr, sys.stderr)
    out.start()
    err.start()
    timed_out = False
    try:
        proc.wait(timeout=None if remaining is None else max(remaining, 0.0))
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
    except KeyboardInterrupt:
        _kill_group(proc)
        raise
    finally:
        out.join(timeout=5)
        err.join(timeout=5)
    rc = proc.returncode
    if timed_out:
        reason = (f"the job passed its timeout of {timeout:g} s and was killed (the whole "
                  f"process group: mpiexec and every rank)")
        return _failed(reason, EXIT_TIMEOUT, out_dir, results, run_id, np_, out.tail)
    if rc == 0:
        return EXIT_OK
    return _failed(_diagnose(rc, out_dir, err.tail + out.tail), EXIT_CRASH, out_dir, results,
                   run_id, np_, out.tail)


def _diagnose(rc: int, out_dir: str, stderr_tail: list[str]) -> str:
    errors = []
    for f in glob.glob(os.path.join(out_dir, "rank-*.error.json")):
        try:
            with open(f) as fh:
                errors.append(json.load(fh))
        except (OSError, json.JSONDecodeError):
            continue
    if errors:
        errors.sort(key=lambda e: e.get("rank", 0))
        lines = []
        for e in errors:
            where = ""
            if "case" in e:
                where = f" in [{e['case']}/{e['cases']}] {e.get('label', '')}"
            elif e.get("label"):
                where = f" during {e['label']}"
            lines.append(f"rank {e.get('rank')} (host {e.get('host', '?')}, pid "
                         f"{e.get('pid', '?')}) failed{where}: {e.get('type')}: "
                         f"{e.get('message')}")
        tb = errors[0].get("traceback", "").rstrip().splitlines()[-6:]
        text = "\n  ".join(lines)
        if tb:
            text += "\n  traceback of rank {} (last lines; full text in {}):\n    {}".format(
                errors[0].get("rank"), os.path.join(out_dir, f"rank-{errors[0].get('rank')}"
                                                    ".error.json"), "\n    ".join(tb))
        return text
    text = "\n".join(stderr_tail)
    pid = re.search(r"PID\s+(\d+)\s+RUNNING AT\s+(\S+)", text)
    code = re.search(r"EXIT CODE:\s*(\d+)", text)
    sig = re.search(r"signal\s+(\d+)\)", text) or re.search(r"KILLED BY SIGNAL:\s*(\d+)",
                                                                text)
    who = "a rank"
    if pid:
        who = f"the process with pid {pid.group(1)} on {pid.group(2)}"
        try:
            with open(os.path.join(out_dir, "ranks.json")) as fh:
                for p in json.load(fh)["ranks"]:
                    if str(p["pid"]) == pid.group(1):
                        who = f"rank {p['rank']} (pid {p['pid']} on {p['host']})"
        except (OSError, ValueError, KeyError):
            pass
    how = "ended without a Python traceback"
    num = int(sig.group(1)) if sig else (int(code.group(1)) if code else None)
    if num is not None and (sig or num in (6, 9, 11, 15)):
        try:
            how = f"was killed by signal {num} ({signal.Signals(num).name})"
        except ValueError:
            how = f"was killed by signal {num}"
    elif code:
        how = f"exited with status {code.group(1)} without a Python traceback"
    if rc < 0:
        return f"mpiexec itself was killed by signal {-rc}"
    return f"{who} {how}; mpiexec exit status {rc}"


def _failed(reason: str, code: int, out_dir: str, results: str, run_id: str, np_: int,
            progress_tail: list[str]) -> int:
    records = read_jsonl(results)
    kept = sum(r.get("run_id") == run_id and r.get("record") == "task" for r in records)
    last = next((t for t in reversed(progress_tail) if t.startswith("[")), None)
    records.append({"record": "failure", "run_id": run_id, "ranks": np_, "reason": reason,
                    "exit_code": code, "last_progress": last, "completed_records": kept,
                    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    write_jsonl_atomic(results, records)
    done = [r for r in records if r.get("run_id") == run_id and r.get("record") == "task"]
    if done:
        print("\n" + R.task_table(done), flush=True)
    _err(f"job FAILED on {np_} rank(s): {reason}")
    if last:
        _err(f"last progress line: {last}")
    _err(f"{kept} completed task record(s) kept in {results} (marked by a 'failure' record)")
    return code


# ----------------------------------------------------------------------------- slurm


def _cmd_slurm(args: argparse.Namespace) -> int:
    from .slurm import sbatch_script

    if args.nodes < 1 or args.ntasks_per_node < 1:
        raise ConfigError([f"--nodes and --ntasks-per-node must be positive, got "
                           f"{args.nodes} and {args.ntasks_per_node}"])
    ntasks = args.nodes * args.ntasks_per_node
    job = load_job(args.config, args.set, ntasks)
    try:
        text = sbatch_script(os.path.abspath(args.config), job.name, args.nodes,
                             args.ntasks_per_node, args.time, args.partition, args.out,
                             sys.executable, args.set, account=args.account)
    except ValueError as e:
        raise ConfigError([str(e)]) from None
    if args.output == "-":
        sys.stdout.write(text)
        return EXIT_OK
    path = args.output or f"{job.name}.sbatch"
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)
    print(f"wrote {path}: sbatch {path}  ({ntasks} tasks on {args.nodes} node(s))")
    return EXIT_OK


# ----------------------------------------------------------------------------- report


def _cmd_report(args: argparse.Namespace) -> int:
    try:
        records = R.load(args.results)
    except (OSError, ValueError) as e:
        raise ConfigError([str(e)]) from None
    text, _, failed = R.summary(records)
    print(text)
    for r in records:
        if r.get("record") == "failure":
            print(f"# run {r.get('run_id')} FAILED on {r.get('ranks')} ranks: {r.get('reason')}")
    if args.plot:
        try:
            R.plot(records, args.plot)
        except R.PlotUnavailable as e:
            _err(str(e))
            return EXIT_CONFIG
        except ValueError as e:
            raise ConfigError([f"--plot: {e}"]) from None
        print(f"plot: {args.plot}")
    return EXIT_FAILED if failed else EXIT_OK


# ----------------------------------------------------------------------------- ops


def _cmd_ops(args: argparse.Namespace) -> int:
    from .tasks import COMMON, OPS, REQUIRED, unavailable

    names = [args.op] if args.op else sorted(OPS)
    for name in names:
        if name not in OPS:
            import difflib

            close = difflib.get_close_matches(name, list(OPS), n=1)
            raise ConfigError([f"unknown operation '{name}'" +
                               (f"; did you mean '{close[0]}'?" if close else "")])
        spec = OPS[name]
        why = unavailable(spec)
        state = "available" if why is None else f"NOT AVAILABLE ({why})"
        print(f"{name:<14} {spec.summary}  [{state}]")
        if args.op:
            for key, p in {**spec.params, **COMMON}.items():
                d = "required" if p.default is REQUIRED else f"default {p.default!r}"
                ch = f" one of {', '.join(p.choices)}" if p.choices else ""
                print(f"    {key:<12} {p.kind:<6} {d}{ch}  {p.help}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
