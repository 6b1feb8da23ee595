"""A model-parallel multilayer perceptron trained with distmat (float32).

Run on any number of ranks (the loss curve is the same, to float32 rounding, on all of them;
with ``--comm-dtype`` to about the 16-bit format's precision)::

    mpiexec -n 2 python -m mpi4py examples/mlp.py --epochs 20 --optimizer momentum
    mpiexec -n 4 python -m mpi4py examples/mlp.py --samples 4096 --hidden 512 512 --batch 512
    mpiexec -n 2 python -m mpi4py examples/mlp.py --comm-dtype bfloat16 --profile  # 16-bit panels

Model
-----
``logits = relu(relu(X W1) W2) W3``: every weight matrix ``W_l`` (``d_l x d_{l+1}``) and every
activation (``batch x d_l``) is a :class:`distmat.DistMatrix` spread over the whole 2D grid, so
both the samples and the hidden units are split over the ranks (model parallelism: no rank
holds a whole layer).  The input has a constant-one feature, which gives the first layer a
bias; the other layers have none.

- **Forward**: ``Z_l = A_l @ W_l`` by SUMMA (``dm.matmul``), ReLU elementwise on the local
  pieces.
- **Backward**: ``dW_l = A_l^T dZ_l`` (``trans_a=True``: stationary-B SUMMA, no transpose of
  ``A_l``) and ``dA_l = dZ_l W_l^T`` (``trans_b=True``: stationary-A SUMMA), then the ReLU
  mask elementwise.  With one square block size for every matrix, all these products come
  out in the layout of the matrix they are combined with, so no redistribution happens.
- **Softmax and cross-entropy** run across the class dimension, i.e. across the *columns* of
  the logits, which are spread over the ranks of one grid row.  Each rank takes the maximum
  and then the sum of ``exp`` over its local columns, and one ``allreduce`` of a vector of
  its local rows over ``grid.row_comm`` (the ranks of its grid row) completes each (the
  ``distmat.comm`` wrappers, counted in the ledger under ``softmax``).  The loss term of
  sample ``i`` lives on the rank owning entry ``(i, y_i)``; one ``allreduce`` of two numbers
  (loss sum, correct count) over the grid sums them.  The gradient
  ``(softmax(Z) - onehot(y)) / batch`` is then local.
- **Update**: :mod:`distmat.optim` (elementwise, no communication).
- **Compressed communication** (``--comm-dtype float16|bfloat16``, off by default): every
  product's operand panels travel in 16 bits (see ``dm.matmul(comm_dtype=)``).

Data
----
A generated classification task, the same on every grid: ``classes`` Gaussian clusters in
``features`` dimensions.  The labels and cluster centres come from a numpy generator seeded
identically on every rank (small: ``samples`` integers and ``classes x features`` numbers);
the noise of entry ``(i, j)`` comes from distmat's counter-based generator keyed by ``(i, j)``,
so each rank builds only its own piece of every mini-batch.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Sequence

import numpy as np
from mpi4py import MPI

import distmat as dm
from distmat import comm as dmc
from distmat import rng

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop")


def make_optimizer(name: str, params: list[dm.DistMatrix], lr: float | None) -> dm.optim.Optimizer:
    """The optimizer ``name`` (one of :data:`OPTIMIZERS`) with a sensible default ``lr``."""
    if name == "sgd":
        return dm.optim.SGD(params, lr=0.5 if lr is None else lr)
    if name == "momentum":
        return dm.optim.SGD(params, lr=0.1 if lr is None else lr, momentum=0.9)
    if name == "nesterov":
        return dm.optim.SGD(params, lr=0.1 if lr is None else lr, momentum=0.9, nesterov=True)
    if name == "adagrad":
        return dm.optim.Adagrad(params, lr=0.05 if lr is None else lr)
    if name == "rmsprop":
        return dm.optim.RMSprop(params, lr=0.002 if lr is None else lr)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


class Data:
    """The generated task: labels and cluster centres (every rank), batches built on demand."""

    def __init__(self, samples: int, features: int, classes: int, seed: int, separation: float):
        gen = np.random.default_rng(seed)
        self.labels = gen.integers(0, classes, size=samples)
        self.centres = (separation * gen.standard_normal((classes, features))).astype(np.float64)
        self.samples, self.features, self.classes, self.seed = samples, features, classes, seed

    def batch(self, start: int, size: int, grid: dm.ProcessGrid,
              block: tuple[int, int]) -> tuple[dm.DistMatrix, np.ndarray]:
        """Rows ``start .. start + size - 1`` as a ``size x (features + 1)`` DistMatrix.

        The last column is the constant one (the bias feature).  Returns the matrix and the
        labels of these rows (every rank).
        """
        d = self.features
        y = self.labels[start:start + size]

        def entry(i: np.ndarray, j: np.ndarray) -> np.ndarray:
            rows, cols = i[:, 0] + start, j[0]
            jc = np.minimum(cols, d - 1)
            x = self.centres[self.labels[rows][:, None], jc[None, :]]
            x = x + rng.standard_normal(rows, jc, d, self.seed)
            return np.where(cols[None, :] == d, 1.0, x)

        X = dm.from_function(entry, (size, d + 1), dtype=np.float32, grid=grid, block=block)
        return X, y


def softmax_xent(Z: dm.DistMatrix, y: np.ndarray) -> tuple[float, int, dm.DistMatrix]:
    """Mean cross-entropy of the logits ``Z`` (``batch x classes``) against labels ``y``.

    Collective over Z's grid.  Returns ``(sum of the per-sample losses, number of samples
    whose label has the largest logit, dL/dZ of the mean loss)``.  The row maxima and sums
    over the class columns are completed by an ``allreduce`` over ``grid.row_comm``.
    """
    grid = Z.grid
    rows, cols = Z.global_indices()
    z = Z.local
    with dmc.operation("softmax"):
        zmax = np.max(z, axis=1, initial=-np.inf).astype(np.float32)
        dmc.allreduce(grid.row_comm, zmax, MPI.MAX)
        e = np.exp(z - zmax[:, None])
        den = e.sum(axis=1, dtype=np.float32)
        dmc.allreduce(grid.row_comm, den, MPI.SUM)
    p = e / den[:, None]
    hit = cols[None, :] == y[rows][:, None]           # the (i, y_i) entries I own
    r, c = np.nonzero(hit)
    loss = np.log(den[r].astype(np.float64)) - (z[r, c] - zmax[r]).astype(np.float64)
    correct = np.count_nonzero(z[r, c] >= zmax[r])
    tot = np.array([loss.sum(), correct], dtype=np.float64)
    with dmc.operation("softmax"):
        dmc.allreduce(grid.comm, tot, MPI.SUM)
    p[hit] -= 1.0
    p *= np.float32(1.0 / Z.shape[0])
    dZ = Z.copy()
    dZ.local = p
    return float(tot[0]), int(tot[1]), dZ


def relu(Z: dm.DistMatrix) -> dm.DistMatrix:
    """``max(Z, 0)`` elementwise (local)."""
    A = Z.copy()
    np.maximum(A.local, 0, out=A.local)
    return A


def init_weights(sizes: Sequence[int], grid: dm.ProcessGrid, block: tuple[int, int],
                 seed: int) -> list[dm.DistMatrix]:
    """He-initialised float32 weights ``sizes[l] x sizes[l + 1]`` (the same on any grid)."""
    return [dm.random((a, b), "normal", seed=seed + 17 * (l + 1), scale=np.sqrt(2.0 / a),
                      dtype=np.float32, grid=grid, block=block)
            for l, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))]


def step(Ws: list[dm.DistMatrix], X: dm.DistMatrix, y: np.ndarray, comm_dtype: object = None
         ) -> tuple[float, int, list[dm.DistMatrix]]:
    """Forward and backward pass on one batch: (loss sum, correct count, weight gradients).

    ``comm_dtype`` is passed to every product (compressed panels, see :func:`distmat.matmul`).
    """
    cd = comm_dtype
    acts, pres = [X], []
    for l, W in enumerate(Ws):
        Z = dm.matmul(acts[-1], W, comm_dtype=cd)       # forward: A_l @ W_l
        if l < len(Ws) - 1:
            pres.append(Z)
            acts.append(relu(Z))
    loss, correct, dZ = softmax_xent(Z, y)
    grads: list[dm.DistMatrix] = [None] * len(Ws)  # type: ignore[list-item]
    for l in range(len(Ws) - 1, -1, -1):
        grads[l] = dm.matmul(acts[l], dZ, trans_a=True, comm_dtype=cd)  # dW_l = A_l^T dZ_l
        if l:
            dA = dm.matmul(dZ, Ws[l], trans_b=True, comm_dtype=cd)      # dA_l = dZ_l W_l^T
            dA.local *= pres[l - 1].local > 0             # through the ReLU
            dZ = dA
    return loss, correct, grads


def train(grid: dm.ProcessGrid, *, samples: int = 1024, features: int = 32,
          hidden: Sequence[int] = (64, 64), classes: int = 8, epochs: int = 10,
          batch: int = 128, optimizer: str = "momentum", lr: float | None = None,
          block: int = 16, seed: int = 0, separation: float = 0.3,
          comm_dtype: object = None, log: Callable[[str], None] | None = None) -> list[float]:
    """Train the MLP on ``grid``; return the mean training loss of each epoch.

    Collective over the grid.  Every argument is global.  The returned list is the same on
    every rank, and the same on any grid up to float32 rounding.

    Parameters
    ----------
    grid : ProcessGrid
        Where every matrix lives.
    samples, features, classes : int
        Size of the generated task.
    hidden : sequence of int
        Widths of the hidden layers.
    epochs, batch : int
        Passes over the data and mini-batch size (the last batch may be smaller).
    optimizer : str
        One of :data:`OPTIMIZERS`; ``lr`` overrides its default learning rate.
    block : int
        Square block size of every matrix.
    seed : int
        Seeds the data and the weights.
    separation : float
        Scale of the cluster centres (larger is easier).
    comm_dtype : dtype or "bfloat16", optional
        Compressed panels for every product (``"float16"`` or ``"bfloat16"``).  Each
        product is then that of the rounded operands on any grid, but an activation that
        differs in its last float32 bit between grids can round to a neighbouring 16-bit
        value, so curves on different grids agree to about the format's precision (measured
        up to 1e-2 relative for bfloat16 over 10 epochs) instead of float32 rounding.
    log : callable, optional
        Called on rank 0 with one line per epoch.
    """
    for name, v in (("samples", samples), ("features", features), ("classes", classes),
                    ("batch", batch)):
        if v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    blk = (block, block)
    data = Data(samples, features, classes, seed, separation)
    batches = [data.batch(s, min(batch, samples - s), grid, blk)
               for s in range(0, samples, batch)]
    Ws = init_weights([features + 1, *hidden, classes], grid, blk, seed)
    opt = make_optimizer(optimizer, Ws, lr)
    curve = []
    for epoch in range(epochs):
        total, hits = 0.0, 0
        for X, y in batches:
            loss, correct, grads = step(Ws, X, y, comm_dtype)
            opt.step(grads)
            total += loss
            hits += correct
        curve.append(total / samples)
        if log is not None and grid.rank == 0:
            log(f"epoch {epoch + 1:4d}  loss {curve[-1]:.6f}  train accuracy "
                f"{hits / samples:.3f}")
    return curve


def main(argv: Sequence[str] | None = None, comm: MPI.Comm | None = None) -> list[float]:
    """Command-line entry point; ``comm`` defaults to ``MPI.COMM_WORLD``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--hidden", type=int, nargs="*", default=[64, 64])
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--optimizer", choices=OPTIMIZERS, default="momentum")
    ap.add_argument("--lr", type=float, default=None, help="default: per optimizer")
    ap.add_argument("--block", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--separation", type=float, default=0.3)
    ap.add_argument("--grid", type=int, nargs=2, default=None, metavar=("PR", "PC"))
    ap.add_argument("--comm-dtype", choices=("float16", "bfloat16"), default=None,
                    help="compressed matmul panels (default: off)")
    ap.add_argument("--profile", action="store_true",
                    help="print the communication ledger and the training time (rank 0)")
    args = ap.parse_args(argv)
    comm = MPI.COMM_WORLD if comm is None else comm
    with dm.ProcessGrid(comm, None if args.grid is None else tuple(args.grid)) as grid:
        if grid.rank == 0:
            print(f"# MLP {[args.features + 1, *args.hidden, args.classes]} on a "
                  f"{grid.shape[0]} x {grid.shape[1]} grid, {args.samples} samples, batch "
                  f"{args.batch}, {args.optimizer}", flush=True)
        prof = dm.profile(grid)
        t0 = MPI.Wtime()
        with prof if args.profile else contextlib.nullcontext():
            curve = train(grid, samples=args.samples, features=args.features,
                          hidden=args.hidden, classes=args.classes, epochs=args.epochs,
                          batch=args.batch, optimizer=args.optimizer, lr=args.lr,
                          block=args.block, seed=args.seed, separation=args.separation,
                          comm_dtype=args.comm_dtype, log=lambda s: print(s, flush=True))
        seconds = grid.comm.allreduce(MPI.Wtime() - t0, op=MPI.MAX)
        if args.profile and grid.rank == 0:
            print(prof.table())
            print(f"# training time {seconds:.3f} s (max over ranks)", flush=True)
        return curve


if __name__ == "__main__":
    main(sys.argv[1:])
