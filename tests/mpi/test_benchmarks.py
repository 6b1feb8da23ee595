"""The benchmark scripts run end to end at toy sizes and report every row PASSED.

They are the documented commands behind the figures in the README; this keeps them from
rotting.  Sizes are tiny, so no timing is asserted, only that each script completes on every
rank, its checks (residuals, Freivalds, errors against numpy) pass and it returns 0.
"""

import importlib

import pytest

from distmat.testing import assert_all

pytestmark = pytest.mark.mpi

QUICK = ["--reps", "1", "--warmup", "0", "--out", ""]

CASES = {
    "matmul": ["--n", "64", "--dtype", "float64", "--form", "NN", "TN", "NT", *QUICK],
    "matmul-compressed": ["--n", "48", "--dtype", "float32", "--form", "NN", "TN",
                          "--comm-dtype", "bfloat16", *QUICK],
    "solve": ["--n", "96", "--block", "32", *QUICK],
    "qr": ["--m", "4000", "--n", "8", "--square", "64", "--block", "16", *QUICK],
    "svds": ["--m", "300", "--n", "80", "--k", "4", "--nmf-iters", "3", *QUICK],
    "sparse": ["--n", "256", "--bs", "16", "--density", "0.1", "--k", "4", "--cg-nx", "20",
               "--cg-ncomp", "4", "--cg-block-nx", "10", "--cg-iters", "3", "--reps", "1"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_benchmark_runs_and_passes(comm, case, capsys):
    module = importlib.import_module(f"distmat.bench.{case.split('-')[0]}")
    try:
        rc, err = module.main(CASES[case]), ""
    except Exception as e:  # noqa: BLE001 - agreed below
        rc, err = None, f"{type(e).__name__}: {e}"
    out = capsys.readouterr().out
    assert_all(comm, rc == 0, f"{case}: returned {rc} {err}\n{out[-800:]}")
