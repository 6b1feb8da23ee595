"""Randomized truncated SVD benchmark (``dm.linalg.svds``), with an NMF row.

Run::

    mpiexec -n 2 python -m mpi4py -m distmat.bench.svds [--m 20000] [--n 2000] [--k 20] \\
        [--oversample 10] [--power-iters 2] [--nmf-iters 30] [--out results/svds.jsonl]

svds row: ``A = X diag(s) Y^T`` with ``X``, ``Y`` the leading columns of Householder
reflectors and ``s_i = (1 + i)^-decay``, so the optimal rank-k errors are known exactly
(``s[k]`` spectral, ``sqrt(sum s[k:]^2)`` Frobenius) and every rank builds its piece from a
closed formula (no communication, the same matrix on any grid).

- ``time s``: best over ``--reps`` of the slowest rank's time (after a barrier and
  ``--warmup`` runs);
- ``numpy s``: the same randomized algorithm (same Gaussian sketch, thin products formed as
  k-row GEMMs like distmat's, ``numpy.linalg.qr`` for the orthonormalisations,
  ``numpy.linalg.svd`` of ``B = Q^T A``) on rank 0 with one BLAS thread, in the same run,
  while the other ranks wait in a sleeping barrier; ``speedup`` is numpy time over distmat
  time (``p`` would be perfect scaling);
- ``MPI%``: the slowest rank's share of one profiled run spent inside MPI (``dm.profile``);
- ``err2/opt``: spectral error ``||A - U S Vh||_2`` (ARPACK on the residual operator, rank
  0) over ``s[k]``; ``errF/opt`` the same in the Frobenius norm
  (exact, on rank 0); ``s rel``: ``max |s - s_true| / s_true[0]``; PASSED when both error
  ratios are at most 1.5.

nmf row (``--nmf-iters`` > 0): ``A = W_* H_* + noise`` (non-negative, rank ``k``) factored
by ``--nmf-method`` for exactly ``--nmf-iters`` iterations (``tol=0``); the numpy reference
runs the same updates on rank 0 from the same initial factors; PASSED when the final
relative errors agree to 1e-6 and the error did not increase (``mu``).

Each rank runs one BLAS thread (threadpoolctl).  Rows also go to ``--out`` as JSON Lines.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone

import numpy as np
from mpi4py import MPI
from threadpoolctl import threadpool_limits

import distmat as dm
from distmat import rng as _rng
from distmat.bench.common import best as _best
from distmat.bench.common import finish, wait_quietly
from distmat.bench.common import mpi_share as _mpi_share


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mpi4py -m distmat.bench.svds",
                                description=__doc__.split("\n")[0])
    p.add_argument("--m", type=int, default=20000, help="rows")
    p.add_argument("--n", type=int, default=2000, help="columns")
    p.add_argument("--k", type=int, default=20, help="singular triplets (and NMF rank)")
    p.add_argument("--oversample", type=int, default=10)
    p.add_argument("--power-iters", type=int, default=2)
    p.add_argument("--decay", type=float, default=1.0, help="s_i = (1 + i)^-decay")
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    p.add_argument("--block", type=int, default=128, help="square storage block")
    p.add_argument("--grid", type=int, nargs=2, default=None, metavar=("PR", "PC"))
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--nmf-iters", type=int, default=30, help="0 skips the NMF row")
    p.add_argument("--nmf-method", default="mu", choices=("mu", "hals"))
    p.add_argument("--no-numpy", action="store_true", help="skip the numpy references")
    p.add_argument("--out", default="results/svds.jsonl", help="JSON Lines file ('' = none)")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- test matrices


class KnownSpectrum:
    """``A = X diag(s) Y^T``, ``X = (I - 2 w w^T)[:, :r]``, ``Y = (I - 2 z z^T)[:, :r]``.

    Entry ``(i, j)`` is ``[i = j < r] s_i - 2 (s z)_i z_j - 2 w_i (w s)_j + 4 c w_i z_j`` with
    ``c = sum_l w_l s_l z_l`` (vectors zero-padded beyond ``r = min(m, n)``): a diagonal plus
    three rank-one terms, cheap to evaluate anywhere.
    """

    def __init__(self, m: int, n: int, decay: float, seed: int = 5):
        g = np.random.default_rng(seed)
        r = min(m, n)
        w, z = g.standard_normal(m), g.standard_normal(n)
        w /= np.linalg.norm(w)
        z /= np.linalg.norm(z)
        self.s = (1.0 + np.arange(r)) ** -decay
        sm, sn = np.zeros(m), np.zeros(n)
        sm[:r], sn[:r] = self.s, self.s
        self.diag = np.zeros(max(m, n))
        self.diag[:r] = self.s
        self.w, self.z = w, z
        self.szm = sm * np.concatenate([z[:r], np.zeros(m - r)])
        self.wsn = sn * np.concatenate([w[:r], np.zeros(n - r)])
        self.c = float(np.sum(w[:r] * self.s * z[:r]))
        self.shape = (m, n)

    def __call__(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return ((i == j) * self.diag[np.minimum(i, self.diag.size - 1)]
                - 2.0 * self.szm[i] * self.z[j] - 2.0 * self.w[i] * self.wsn[j]
                + 4.0 * self.c * self.w[i] * self.z[j])

    def dense(self) -> np.ndarray:
        m, n = self.shape
        return self(np.arange(m)[:, None], np.arange(n)[None, :])


def nmf_data(m: int, n: int, k: int) -> tuple:
    """A non-negative rank-``k`` product plus noise as a closed formula of ``(i, j)``."""
    def f(i, j):
        acc = np.zeros(np.broadcast_shapes(i.shape, j.shape))
        for t in range(k):  # loop over the rank, not the entries
            acc += _rng.uniform01(i[:, 0], np.array([t]), k, 11)[:, :1] * \
                _rng.uniform01(np.array([t]), j[0], n, 12 + t)
        return acc + 0.01 * _rng.uniform01(i[:, 0], j[0], n, 13)
    return f


# --------------------------------------------------------------------------- numpy references


def _a_x(a: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``a @ X`` formed as ``(X^T a^T)^T`` (a k-row GEMM: faster for thin X, as in distmat)."""
    return (X.T @ a.T).T


