"""Job-file validation (acceptance 3), sweeps, --set and --dry-run, all without MPI."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from launch import cli, tasks
from launch.config import ConfigError, load_job, parse_set

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def write(tmp_path, text, name="job.toml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


@pytest.fixture
def no_mpi(monkeypatch):
    """Fail the test if anything tries to start a process."""
    def boom(*a, **k):
        raise AssertionError(f"a process was started: {a}")
    monkeypatch.setattr(subprocess, "Popen", boom)
    monkeypatch.setattr(cli.subprocess, "Popen", boom)


def run_cli(args, capsys):
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


GOOD = """
    [job]
    ranks = 2
    [[task]]
    op = "transpose"
    n = 64
"""


def test_good_job_expands(tmp_path):
    job = load_job(write(tmp_path, GOOD))
    assert job.name == "job" and job.rank_counts == [2]
    assert [c.op for c in job.cases] == ["transpose"]
    p = job.cases[0].params
    assert p["n"] == 64 and p["m"] == 0 and p["repeat"] == 3 and p["dtype"] == "float64"


def test_malformed_toml_names_line_and_column(tmp_path, capsys, no_mpi):
    path = write(tmp_path, """
        [job]
        ranks = 2
        [[task]]
        op = "transpose
        n = 64
    """)
    code, _, err = run_cli(["run", path], capsys)
    assert code == 2
    assert "malformed TOML" in err and "line 5" in err and "column" in err


def test_array_left_open_at_end_names_where_it_opened(tmp_path, capsys, no_mpi):
    path = write(tmp_path, """
        [job]
        ranks = 2
        [[task]]
        op = "matmul"  # a comment with [ in it
        name = "x[\\"y"
        n = [64, 128
    """)
    code, _, err = run_cli(["run", path], capsys)
    assert code == 2
    assert "end of document" in err and "line 7, column 5 is never closed" in err


def test_unknown_key_suggests_closest(tmp_path, capsys, no_mpi):
    path = write(tmp_path, GOOD + "repaet = 2\n")
    code, _, err = run_cli(["run", path], capsys)
    assert code == 2
    assert "unknown key 'repaet'" in err and "did you mean 'repeat'" in err
    path = write(tmp_path, GOOD.replace("ranks", "rank"), "j2.toml")
    code, _, err = run_cli(["run", path], capsys)
    assert code == 2 and "[job]: unknown key 'rank'" in err and "'ranks'" in err


def test_unknown_operation_suggests_closest(tmp_path, capsys, no_mpi):
    path = write(tmp_path, GOOD.replace('"transpose"', '"transpos"'))
    code, _, err = run_cli(["run", path], capsys)
    assert code == 2
    assert "unknown operation 'transpos'" in err and "did you mean 'transpose'" in err


def test_impossible_grid_and_rank_mismatch(tmp_path, capsys, no_mpi):
    path = write(tmp_path, GOOD.replace("ranks = 2", "ranks = 3\ngrid = [2, 2]"))
    code, _, err = run_cli(["run", path], capsys)
    assert code == 2 and "grid [2, 2] needs 4 ranks but the job runs on 3" in err
    path = write(tmp_path, GOOD.replace("ranks = 2", "grid = [2, 2]"), "j2.toml")
    code, _, err = run_cli(["run", path, "--np", "4", "--dry-run"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["run", path, "--np", "2"], capsys)
    assert code == 2 and "needs 4 ranks but the job runs on 2" in err
    path = write(tmp_path, GOOD.replace("ranks = 2", "grid = [0, 2]"), "j3.toml")
    code, _, err = run_cli(["run", path], capsys)
    assert code == 2 and "'grid' must be \"auto\" or [pr, pc]" in err


def test_bad_values_and_sizes(tmp_path):
    path = write(tmp_path, """
        [job]
        dtype = "float16"
        [[task]]
        op = "matmul"
        n = -4
        [[task]]
        op = "pingpong"
        [[task]]
        op = "spmm"
        n = 8
        blocksize = 16
        density = 1.5
        [[task]]
        op = "redistribute"
        n = 10
        to_block = [0, 3]
        [[task]]
        op = "cg"
    """)
    with pytest.raises(ConfigError) as e:
        load_job(path, np_override=1)
    text = str(e.value)
    assert "'dtype' must be one of float32" in text
    assert "'n' must be >= 1, got -4" in text
    assert "'pingpong' needs at least 2 ranks, but the job runs on 1" in text
    assert "'density' must be <= 1" in text
    assert "'to_block' must be [rows, cols]" in text
    assert "missing required parameter 'nx'" in text


def test_spmm_block_larger_than_matrix(tmp_path):
    path = write(tmp_path, """
        [[task]]
        op = "spmm"
        n = 8
        blocksize = 16
    """)
    with pytest.raises(ConfigError, match="blocksize 16 is larger than the matrix"):
        load_job(path)


def test_unavailable_operation(tmp_path, monkeypatch, capsys, no_mpi):
    fake = tasks.OpSpec("frobnicate", "test op", {"n": tasks.Param("int", 1)},
                        requires=("distmat.does_not_exist", "frob"))
    monkeypatch.setitem(tasks.OPS, "frobnicate", fake)
    path = write(tmp_path, GOOD + '[[task]]\nop = "frobnicate"\n')
    code, _, err = run_cli(["run", path], capsys)
    assert code == 2
    assert ("operation 'frobnicate' is not available in this build "
            "(distmat.does_not_exist missing)") in err
    path = write(tmp_path, GOOD + '[[task]]\nop = "frobnicate"\noptional = true\n', "o.toml")
    job = load_job(path)
    assert [c.op for c in job.cases] == ["transpose"]
    assert "skipped" in job.skipped[0]


def test_sweeps(tmp_path):
    path = write(tmp_path, """
        [job]
        ranks = [1, 2]
        [[task]]
        op = "transpose"
        n = [32, 64]
        dtype = ["float32", "float64"]
        block = [[4, 4], [8, 8]]
        [[task]]
        op = "redistribute"
        n = 16
        block = [2, 3]
        to_block = [4, 4]
        [[task]]
        op = "bcast"
        sizes = [8, 64]
    """)
    job = load_job(path)
    assert job.rank_counts == [1, 2]
    t = [c for c in job.cases if c.op == "transpose"]
    assert len(t) == 8
    assert {(c.params["n"], c.params["dtype"], tuple(c.params["block"])) for c in t} == {
        (n, d, b) for n in (32, 64) for d in ("float32", "float64") for b in ((4, 4), (8, 8))}
    r = [c for c in job.cases if c.op == "redistribute"]
    assert len(r) == 1 and r[0].params["block"] == [2, 3] and r[0].params["to_block"] == [4, 4]
    b = [c for c in job.cases if c.op == "bcast"]
    assert len(b) == 1 and b[0].params["sizes"] == [8, 64]


def test_set_overrides(tmp_path):
    path = write(tmp_path, """
        [job]
        ranks = 2
        [[task]]
        name = "big"
        op = "transpose"
        n = 4096
        [[task]]
        op = "matmul"
        n = 4096
        [[task]]
        op = "cg"
        nx = 100
    """)
    job = load_job(path, ["task.n=16", "task.big.repeat=1", "task.2.nx=5", "job.ranks=[1, 2]",
                          "seed=9"])
    assert [c.params["n"] for c in job.cases if "n" in c.params] == [16, 16]
    assert job.cases[0].params["repeat"] == 1 and job.cases[1].params["repeat"] == 3
    assert job.cases[2].params["nx"] == 5
    assert job.rank_counts == [1, 2] and all(c.params["seed"] == 9 for c in job.cases)
    with pytest.raises(ConfigError, match="no task takes a parameter 'density'"):
        load_job(path, ["task.density=0.1"])
    with pytest.raises(ConfigError, match="no task with index or name 'nope'"):
        load_job(path, ["task.nope.n=3"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_job(path, ["task.n"])
    assert parse_set("task.name=abc") == (["task", "name"], "abc")
    assert parse_set("job.grid=[1, 2]") == (["job", "grid"], [1, 2])


def test_dry_run_prints_exact_command(tmp_path, capsys, no_mpi):
    path = write(tmp_path, GOOD)
    out_dir = tmp_path / "out"
    code, out, err = run_cli(["run", path, "--np", "3", "--dry-run", "--out", out_dir,
                              "--mpiexec", sys.executable, "--", "-bind-to", "core"], capsys)
    assert code == 0, err
    plan = out_dir / "plan-np3.json"
    want = (f"{sys.executable} -n 3 -bind-to core {sys.executable} -m mpi4py -m launch.runner "
            f"{plan}")
    assert want in out.splitlines()
    assert plan.exists()
    code, out, _ = run_cli(["run", path, "--dry-run", "--out", out_dir, "--launcher", "srun",
                            "--mpiexec", sys.executable], capsys)
    assert code == 0 and f"{sys.executable} -n 2 {sys.executable} -m mpi4py" in out


def test_every_shipped_config_validates():
    for path in sorted(CONFIGS.glob("*.toml")):
        job = load_job(path)
        assert job.cases, path


def test_reference_documents_every_key():
    text = (CONFIGS / "README.md").read_text()
    from launch.config import JOB_KEYS

    keys = set(JOB_KEYS) | set(tasks.COMMON) | set(tasks.TASK_ONLY)
    for spec in tasks.OPS.values():
        assert f"`{spec.name}`" in text, spec.name
        keys |= set(spec.params)
    missing = sorted(k for k in keys if f"`{k}`" not in text)
    assert not missing, f"configs/README.md does not document {missing}"


def test_cli_subprocess_exit_code_2(tmp_path):
    path = write(tmp_path, GOOD + "bogus = 1\n")
    r = subprocess.run([sys.executable, "-m", "launch.cli", "run", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown key 'bogus'" in r.stderr
    assert not (tmp_path / "results").exists()


def test_labels_name_changed_parameters_and_the_norm_order(tmp_path, no_mpi):
    path = write(tmp_path, """
        [job]
        ranks = 2
        [[task]]
        op = "norm"
        n = 64
        [[task]]
        op = "norm"
        n = 64
        ord = "inf"
    """)
    labels = [c.label() for c in load_job(path, check_available=False).cases]
    assert labels == ["norm n=64 ord=fro", "norm n=64 ord=inf"]
