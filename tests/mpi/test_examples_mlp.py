"""The model-parallel MLP example (examples/mlp.py) at small size.

The communicator is split into sub-communicators of 1, 2, 3 and 4 ranks (as many as the run
has); each trains the same network on its own grid.  The loss curves must fall and agree to
float32 rounding across rank counts and grid shapes.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from distmat.testing import assert_all, subgrids

pytestmark = pytest.mark.mpi

_PATH = Path(__file__).resolve().parents[2] / "examples" / "mlp.py"
_spec = importlib.util.spec_from_file_location("distmat_example_mlp", _PATH)
mlp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mlp)

SMALL = dict(samples=120, features=10, hidden=(12, 9), classes=5, epochs=6, batch=40,
             block=4, seed=3, separation=1.0)
#: one grid per rank count, plus the transposed 2-rank grid
SHAPES = [(1, 1), (1, 2), (2, 1), (1, 3), (2, 2)]


def _curves(comm, **kw):
    """Train on each sub-grid; every rank gets ``{shape: curve or error text}``."""
    out = {}
    for shape, grid in subgrids(comm, SHAPES):
        res = None
        if grid is not None:
            try:
                res = mlp.train(grid, **kw)
            except Exception as e:  # noqa: BLE001 - reported below on every rank
                res = f"{type(e).__name__}: {e}"
        out[shape] = comm.bcast(res, root=0)  # rank 0 is in every sub-grid
    return out


@pytest.mark.parametrize("optimizer,comm_dtype,rtol", [("momentum", None, 1e-4),
                                                      ("adagrad", None, 1e-4),
                                                      ("nesterov", "bfloat16", 2e-2)])
def test_loss_falls_and_is_the_same_on_every_grid(comm, optimizer, comm_dtype, rtol):
    """Float32 rounding apart, every grid gives the same curve (with 16-bit panels: to about
    bfloat16's precision, since activations may round to neighbouring 16-bit values)."""
    curves = _curves(comm, optimizer=optimizer, comm_dtype=comm_dtype, **SMALL)
    errors = [f"{s}: {c}" for s, c in curves.items() if isinstance(c, str)]
    assert_all(comm, not errors, "; ".join(errors))
    ref = np.array(curves[(1, 1)])
    bad = []
    if ref.shape != (SMALL["epochs"],) or not np.all(np.isfinite(ref)):
        bad.append(f"1-rank curve {ref}")
    elif not (np.all(np.diff(ref) < 0) and ref[-1] < 0.6 * ref[0]):
        bad.append(f"loss does not fall: {ref}")
    for shape, c in curves.items():
        if not np.allclose(c, ref, rtol=rtol, atol=0):
            bad.append(f"grid {shape} curve {np.array(c)} differs from 1 rank {ref}")
    assert_all(comm, not bad, "; ".join(bad))
    assert len(curves) == sum(1 for s in SHAPES if s[0] * s[1] <= comm.Get_size())


def test_command_line_prints_loss_per_epoch(comm, capsys):
    argv = ["--samples", "64", "--features", "6", "--hidden", "8", "--classes", "3",
            "--epochs", "4", "--batch", "32", "--block", "4", "--optimizer", "rmsprop",
            "--separation", "0.8", "--profile"]
    curve = mlp.main(argv, comm=comm)
    out = capsys.readouterr().out.splitlines()
    ok = len(curve) == 4 and curve[-1] < curve[0]
    if comm.Get_rank() == 0:
        ok = ok and out[0].startswith("# MLP") and all(
            f"loss {v:.6f}" in line for v, line in zip(curve, out[1:5], strict=True))
        ok = ok and any(line.split()[:1] == ["softmax"] for line in out[5:])
        ok = ok and out[-1].startswith("# training time")
    else:
        ok = ok and out == []
    assert_all(comm, ok, f"curve {curve}, output {out}")


def test_bad_sizes_name_the_argument(comm):
    """batch=0 or samples=0 raise a ValueError naming the argument (was range()'s or a
    division's error), on every rank before any message."""
    msgs = []
    for shape, grid in subgrids(comm, [(1, 1), (1, 2)]):
        if grid is None:
            continue
        for name in ("batch", "samples"):
            try:
                mlp.train(grid, **{**SMALL, name: 0, "epochs": 1})
                msgs.append(f"{shape} {name}=0 did not raise")
            except ValueError as e:
                if name not in str(e):
                    msgs.append(f"{shape} {name}=0: {e}")
            except Exception as e:  # noqa: BLE001
                msgs.append(f"{shape} {name}=0: {type(e).__name__}: {e}")
    assert_all(comm, not msgs, "; ".join(msgs))
