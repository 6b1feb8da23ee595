"""End-to-end runs of ``distmat-launch`` as a subprocess (acceptance 1, 2, 4 and 6).

Every shipped job file runs at small sizes; a task that raises on one rank, a rank killed
with SIGKILL and a job past its timeout each end quickly with a clear report and leave the
completed results intact.  Each test starts a few short MPI jobs (seconds each).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
QUICK = ["--set", "task.repeat=1", "--set", "task.warmup=0", "--set", "job.calibrate=false"]

SHRINK = {
    "demo": ["--np", "2", "--set", "task.n=64", "--set", "task.nx=8",
             "--set", "task.sizes=[8, 4096]"],
    "matmul": ["--np", "2", "--set", "task.n=64", "--set", "task.m=48", "--set", "task.k=40",
               "--set", "task.sizes=[8, 4096]"],
    "solve": ["--np", "2", "--set", "task.n=48", "--set", "task.nrhs=3"],
    "sparse": ["--np", "2", "--set", "task.n=64", "--set", "task.nx=8",
               "--set", "task.blocksize=4"],
    "EXAMPLE": ["--set", "task.n=40", "--set", "task.m=30"],
    "scaling": ["--set", "job.ranks=[1, 2]", "--set", "task.n=[48, 96]"],
}


def launch(args, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "launch.cli", *map(str, args)], cwd=ROOT,
                       capture_output=True, text=True, timeout=timeout, env=env)
    return r, time.monotonic() - t0


def records(out_dir):
    with open(Path(out_dir) / "results.jsonl") as f:
        return [json.loads(line) for line in f]


def test_every_shipped_config_is_covered():
    assert {p.stem for p in CONFIGS.glob("*.toml")} == set(SHRINK)


@pytest.mark.parametrize("name", sorted(SHRINK))
def test_shipped_config_runs_small(name, tmp_path):
    out = tmp_path / "out"
    r, _ = launch(["run", CONFIGS / f"{name}.toml", "--out", out, *SHRINK[name], *QUICK])
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert not any(s.rstrip().endswith("FAILED") for s in r.stdout.splitlines())
    assert " 0 FAILED" in r.stdout and "PASSED" in r.stdout
    tasks = [x for x in records(out) if x["record"] == "task"]
    assert tasks and all(x["status"] in ("PASSED", "DONE") for x in tasks)
    for x in tasks:
        assert x["time_s"] > 0 and x["ranks"] == x["grid"][0] * x["grid"][1]
        assert {"bytes_recv_max", "bytes_recv_mean", "msgs_sent_max"} <= set(x["comm"])
        assert 0.0 <= x["comm_share"] <= 1.0 and "alpha_s" in x["model"]
        assert x["versions"]["distmat"] and x["host"]
    lines = r.stdout.splitlines()
    assert any(s.startswith("[1/") for s in lines)  # rank 0's progress lines
    assert any(s.startswith("# task") and "GFLOP/s" in s for s in lines)
    if name == "scaling":
        assert {x["ranks"] for x in tasks} == {1, 2}
        mm = [x for x in tasks if x["op"] == "matmul"]
        assert all("bound_bytes" in x["model"] and "model_bytes" in x["model"] for x in mm)
        png = tmp_path / "scaling.png"
        r2, _ = launch(["report", out, "--plot", png])
        assert r2.returncode == 0, r2.stderr
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "matmul n=96" in r2.stdout


def _fault_job(tmp_path, mode, extra=""):
    cfg = tmp_path / "fault.toml"
    cfg.write_text(f"""
