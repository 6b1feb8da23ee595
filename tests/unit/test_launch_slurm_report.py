"""Slurm scripts (acceptance 2), report tables and the PNG plot (acceptance 6), no MPI."""

import json
import sys
import textwrap

import pytest

from launch import cli, report
from launch.slurm import sbatch_script


def test_sbatch_script_lines():
    text = sbatch_script("/jobs/matmul.toml", "matmul", 4, 8, time="01:30:00",
                         partition="compute", out_dir="/scratch/out", python="/venv/bin/python",
                         sets=["task.n=1024"])
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    for want in ("#SBATCH --job-name=matmul", "#SBATCH --nodes=4",
                 "#SBATCH --ntasks-per-node=8", "#SBATCH --time=01:30:00",
                 "#SBATCH --partition=compute", "set -euo pipefail",
                 'if [ "${SLURM_NTASKS:-0}" -ne 32 ]; then',
                 "/venv/bin/python -m launch.cli run /jobs/matmul.toml --launcher srun --np 32 "
                 "--out /scratch/out --set task.n=1024"):
        assert want in lines, want
    # every #SBATCH line comes before the first command
    first_cmd = next(i for i, s in enumerate(lines) if s and not s.startswith("#"))
    assert all(i < first_cmd for i, s in enumerate(lines) if s.startswith("#SBATCH"))
    with pytest.raises(ValueError, match="--time"):
        sbatch_script("a.toml", "a", 1, 1, time="90 minutes")
    default = sbatch_script("a.toml", "my job", 1, 2)
    assert "#SBATCH --job-name=my_job" in default and "--time" not in default
    assert '"results/my_job-$SLURM_JOB_ID"' in default


def test_slurm_command_validates_and_writes(tmp_path, capsys):
    cfg = tmp_path / "j.toml"
    cfg.write_text('[job]\ngrid = [2, 4]\n[[task]]\nop = "transpose"\nn = 8\n')
    out = tmp_path / "j.sbatch"
    code = cli.main(["slurm", str(cfg), "--nodes", "2", "--ntasks-per-node", "4", "-o",
                     str(out), "--time", "00:10:00"])
    assert code == 0 and out.exists()
    text = out.read_text()
    assert "#SBATCH --nodes=2" in text and f"{sys.executable} -m launch.cli run" in text
    code = cli.main(["slurm", str(cfg), "--nodes", "1", "--ntasks-per-node", "4", "-o", "-"])
    err = capsys.readouterr().err
    assert code == 2 and "needs 8 ranks but the job runs on 4" in err


def _records():
    recs = []
    for ranks in (1, 2, 4):
        for n in (256, 512):
            t = 1e-3 * n / 256 / ranks
            recs.append({"record": "task", "job": "scaling", "run_id": "x", "op": "matmul",
                         "label": f"matmul n={n}", "params": {"n": n, "m": 0, "k": 0},
                         "ranks": ranks, "grid": [1, ranks], "rep": 1, "repeat": 1,
                         "time_s": t, "gflops": 2 * n ** 3 / t / 1e9,
                         "comm_share": 0.1 * (ranks - 1),
                         "comm": {"bytes_recv_max": 8.0 * n * n * (ranks - 1) / ranks},
                         "model": {"model_bytes": 8.0 * n * n * (ranks - 1) / ranks,
                                   "bound_bytes": 1.0 * n * (ranks - 1),
                                   "measured_over_model": 1.0},
                         "check": {"residual": 0.01, "passed": True}, "status": "PASSED"})
    recs.append({"record": "calibration", "ranks": 2, "op": "pingpong",
                 "sizes": [{"bytes": 8, "seconds": 2e-6}, {"bytes": 1 << 20, "seconds": 5e-4}],
                 "fit": {"alpha_s": 2e-6, "bandwidth_GBps": 2.0}})
    return recs


def test_tables():
    text, passed, failed = report.summary(_records())
    assert passed == 6 and failed == 0
    lines = text.splitlines()
    head = next(s for s in lines if s.startswith("# task"))
    assert "GFLOP/s" in head and "comm%" in head and "bound B" in head and "check" in head
    rows = [s for s in lines if s.strip().startswith("matmul")]
    assert len(rows) == 6 and all(r.endswith("PASSED") for r in rows)
    assert len({len(r) for r in rows}) == 1  # fixed width
    assert "Latency (us)" in text and "alpha = 2.00 us" in text


def test_report_plot_png(tmp_path, capsys):
    res = tmp_path / "results.jsonl"
    res.write_text("".join(json.dumps(r) + "\n" for r in _records()))
    png = tmp_path / "scaling.png"
    assert cli.main(["report", str(tmp_path), "--plot", str(png)]) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert "plot:" in capsys.readouterr().out


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, monkeypatch, capsys):
    res = tmp_path / "r.jsonl"
    res.write_text("".join(json.dumps(r) + "\n" for r in _records()))
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code = cli.main(["report", str(res), "--plot", str(tmp_path / "x.png")])
    assert code == 2 and "pip install 'distmat[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_report_rejects_a_broken_file(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(textwrap.dedent("""\
        {"record": "task"}
        {"record": "ta
    """))
    assert cli.main(["report", str(bad)]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
