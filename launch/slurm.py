"""Slurm batch scripts for a job file (pure text generation)."""

from __future__ import annotations

import re
import shlex

__all__ = ["sbatch_script"]

_TIME = re.compile(r"^(\d+-)?\d{1,3}(:\d{2}){0,2}$")


def sbatch_script(config: str, job_name: str, nodes: int, ntasks_per_node: int,
                  time: str | None = None, partition: str | None = None,
                  out_dir: str | None = None, python: str = "python",
                  sets: list[str] | None = None, extra_srun: list[str] | None = None,
                  account: str | None = None) -> str:
    """An sbatch script that runs ``config`` with srun on ``nodes * ntasks_per_node`` ranks.

    The script checks that Slurm granted the task count it asked for, then runs
    ``distmat-launch run CONFIG --launcher srun --np N``; the job runner itself checks that
    the MPI world size equals N (with mismatched PMI each process would start alone).
    """
    if nodes < 1 or ntasks_per_node < 1:
        raise ValueError(f"--nodes and --ntasks-per-node must be positive, got {nodes} and "
                         f"{ntasks_per_node}")
    if time is not None and not _TIME.match(time):
        raise ValueError(f"--time must look like HH:MM:SS, MM:SS or D-HH:MM:SS, got {time!r}")
    ntasks = nodes * ntasks_per_node
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", job_name) or "distmat"
    lines = ["#!/bin/bash",
             f"#SBATCH --job-name={safe}",
             f"#SBATCH --nodes={nodes}",
             f"#SBATCH --ntasks-per-node={ntasks_per_node}",
             "#SBATCH --cpus-per-task=1",
             f"#SBATCH --output={safe}-%j.out"]
    if time:
        lines.append(f"#SBATCH --time={time}")
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if account:
        lines.append(f"#SBATCH --account={account}")
    out = out_dir or f"results/{safe}-$SLURM_JOB_ID"
    cmd = [python, "-m", "launch.cli", "run", config, "--launcher", "srun",
           "--np", str(ntasks), "--out", out]
    for s in sets or []:
        cmd += ["--set", s]
    if extra_srun:
        cmd += ["--"] + list(extra_srun)
    quoted = " ".join(shlex.quote(c) if "$SLURM_JOB_ID" not in c else f'"{c}"' for c in cmd)
    lines += [
        "",
        "set -euo pipefail",
        "export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1",
        "",
        f"# the allocation must hold exactly {ntasks} tasks",
        f'if [ "${{SLURM_NTASKS:-0}}" -ne {ntasks} ]; then',
        f'  echo "distmat: Slurm granted ${{SLURM_NTASKS:-0}} tasks, the job needs {ntasks}" >&2',
        "  exit 2",
        "fi",
        "",
        "# the launcher validates the job, then runs: srun -n N python -m mpi4py -m "
        "launch.runner",
        "# and the runner checks that the MPI world size is N (a PMI mismatch shows here)",
        quoted,
        "",
    ]
    return "\n".join(lines)