[job]
ranks = 2
calibrate = false
repeat = 2
warmup = 0
[[task]]
op = "transpose"
n = 40
[[task]]
op = "fault"
mode = "{mode}"
rank = 1
{extra}
[[task]]
op = "transpose"
n = 50
""")
    return cfg


def _gone(pids, within=10.0):
    end = time.monotonic() + within
    alive = list(pids)
    while alive and time.monotonic() < end:
        alive = []
        for p in pids:
            try:
                os.kill(p, 0)
                alive.append(p)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    return not alive


def _completed_intact(out):
    recs = records(out)
    done = [x for x in recs if x["record"] == "task"]
    assert len(done) == 2 and all(x["op"] == "transpose" and x["status"] == "PASSED"
                                  for x in done)
    fail = [x for x in recs if x["record"] == "failure"]
    assert len(fail) == 1 and fail[0]["completed_records"] == 2
    assert not list(Path(out).glob("*.tmp*"))
    return fail[0]


def test_exception_on_one_rank_ends_the_job(tmp_path):
    out = tmp_path / "out"
    r, dt = launch(["run", _fault_job(tmp_path, "raise"), "--out", out])
    assert r.returncode == 3, r.stderr
    assert dt < 60
    assert "rank 1" in r.stderr and "RuntimeError: deliberate failure" in r.stderr
    assert "in [2/3] fault" in r.stderr and "traceback of rank 1" in r.stderr
    err = json.loads((out / "rank-1.error.json").read_text())
    assert err["type"] == "RuntimeError" and "Traceback" in err["traceback"]
    f = _completed_intact(out)
    assert "RuntimeError" in f["reason"]


def test_rank_killed_by_sigkill_is_noticed(tmp_path):
    out = tmp_path / "out"
    r, dt = launch(["run", _fault_job(tmp_path, "kill"), "--out", out])
    assert r.returncode == 3, r.stderr
    assert dt < 60
    assert "rank 1" in r.stderr and "signal 9 (SIGKILL)" in r.stderr, r.stderr
    _completed_intact(out)
    pids = [p["pid"] for p in json.loads((out / "ranks.json").read_text())["ranks"]]
    assert _gone(pids), "ranks survived the job"


def test_timeout_kills_the_process_group(tmp_path):
    out = tmp_path / "out"
    r, dt = launch(["run", _fault_job(tmp_path, "hang"), "--out", out, "--timeout", "6"])
    assert r.returncode == 4, r.stderr
    assert 6 <= dt < 40
    assert "timeout of 6 s" in r.stderr and "killed" in r.stderr
    _completed_intact(out)
    pids = [p["pid"] for p in json.loads((out / "ranks.json").read_text())["ranks"]]
    assert _gone(pids), "ranks survived the timeout"


def test_inputs_and_outputs_through_files(tmp_path):
    import numpy as np

    out = tmp_path / "out"
    src = tmp_path / "m.npy"
    cfg = tmp_path / "io.toml"
    cfg.write_text(f"""
[job]
ranks = 3
calibrate = false
repeat = 1
warmup = 0
[[task]]
op = "save"
m = 20
n = 30
seed = 4
path = "{src}"
[[task]]
op = "transpose"
m = 20
n = 30
input = "m.npy"
block = [4, 7]
output = "t.npy"
[[task]]
op = "load"
path = "{out / 't.npy'}"
block = [3, 3]
""")
    r, _ = launch(["run", cfg, "--out", out])
    assert r.returncode == 0, f"{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    a, t = np.load(src), np.load(out / "t.npy")
    assert a.shape == (20, 30) and np.array_equal(t, a.T)
    assert len([x for x in records(out) if x["record"] == "task"]) == 3


def test_a_failed_check_gives_exit_1(tmp_path):
    cfg = tmp_path / "strict.toml"
    cfg.write_text("""
[job]
ranks = 1
repeat = 1
warmup = 0
[[task]]
op = "matmul"
n = 60
tolerance = 0.0         # rounding makes the residual positive: the check must fail
""")
    out = tmp_path / "out"
    r, _ = launch(["run", cfg, "--out", out])
    assert r.returncode == 1, r.stderr
    (rec,) = [x for x in records(out) if x["record"] == "task"]
    assert rec["status"] == "FAILED" and rec["check"]["residual"] > 0
    assert any(s.rstrip().endswith("FAILED") for s in r.stdout.splitlines())