def _at_y(a: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """``a^T @ Y`` formed as ``(Y^T a)^T``."""
    return (Y.T @ a).T


def numpy_svds(a: np.ndarray, k: int, l: int, q: int, seed: int):  # noqa: E741
    """The randomized algorithm of svds in plain numpy (same sketch, same product forms)."""
    n = a.shape[1]
    omega = _rng.standard_normal(np.arange(n), np.arange(l), l, seed).astype(a.dtype)
    Y = _a_x(a, omega)
    for _ in range(q):
        Q, _ = np.linalg.qr(Y)
        Qz, _ = np.linalg.qr(_at_y(a, Q))
        Y = _a_x(a, Qz)
    Q, _ = np.linalg.qr(Y)
    ub, s, vh = np.linalg.svd(Q.T @ a, full_matrices=False)
    return Q @ ub[:, :k], s[:k], vh[:k]


def spectral_norm_of_residual(a, U, s, Vh) -> float:
    """``||a - U diag(s) Vh||_2`` by ARPACK (Lanczos on the residual operator, rank 0)."""
    from scipy.sparse.linalg import LinearOperator
    from scipy.sparse.linalg import svds as arpack_svds

    a64, U64, Vh64 = (np.asarray(x, dtype=np.float64) for x in (a, U, Vh))
    s64 = s.astype(np.float64)
    op = LinearOperator(a.shape, dtype=np.float64,
                        matvec=lambda x: a64 @ x.ravel() - U64 @ (s64 * (Vh64 @ x.ravel())),
                        rmatvec=lambda y: a64.T @ y.ravel() - Vh64.T @ (s64 * (U64.T @ y.ravel())))
    v0 = np.random.default_rng(0).standard_normal(min(a.shape))
    return float(arpack_svds(op, k=1, tol=1e-8, v0=v0, return_singular_vectors=False)[0])


def frobenius_of_residual(a, U, s, Vh, chunk: int = 4096) -> float:
    tot = 0.0
    for r0 in range(0, a.shape[0], chunk):
        d = a[r0:r0 + chunk] - (U[r0:r0 + chunk] * s) @ Vh
        tot += float(np.sum(d.astype(np.float64) ** 2))
    return float(np.sqrt(tot))


def numpy_nmf(a, W, H, method: str, iters: int):
    eps = float(np.finfo(a.dtype).eps)
    Ht = H.T.copy()

    def upd(X, AY, G):
        if method == "mu":
            return X * AY / (X @ G + eps)
        X = X.copy()
        for j in range(X.shape[1]):
            if G[j, j] > 0:
                X[:, j] = np.maximum(X[:, j] + (AY[:, j] - X @ G[:, j]) / G[j, j], 0)
        return X

    for _ in range(iters):
        W = upd(W, _a_x(a, Ht), Ht.T @ Ht)
        Ht = upd(Ht, _at_y(a, W), W.T @ W)
    return W, Ht.T


# --------------------------------------------------------------------------- timing helpers




def _on_rank0(comm: MPI.Comm, fn) -> np.ndarray:
    """Run ``fn() -> 1-D float array`` on rank 0 while the others sleep; broadcast it."""
    if comm.Get_rank() == 0:
        try:
            vals = np.asarray(fn(), dtype=np.float64)
        finally:
            comm.Ibarrier().Wait()
        size = np.array([vals.size])
    else:
        wait_quietly(comm)
        size = np.zeros(1, dtype=np.int64)
    comm.Bcast(size, 0)
    if comm.Get_rank() != 0:
        vals = np.empty(int(size[0]))
    comm.Bcast(vals, 0)
    return vals






# --------------------------------------------------------------------------- the rows


def run_svds(grid, args) -> dict:
    comm = grid.comm
    m, n, k = args.m, args.n, args.k
    dt = np.dtype(args.dtype)
    l = min(k + args.oversample, m, n)  # noqa: E741
    gen = KnownSpectrum(m, n, args.decay)
    A = dm.from_function(gen, (m, n), dtype=dt, grid=grid, block=(args.block, args.block))

    def run():
        return dm.linalg.svds(A, k, oversample=args.oversample, power_iters=args.power_iters,
                              seed=0)

    best, times, (U, s, Vh) = _best(comm, run, args.reps, args.warmup)
    share = _mpi_share(grid, run)
    Ug, Vg = U.gather(root=0), Vh.gather(root=0)

    def check():
        a = gen.dense().astype(dt)
        e2 = spectral_norm_of_residual(a, Ug, s, Vg)
        ef = frobenius_of_residual(a, Ug, s, Vg)
        t_np = np.nan
        if not args.no_numpy:
            t_np = np.inf
            for _ in range(max(1, args.reps)):
                t0 = time.perf_counter()
                numpy_svds(a, k, l, args.power_iters, 0)
                t_np = min(t_np, time.perf_counter() - t0)
        return [e2, ef, t_np]

    e2, ef, t_np = _on_rank0(comm, check)
    s_true = gen.s
    opt2 = s_true[k] if k < s_true.size else 0.0
    optf = float(np.sqrt(np.sum(s_true[k:] ** 2)))
    r2 = e2 / opt2 if opt2 > 0 else float(e2 == 0)
    rf = ef / optf if optf > 0 else float(ef == 0)
    return {"op": "svds", "time_s": best, "times_s": times, "numpy_s": t_np,
            "speedup": t_np / best, "mpi_share": share, "l": l,
            "err2_over_opt": r2, "errF_over_opt": rf,
            "s_rel_err": float(np.abs(s - s_true[:k]).max() / s_true[0]),
            "passed": bool(r2 <= 1.5 and rf <= 1.5)}


def run_nmf(grid, args) -> dict:
    comm = grid.comm
    m, n, k = args.m, args.n, args.k
    dt = np.dtype(args.dtype)
    A = dm.from_function(nmf_data(m, n, k), (m, n), dtype=dt, grid=grid,
                         block=(args.block, args.block))
    iters = args.nmf_iters

    def run():
        return dm.decomposition.nmf(A, k, method=args.nmf_method, max_iter=iters, tol=0.0)

    best, times, res = _best(comm, run, args.reps, args.warmup)
    share = _mpi_share(grid, run)
    ag = A.gather(root=0)
    W0 = dm.random((m, k), seed=0, dtype=dt, grid=grid).gather(root=0)
    H0 = dm.random((k, n), seed=1, dtype=dt, grid=grid).gather(root=0)

    def check():
        scale = 2.0 * np.sqrt(ag.astype(np.float64).mean() / k)
        t_np, err = np.nan, np.nan
        if not args.no_numpy:
            t0 = time.perf_counter()
            W, H = numpy_nmf(ag, W0 * scale, H0 * scale, args.nmf_method, iters)
            t_np = time.perf_counter() - t0
            err = float(np.linalg.norm(ag - W @ H) / np.linalg.norm(ag))
        return [t_np, err]

    t_np, err_np = _on_rank0(comm, check)
    h = res.history
    mono = bool(np.all(np.diff(h ** 2) <= 50 * np.finfo(dt).eps)) \
        if args.nmf_method == "mu" else True
    agree = bool(np.isnan(err_np) or abs(h[-1] - err_np) <= 1e-6 * max(err_np, 1e-30)
                 or dt == np.float32 and abs(h[-1] - err_np) <= 1e-3 * err_np)
    return {"op": f"nmf-{args.nmf_method}", "time_s": best, "times_s": times, "numpy_s": t_np,
            "speedup": t_np / best, "mpi_share": share, "iters": iters,
            "rel_err": float(h[-1]), "numpy_rel_err": float(err_np),
            "passed": bool(mono and agree)}


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    grid = dm.ProcessGrid(MPI.COMM_WORLD, tuple(args.grid) if args.grid else None)
    rank0, p = grid.rank == 0, grid.size
    limiter = threadpool_limits(limits=1, user_api="blas")

    def say(msg: str, err: bool = False) -> None:
        if rank0:
            print(msg, file=sys.stderr if err else sys.stdout, flush=True)

    say(f"# distmat.bench.svds  {datetime.now(timezone.utc).isoformat(timespec='seconds')}  "
        f"ranks {p} grid {grid.shape[0]}x{grid.shape[1]} block {args.block} {args.dtype} "
        f"m {args.m} n {args.n} k {args.k} oversample {args.oversample} power_iters "
        f"{args.power_iters} decay {args.decay}")
    say("# time = best of reps of the slowest rank; numpy = the same algorithm on rank 0, one "
        "BLAS thread, same run; speedup = numpy / distmat (p is perfect)")
    say(f"# {'ranks':>5} {'grid':>5} {'op':>8} {'time s':>9} {'numpy s':>9} {'speedup':>7} "
        f"{'MPI%':>5} {'err2/opt':>8} {'errF/opt':>8} {'s rel':>8} {'result':>7}")
    rows, allok = [], True
    todo = [run_svds] + ([run_nmf] if args.nmf_iters > 0 else [])
    for fn in todo:
        say(f"# progress: {fn.__name__}", err=True)
        r = fn(grid, args)
        allok &= r["passed"]
        rows.append({"bench": "svds", "ranks": p, "grid": list(grid.shape), "m": args.m,
                     "n": args.n, "k": args.k, "dtype": args.dtype, "block": args.block,
                     "oversample": args.oversample, "power_iters": args.power_iters,
                     "decay": args.decay, **r})
        e2 = f"{r['err2_over_opt']:>8.4f}" if "err2_over_opt" in r else f"{'-':>8}"
        ef = f"{r['errF_over_opt']:>8.4f}" if "errF_over_opt" in r else f"{r['rel_err']:>8.2g}"
        sr = f"{r['s_rel_err']:>8.2g}" if "s_rel_err" in r else f"{'-':>8}"
        say(f"  {p:>5} {grid.shape[0]:>2}x{grid.shape[1]:<2} {r['op']:>8} {r['time_s']:>9.4f} "
            f"{r['numpy_s']:>9.4f} {r['speedup']:>7.3f} {100 * r['mpi_share']:>5.1f} {e2} {ef} "
            f"{sr} {'PASSED' if r['passed'] else 'FAILED':>7}")
    say("# nmf row: errF/opt column holds the final relative error ||A - W H||_F / ||A||_F")
    return finish(say, args.out, rows, allok, rank0, grids=[grid], limiter=limiter)


if __name__ == "__main__":
    sys.exit(main())
