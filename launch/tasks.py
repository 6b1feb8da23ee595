"""The operations a job file can run: their parameters (pure data) and their adapters.

The registry :data:`OPS` is plain data so that the launcher validates a job without MPI.  The
adapters (``_build_*``) run inside the job runner under MPI and import distmat lazily, so an
operation whose module is not part of this build (``distmat.linalg``, ``distmat.sparse``...)
is reported by :func:`unavailable` instead of breaking the others.

An adapter gets the runner's :class:`Context` and the task's parameters and returns a
:class:`Case`: ``prepare()`` (untimed, before each repetition), ``run()`` (timed),
``check(result)`` (untimed: ``(residual, passed)``), and metadata used by the records (flops,
itemsize, the communication model).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import model as M

__all__ = ["Param", "OpSpec", "OPS", "COMMON", "Case", "Context", "unavailable", "build"]

REQUIRED = object()


@dataclass(frozen=True)
class Param:
    """One task parameter: its kind, default and constraint (validated by launch.config).

    ``kind`` is one of ``int``, ``float``, ``bool``, ``str``, ``pair`` (two positive ints),
    ``block`` (``"auto"`` or a pair), ``ints`` (a list of ints, not swept), ``path``.
    """

    kind: str
    default: Any = REQUIRED
    help: str = ""
    choices: tuple = ()
    min: float | None = None
    max: float | None = None
    #: name it in result labels even at its default (it says what was computed)
    labelled: bool = False


@dataclass(frozen=True)
class OpSpec:
    """An operation of the registry."""

    name: str
    summary: str
    params: dict[str, Param]
    requires: tuple[str, str] | None = None   # (module, attribute) that must exist
    min_ranks: int = 1
    square: bool = False                      # needs m == n
    kind: str = "op"                          # "op", "calibration" or "diagnostic"
    build: str = ""                           # adapter function name in this module


#: Keys every task accepts; the first group can also be set in [job] as defaults.
COMMON: dict[str, Param] = {
    "dtype": Param("str", "float64", "element type",
                   choices=("float32", "float64", "complex64", "complex128")),
    "block": Param("block", "auto", '"auto" (64 x 64, shrunk for small matrices) or [mb, nb]'),
    "seed": Param("int", 0, "seed of the generated inputs", min=0),
    "warmup": Param("int", 1, "untimed runs before the timed ones", min=0),
    "repeat": Param("int", 3, "timed repetitions (one result record each)", min=1),
    "check": Param("bool", True, "verify each result (residual, PASSED/FAILED)"),
    "tolerance": Param("float", 16.0, "largest scaled residual that passes (HPL: 16)",
                       min=0.0),
}
TASK_ONLY: dict[str, Param] = {
    "op": Param("str", REQUIRED, "operation name"),
    "name": Param("str", "", "label in progress lines and tables (default: op)"),
    "input": Param("path", "", "read the first operand from this .npy/.mtx file instead of "
                   "generating it (relative paths: from the config file's directory)"),
    "output": Param("path", "", "write the result of the last repetition to this .npy "
                    "(relative paths: inside the output directory)"),
    "optional": Param("bool", False, "skip (with a note) instead of failing validation when "
                      "the operation is not available in this build"),
}

_SIZES = Param("ints", [8, 64, 512, 4096, 32768, 262144, 1048576, 4194304],
               "message sizes in bytes (a list, not swept)", min=1)
_ITERS = Param("int", 40, "round trips per size (fewer for large sizes)", min=1)
_N = Param("int", REQUIRED, "matrix order / columns", min=1)
_M = Param("int", 0, "rows (0: same as n)", min=0)


def _p(**kw: Param) -> dict[str, Param]:
    return kw


OPS: dict[str, OpSpec] = {s.name: s for s in (
    OpSpec("matmul", "C = alpha op(A) op(B) + beta C with SUMMA (distmat.matmul)",
           _p(n=_N, m=_M, k=Param("int", 0, "inner dimension (0: n)", min=0),
              trans_a=Param("bool", False), trans_b=Param("bool", False),
              alpha=Param("float", 1.0), beta=Param("float", 0.0),
              panel=Param("int", 0, "SUMMA panel width (0: the library default)", min=0),
              memory=Param("float", 0.0, "words of memory per rank for the lower bound "
                           "(0: what a 2D algorithm holds)", min=0.0)),
           requires=("distmat.summa", "matmul"), build="_build_matmul"),
    OpSpec("transpose", "B = A.T (all-to-all)", _p(n=_N, m=_M), build="_build_transpose"),
    OpSpec("redistribute", "change the block size (all-to-all)",
           _p(n=_N, m=_M, to_block=Param("pair", [32, 32], "target block size")),
           build="_build_redistribute"),
    OpSpec("norm", "matrix norm", _p(n=_N, m=_M, ord=Param("str", "fro", choices=(
        "fro", "1", "inf", "max"), labelled=True)), build="_build_norm"),
    OpSpec("gather", "collect the matrix on rank 0", _p(n=_N, m=_M), build="_build_gather"),
    OpSpec("scatter", "distribute a matrix from rank 0", _p(n=_N, m=_M),
           build="_build_scatter"),
    OpSpec("save", "write the matrix with MPI-IO (dm.save)",
           _p(n=_N, m=_M, path=Param("path", "", "file (default: in the output directory)")),
           build="_build_save"),
    OpSpec("load", "read a .npy/.mtx with MPI-IO (dm.load)",
           _p(path=Param("path", REQUIRED, "file to read")), build="_build_load"),
    OpSpec("solve", "X = A^-1 B (distmat.linalg.solve)",
           _p(n=_N, nrhs=Param("int", 1, min=1),
              assume_a=Param("str", "gen", choices=("gen", "pos")),
              refine=Param("str", "none", "mixed: factor in float32, refine in float64",
                           choices=("none", "mixed"))),
           requires=("distmat.linalg", "solve"), build="_build_solve"),
    OpSpec("lu", "LU with partial pivoting (distmat.linalg.lu_factor)", _p(n=_N),
           requires=("distmat.linalg", "lu_factor"), build="_build_lu"),
    OpSpec("cholesky", "Cholesky factor L (distmat.linalg.cholesky)", _p(n=_N),
           requires=("distmat.linalg", "cholesky"), build="_build_cholesky"),
    OpSpec("inv", "matrix inverse (distmat.linalg.inv)", _p(n=_N),
           requires=("distmat.linalg", "inv"), build="_build_inv"),
    OpSpec("spmm", "block-sparse times dense (S @ X)",
           _p(n=_N, nrhs=Param("int", 16, min=1),
              density=Param("float", 0.01, "fraction of nonzero blocks", min=0.0, max=1.0),
              blocksize=Param("int", 16, "sparse block size", min=1)),
           requires=("distmat.sparse", "random"), build="_build_spmm"),
    OpSpec("sparse_matmul", "block-sparse times block-sparse (distmat.sparse.matmul)",
           _p(n=_N, density=Param("float", 0.01, min=0.0, max=1.0),
              blocksize=Param("int", 16, min=1)),
           requires=("distmat.sparse", "matmul"), build="_build_sparse_matmul"),
    OpSpec("cg", "conjugate gradients on the 2D Poisson matrix (distmat.sparse.linalg.cg)",
           _p(nx=Param("int", REQUIRED, "grid points per side (n = nx^2)", min=2),
              rtol=Param("float", 1e-8, min=0.0), maxiter=Param("int", 0, "0: n", min=0),
              blocksize=Param("int", 0, "sparse block size (0: nx)", min=0)),
           requires=("distmat.sparse.linalg", "cg"), build="_build_cg"),
    OpSpec("gmres", "restarted GMRES on the 2D Poisson matrix (distmat.sparse.linalg.gmres)",
           _p(nx=Param("int", REQUIRED, min=2), rtol=Param("float", 1e-8, min=0.0),
              restart=Param("int", 30, min=1), maxiter=Param("int", 0, min=0),
              blocksize=Param("int", 0, min=0)),
           requires=("distmat.sparse.linalg", "gmres"), build="_build_gmres"),
    OpSpec("pingpong", "point-to-point latency and bandwidth (OSU style); fits alpha, beta",
           _p(sizes=_SIZES, iterations=_ITERS,
              peer=Param("int", -1, "partner of rank 0 (-1: the last rank)")),
           min_ranks=2, kind="calibration", build="_build_pingpong"),
    OpSpec("bcast", "broadcast latency over the grid (OSU style)",
           _p(sizes=_SIZES, iterations=_ITERS), kind="calibration", build="_build_bcast"),
    OpSpec("allreduce", "all-reduce latency over the grid (OSU style)",
           _p(sizes=_SIZES, iterations=_ITERS), kind="calibration", build="_build_allreduce"),
    OpSpec("fault", "deliberately fail (to test how a job fails): raise, kill, hang or exit",
           _p(mode=Param("str", "raise", choices=("raise", "kill", "hang", "exit")),
              rank=Param("int", -1, "which rank fails (-1: the last)"),
              seconds=Param("float", 0.0, "wait this long first", min=0.0)),
           kind="diagnostic", build="_build_fault"),
)}


def unavailable(spec: OpSpec) -> str | None:
    """Why ``spec`` cannot run in this build (None if it can). Does not initialise MPI."""
    if spec.requires is None:
        return None
    module, attr = spec.requires
    try:
        import mpi4py

        mpi4py.rc.initialize = False  # the launcher never talks MPI itself
        mpi4py.rc.finalize = False
    except ImportError:
        return "mpi4py is not installed"
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        return f"{e.name} missing"
    except Exception as e:  # noqa: BLE001 - a half-built module must not break validation
        return f"importing {module} failed: {type(e).__name__}: {e}"
    if not hasattr(mod, attr):
        return f"{module}.{attr} missing"
    return None


# =========================================================================== runtime


@dataclass
class Context:
    """What an adapter may use: the grid, the model, where files go, rank-0 printing."""

    grid: Any
    ab: M.AlphaBeta
    out_dir: str
    config_dir: str
    say: Callable[[str], None]


@dataclass
class Case:
    """One task instance ready to time."""

    run: Callable[[], Any]
    check: Callable[[Any], tuple[float, bool]] | None = None
    prepare: Callable[[], None] | None = None
    flops: float = 0.0
    itemsize: int = 8
    model: Callable[[M.AlphaBeta], dict] | None = None
    save: Callable[[Any], Any] | None = None   # result -> DistMatrix to write to output
    extra: dict = field(default_factory=dict)  # added to the record after run (calibration)
    close: Callable[[], None] | None = None


def build(ctx: Context, op: str, p: dict) -> Case:
    """The :class:`Case` of operation ``op`` with parameters ``p``. Collective."""
    return globals()[OPS[op].build](ctx, p)


def _dt(p: dict):
    import numpy as np

    return np.dtype(p["dtype"])


def _block(p: dict, shape: tuple[int, int], grid: Any) -> tuple[int, int]:
    from distmat.matrix import default_block

    b = p["block"]
    return default_block(shape, grid.shape) if b == "auto" else (int(b[0]), int(b[1]))


def _gen(ctx: Context, p: dict, shape: tuple[int, int], stream: int, use_input: bool = False,
         low: float = -0.5, high: float = 0.5):
    """A seeded uniform random matrix (HPL style), or the task's input file."""
    import os

    import distmat as dm

    if use_input and p.get("input"):
        path = p["input"] if os.path.isabs(p["input"]) else os.path.join(ctx.config_dir,
                                                                           p["input"])
        A = dm.load(path, grid=ctx.grid, block=None if p["block"] == "auto" else
                    tuple(p["block"]), dtype=_dt(p))
        if A.shape != shape:
            from distmat.errors import ShapeMismatchError

            raise ShapeMismatchError(f"input {p['input']} holds a {A.shape} matrix but the "
                                     f"task needs {shape}")
        return A
    return dm.random(shape, seed=p["seed"] * 7919 + stream, low=low, high=high,
                     dtype=_dt(p), grid=ctx.grid, block=_block(p, shape, ctx.grid))


def _eps(p: dict) -> float:
    import numpy as np

    return float(np.finfo(_dt(p)).eps)


def _cplx(p: dict) -> int:
    return 4 if _dt(p).kind == "c" else 1


def _mn(p: dict) -> tuple[int, int]:
    return (p["m"] or p["n"]), p["n"]


def _grid(ctx: Context) -> tuple[int, int]:
    return ctx.grid.shape


def _result(passed_resid: float, tol: float) -> tuple[float, bool]:
    import math as _m

    return passed_resid, bool(_m.isfinite(passed_resid) and passed_resid <= tol)


# --------------------------------------------------------------------------- dense, available


def _exact_equal(grid: Any, a: Any, b: Any) -> bool:
    import numpy as np

    from distmat import comm as dmc

    bad = np.array([0 if (a.shape == b.shape and np.array_equal(a, b)) else 1], dtype=np.int64)
    dmc.allreduce(grid.comm, bad)
    return int(bad[0]) == 0


def _build_transpose(ctx: Context, p: dict) -> Case:
    m, n = _mn(p)
    A = _gen(ctx, p, (m, n), 0, use_input=True)
    pr, pc = _grid(ctx)

    def check(T):
        back = T.T  # exact: a transpose moves values without arithmetic
        same = _exact_equal(ctx.grid, back.local, A.local) and T.shape == (n, m)
        return (0.0 if same else math.inf), same

    return Case(run=lambda: A.T, check=check, itemsize=A.dtype.itemsize,
                model=lambda ab: M.transpose(m, n, pr, pc, A.dtype.itemsize, ab, A.block),
                save=lambda T: T)


def _build_redistribute(ctx: Context, p: dict) -> Case:
    m, n = _mn(p)
    A = _gen(ctx, p, (m, n), 0, use_input=True)
    pr, pc = _grid(ctx)
    tb = tuple(p["to_block"])

    def check(B):
        same = B.block == tb and _exact_equal(ctx.grid, B.redistribute(block=A.block).local,
                                              A.local)
        return (0.0 if same else math.inf), same

    return Case(run=lambda: A.redistribute(block=tb), check=check, itemsize=A.dtype.itemsize,
                model=lambda ab: M.redistribute(m, n, pr, pc, A.dtype.itemsize, ab,
                                                A.block, tb),
                save=lambda B: B)


def _build_norm(ctx: Context, p: dict) -> Case:
    import numpy as np

    import distmat as dm

    m, n = _mn(p)
    A = _gen(ctx, p, (m, n), 0, use_input=True)
    ord_ = {"fro": "fro", "1": 1, "inf": np.inf, "max": "max"}[p["ord"]]
    dual = {"fro": "fro", "1": np.inf, "inf": 1, "max": "max"}[p["ord"]]
    pr, pc = _grid(ctx)
    At = A.T

    def check(val):  # the norm of A.T in the dual norm is the same number
        ref = dm.norm(At, dual)
        r = abs(val - ref) / (max(abs(ref), 1e-300) * max(m, n, 1) * _eps(p))
        return _result(r, p["tolerance"])

    def model(ab):
        p_ = pr * pc
        part = {"1": n / pc * (pr > 1), "inf": m / pr * (pc > 1), "fro": 1.0 * (p_ > 1),
                "max": 0.0}[p["ord"]]
        words = part + 2.0 * (p_ > 1)  # plus the (value, nan flag) maximum
        return {"model_algorithm": "allreduce of partial sums", "model_words": words,
                "model_msgs": 2 * (p_ > 1),
                "model_seconds": 2 * M.tree_steps(p_) * ab.time(2, words * A.dtype.itemsize)}

    return Case(run=lambda: dm.norm(A, ord_), check=check, flops=2.0 * m * n,
                itemsize=A.dtype.itemsize, model=model)


def _build_gather(ctx: Context, p: dict) -> Case:
    import distmat as dm

    m, n = _mn(p)
    A = _gen(ctx, p, (m, n), 0, use_input=True)
    p_ = ctx.grid.size

    def check(G):
        B = dm.from_global(G, grid=ctx.grid, block=A.block, root=0)
        same = _exact_equal(ctx.grid, B.local, A.local)
        return (0.0 if same else math.inf), same

    def model(ab):
        words = m * n * (p_ - 1) / p_
        return {"model_algorithm": "alltoallv to root", "model_words": words,
                "model_msgs": p_ - 1, "model_seconds": ab.time(p_ - 1, words * A.dtype.itemsize)}

    return Case(run=lambda: A.gather(root=0), check=check, itemsize=A.dtype.itemsize,
                model=model)


def _build_scatter(ctx: Context, p: dict) -> Case:
    import numpy as np

    import distmat as dm

    m, n = _mn(p)
    G = None
    if ctx.grid.rank == 0:
        rng = np.random.default_rng(p["seed"])
        G = rng.uniform(-0.5, 0.5, (m, n)).astype(_dt(p))
    block = _block(p, (m, n), ctx.grid)
    p_ = ctx.grid.size

    def check(A):
        back = A.gather(root=0)
        ok = ctx.grid.rank != 0 or bool(np.array_equal(back, G))
        bad = np.array([0 if ok else 1])
        ctx.grid.comm.Allreduce(bad.copy(), bad)
        return (0.0 if not bad[0] else math.inf), not bad[0]

    def model(ab):
        words = m * n / p_ if p_ > 1 else 0.0
        return {"model_algorithm": "alltoallv from root", "model_words": words,
                "model_msgs": 1 if p_ > 1 else 0,
                "model_seconds": ab.time(p_ - 1, m * n * (p_ - 1) / p_ * _dt(p).itemsize)}

    return Case(run=lambda: dm.from_global(G, grid=ctx.grid, block=block, root=0),
                check=check, itemsize=_dt(p).itemsize, model=model, save=lambda A: A)


def _out_path(ctx: Context, path: str, default: str) -> str:
    import os

    path = path or default
    return path if os.path.isabs(path) else os.path.join(ctx.out_dir, path)


def _build_save(ctx: Context, p: dict) -> Case:
    import distmat as dm
    from distmat.io import checksum

    m, n = _mn(p)
    A = _gen(ctx, p, (m, n), 0, use_input=True)
    path = _out_path(ctx, p["path"], f"matrix-{m}x{n}.npy")
    want = checksum(A)

    def run():
        dm.save(A, path)
        return path

    def check(_):
        B = dm.load(path, grid=ctx.grid, block=(max(1, A.block[0] // 2 + 1), A.block[1]))
        ok = checksum(B) == want and B.shape == A.shape
        return (0.0 if ok else math.inf), ok

    nbytes = m * n * A.dtype.itemsize
    return Case(run=run, check=check, itemsize=A.dtype.itemsize,
                extra={"file": path, "file_bytes": nbytes},
                model=lambda ab: {"model_algorithm": "MPI-IO collective write (not in the "
                                  "ledger)"})


def _build_load(ctx: Context, p: dict) -> Case:
    import os

    import distmat as dm
    from distmat.io import checksum

    path = p["path"] if os.path.isabs(p["path"]) else os.path.join(ctx.config_dir, p["path"])
    block = None if p["block"] == "auto" else tuple(p["block"])

    def digest(A):  # block-sparse files (.npz, coordinate .mtx) load as BlockSparseMatrix
        return checksum(A if isinstance(A, dm.DistMatrix) else A.todense())

    first = dm.load(path, grid=ctx.grid, block=block)
    want = digest(first)

    def check(A):
        ok = digest(A) == want
        return (0.0 if ok else math.inf), ok

    return Case(run=lambda: dm.load(path, grid=ctx.grid, block=block), check=check,
                itemsize=first.dtype.itemsize, extra={"file": path, "shape": list(first.shape)},
                save=lambda A: A,
                model=lambda ab: {"model_algorithm": "MPI-IO collective read (not in the "
                                  "ledger)"})


# --------------------------------------------------------------------------- dense algorithms


def _probe(ctx: Context, p: dict, n: int, cols: int = 1):
    return _gen(ctx, p, (n, cols), 99)


def _matmul():
    from distmat.summa import matmul

    return matmul


def _build_matmul(ctx: Context, p: dict) -> Case:
    import distmat as dm

    matmul = _matmul()
    n = p["n"]
    m = p["m"] or n
    k = p["k"] or n
    ta, tb, alpha, beta = p["trans_a"], p["trans_b"], p["alpha"], p["beta"]
    A = _gen(ctx, p, (k, m) if ta else (m, k), 0, use_input=True)
    B = _gen(ctx, p, (n, k) if tb else (k, n), 1)
    C0 = _gen(ctx, p, (m, n), 2) if beta != 0 else None
    state: dict = {}
    pr, pc = _grid(ctx)

    def prepare():
        state["out"] = C0.copy() if C0 is not None else None

    kw = {"panel": p["panel"]} if p["panel"] else {}
    try:
        from distmat.summa_plan import DEFAULT_PANEL as panel
    except ImportError:  # pragma: no cover - an older build
        panel = A.block[1]
    panel = p["panel"] or panel

    def run():
        if state.get("out") is None:
            return matmul(A, B, trans_a=ta, trans_b=tb, alpha=alpha, **kw)
        return matmul(A, B, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta, out=state["out"],
                      **kw)

    def check(C):
        x = _probe(ctx, p, n)
        y = matmul(C, x)
        z = matmul(A, matmul(B, x, trans_a=tb), trans_a=ta)
        r = y - alpha * z if C0 is None else y - alpha * z - beta * matmul(C0, x)
        scale = abs(alpha) * dm.norm(A, 1) * dm.norm(B, 1) + (
            abs(beta) * dm.norm(C0, 1) if C0 is not None else 0.0)
        res = dm.norm(r, 1) / (max(scale, 1e-300) * dm.norm(x, 1) * max(k, 1) * _eps(p))
        return _result(res, p["tolerance"])

    def model(ab):
        item = A.dtype.itemsize
        d = M.summa(m, n, k, pr, pc, panel, item, ab, ta, tb)
        mem = p["memory"] or None
        d["bound_words"] = M.itt_lower_bound(m, n, k, pr * pc, mem)
        d["bound_words_mi"] = M.memory_independent_bound(m, n, k, pr * pc)
        return d

    return Case(run=run, check=check if p["check"] else None, prepare=prepare,
                flops=2.0 * m * n * k * _cplx(p), itemsize=A.dtype.itemsize, model=model,
                save=lambda C: C)


def _hpl_matrix(ctx: Context, p: dict, n: int, spd: bool):
    """Uniform [-0.5, 0.5) (HPL); for SPD: (A + A^T) / 2 + n I."""
    import distmat as dm

    A = _gen(ctx, p, (n, n), 0, use_input=True)
    if spd and not p.get("input"):
        I = dm.eye(n, dtype=A.dtype, grid=ctx.grid, block=A.block)
        A = 0.5 * (A + A.H) + float(n) * I
    return A


def _residual(ctx: Context, p: dict, A, X, Bm, n: int) -> tuple[float, bool]:
    """HPL's ||A X - B||_inf / (eps (||A||_inf ||X||_inf + ||B||_inf) n)."""
    import numpy as np

    import distmat as dm

    R = _matmul()(A, X) - Bm
    den = _eps(p) * (dm.norm(A, np.inf) * dm.norm(X, np.inf) + dm.norm(Bm, np.inf)) * n
    return _result(dm.norm(R, np.inf) / max(den, 1e-300), p["tolerance"])


def _linalg():
    import distmat.linalg as la

    return la


def _build_solve(ctx: Context, p: dict) -> Case:
    la = _linalg()
    n, nrhs = p["n"], p["nrhs"]
    spd = p["assume_a"] == "pos"
    A = _hpl_matrix(ctx, p, n, spd)
    B = _gen(ctx, p, (n, nrhs), 1)
    pr, pc = _grid(ctx)
    kw = {"assume_a": p["assume_a"]}
    if p["refine"] != "none":
        kw["refine"] = p["refine"]

    def model(ab):
        item = A.dtype.itemsize
        f = (M.cholesky if spd else M.lu)(n, pr, pc, A.block[1], item, ab)
        t = M.triangular_solve(n, nrhs, pr, pc, A.block[1], item, ab)
        return {"model_algorithm": f"{f['model_algorithm']} + trsm",
                **{k: f[k] + t[k] for k in ("model_words", "model_msgs", "model_seconds")}}

    flops = ((n ** 3) / 3.0 if spd else 2.0 * n ** 3 / 3.0) + 2.0 * n * n * nrhs
    return Case(run=lambda: la.solve(A, B, **kw),
                check=lambda X: _residual(ctx, p, A, X, B, n), flops=flops * _cplx(p),
                itemsize=A.dtype.itemsize, model=model, save=lambda X: X)


def _build_lu(ctx: Context, p: dict) -> Case:
    la = _linalg()
    n = p["n"]
    A = _hpl_matrix(ctx, p, n, False)
    B = _gen(ctx, p, (n, 1), 1)
    pr, pc = _grid(ctx)

    def check(f):
        if not hasattr(la, "lu_solve"):
            return _result(0.0, p["tolerance"])
        return _residual(ctx, p, A, la.lu_solve(f, B), B, n)

    return Case(run=lambda: la.lu_factor(A), check=check, flops=2.0 * n ** 3 / 3 * _cplx(p),
                itemsize=A.dtype.itemsize,
                model=lambda ab: M.lu(n, pr, pc, A.block[1], A.dtype.itemsize, ab))


def _build_cholesky(ctx: Context, p: dict) -> Case:
    import distmat as dm

    la = _linalg()
    n = p["n"]
    A = _hpl_matrix(ctx, p, n, True)
    pr, pc = _grid(ctx)

    def check(L):
        R = _matmul()(L, L.H if L.dtype.kind == "c" else L, trans_b=L.dtype.kind != "c") - A
        res = dm.norm(R, 1) / (max(dm.norm(A, 1), 1e-300) * n * _eps(p))
        return _result(res, p["tolerance"])

    return Case(run=lambda: la.cholesky(A, lower=True), check=check,
                flops=n ** 3 / 3.0 * _cplx(p), itemsize=A.dtype.itemsize,
                model=lambda ab: M.cholesky(n, pr, pc, A.block[1], A.dtype.itemsize, ab),
                save=lambda L: L)


def _build_inv(ctx: Context, p: dict) -> Case:
    import distmat as dm

    la = _linalg()
    n = p["n"]
    A = _hpl_matrix(ctx, p, n, False)
    pr, pc = _grid(ctx)
    I = dm.eye(n, dtype=A.dtype, grid=ctx.grid, block=A.block)

    def check(X):
        R = _matmul()(A, X) - I
        res = dm.norm(R, 1) / (max(dm.norm(A, 1) * dm.norm(X, 1), 1e-300) * n * _eps(p))
        return _result(res, p["tolerance"])

    def model(ab):
        f = M.lu(n, pr, pc, A.block[1], A.dtype.itemsize, ab)
        return {**f, "model_algorithm": f"inv via {f['model_algorithm']} x2",
                "model_words": 2 * f["model_words"], "model_msgs": 2 * f["model_msgs"],
                "model_seconds": 2 * f["model_seconds"]}

    return Case(run=lambda: la.inv(A), check=check, flops=2.0 * n ** 3 * _cplx(p),
                itemsize=A.dtype.itemsize, model=model, save=lambda X: X)


# --------------------------------------------------------------------------- sparse


def _sparse_random(ctx: Context, p: dict, n: int, stream: int):
    import distmat.sparse as sp

    return sp.random((n, n), blocksize=p["blocksize"], density=p["density"],
                     seed=p["seed"] * 7919 + stream, dtype=_dt(p), grid=ctx.grid)


def _build_spmm(ctx: Context, p: dict) -> Case:
    import distmat as dm

    n, nrhs = p["n"], p["nrhs"]
    S = _sparse_random(ctx, p, n, 0)
    X = _gen(ctx, p, (n, nrhs), 1)
    pr, pc = _grid(ctx)
    nnz = float(getattr(S, "nnzb", 0)) * p["blocksize"] ** 2

    def check(Y):
        v = _probe(ctx, p, nrhs)
        mm = _matmul()
        r = mm(Y, v) - S @ mm(X, v)
        scale = dm.norm(Y, 1) + 1e-300
        res = dm.norm(r, 1) / (scale * dm.norm(v, 1) * max(n, 1) * _eps(p))
        return _result(res, p["tolerance"])

    return Case(run=lambda: S @ X, check=check, flops=2.0 * nnz * nrhs * _cplx(p),
                itemsize=X.dtype.itemsize,
                model=lambda ab: M.spmm(n, nrhs, pr, pc, X.dtype.itemsize, ab),
                save=lambda Y: Y)


def _build_sparse_matmul(ctx: Context, p: dict) -> Case:
    import distmat as dm
    import distmat.sparse as sp

    n = p["n"]
    S = _sparse_random(ctx, p, n, 0)
    T = _sparse_random(ctx, p, n, 1)
    pr, pc = _grid(ctx)

    def check(Z):
        v = _probe(ctx, p, n)
        r = Z @ v - S @ (T @ v)
        res = dm.norm(r, 1) / ((dm.norm(Z @ v, 1) + 1e-300) * max(n, 1) * _eps(p))
        return _result(res, p["tolerance"])

    bs = p["blocksize"]
    nb = -(-n // bs)
    flops = 2.0 * (p["density"] ** 2) * nb ** 3 * bs ** 3 * _cplx(p)
    return Case(run=lambda: sp.matmul(S, T), check=check, flops=flops,
                itemsize=_dt(p).itemsize,
                model=lambda ab: M.summa(n, n, n, pr, pc, bs, _dt(p).itemsize, ab) | {
                    "model_words": M.summa_words(n, n, n, pr, pc) * p["density"],
                    "model_algorithm": f"sparse summa {pr}x{pc} (density-scaled)"})


def _build_krylov(ctx: Context, p: dict, which: str) -> Case:
    import distmat as dm
    import distmat.sparse as sp
    import distmat.sparse.linalg as spla

    nx = p["nx"]
    n = nx * nx
    bs = p["blocksize"] or nx
    A = sp.poisson2d(nx, blocksize=bs, dtype=_dt(p), grid=ctx.grid)
    b = _gen(ctx, p, (n, 1), 1)
    solver = getattr(spla, which)
    kw = {"rtol": p["rtol"], "maxiter": p["maxiter"] or n}
    if which == "gmres":
        kw["restart"] = p["restart"]
    state = {"iters": 0}
    pr, pc = _grid(ctx)

    def cb(*_a):
        state["iters"] += 1

    def run():
        state["iters"] = 0
        return solver(A, b, callback=cb, **kw)

    def check(res):
        x, info = res
        r = dm.norm(b - A @ x, "fro") / max(dm.norm(b, "fro"), 1e-300)
        tol = max(p["rtol"] * 10.0, 100 * _eps(p))
        return r / tol, bool(info == 0 and r <= tol)

    def model(ab):  # per iteration: one S @ x (x's piece along grid rows) + reductions
        spmv = n / pr * (1.0 - 1.0 / pc) + n / pc * (1.0 - 1.0 / pr)
        return M.krylov(n, pr * pc, max(state["iters"], 1), spmv,
                        2 if which == "cg" else 3, _dt(p).itemsize, ab)

    per_iter = 2.0 * 5 * n + 10.0 * n
    return Case(run=run, check=check, itemsize=_dt(p).itemsize, model=model,
                flops=0.0, save=lambda res: res[0],
                extra={"_iters": state, "_per_iter_flops": per_iter})


def _build_cg(ctx: Context, p: dict) -> Case:
    return _build_krylov(ctx, p, "cg")


def _build_gmres(ctx: Context, p: dict) -> Case:
    return _build_krylov(ctx, p, "gmres")


# --------------------------------------------------------------------------- calibration


def _iters_for(size: int, iterations: int) -> int:
    return max(2, min(iterations, int(iterations * 65536 // max(size, 1)) or 2))


def pingpong_sweep(comm: Any, sizes: list[int], iterations: int, peer: int
                   ) -> tuple[list[dict], bool]:
    """OSU-style ping-pong between rank 0 and ``peer``; one-way time per size. Collective.

    Returns the rows (on every rank) and whether every echoed message came back intact.
    """
    import time

    import numpy as np

    from distmat import comm as dmc

    me = comm.Get_rank()
    rows: list[dict] = []
    ok = True
    for size in sizes:
        iters = _iters_for(size, iterations)
        buf = np.empty(size, dtype=np.uint8)
        pattern = (np.arange(size) % 251).astype(np.uint8)
        if me == 0:
            buf[:] = pattern
        comm.Barrier()
        t = 0.0
        for it in range(iters + 1):  # the first round trip is a warm-up
            t0 = time.perf_counter()
            if me == 0:
                comm.Send(buf, dest=peer, tag=7)
                comm.Recv(buf, source=peer, tag=8)
            elif me == peer:
                comm.Recv(buf, source=0, tag=7)
                comm.Send(buf, dest=0, tag=8)
            if it:
                t += time.perf_counter() - t0
        if me == 0:
            ok = ok and bool(np.array_equal(buf, pattern))
        one_way = np.array([t / iters / 2.0])
        dmc.bcast(comm, one_way, 0)
        rows.append({"bytes": size, "iterations": iters, "seconds": float(one_way[0])})
    flag = np.array([0 if ok else 1])
    dmc.allreduce(comm, flag)
    return rows, bool(flag[0] == 0)


def _collective_sweep(comm: Any, sizes: list[int], iterations: int, which: str
                      ) -> tuple[list[dict], bool]:
    import time

    import numpy as np
    from mpi4py import MPI

    me, p = comm.Get_rank(), comm.Get_size()
    rows: list[dict] = []
    ok = True
    for size in sizes:
        iters = _iters_for(size, iterations)
        n8 = max(1, size // 8)
        buf = np.empty(n8, dtype=np.float64)
        times = []
        for it in range(iters + 1):
            if which == "bcast":
                buf[:] = 1.0 if me == 0 else 0.0
            else:
                buf[:] = me + 1.0
            comm.Barrier()
            t0 = time.perf_counter()
            if which == "bcast":
                comm.Bcast(buf, 0)
            else:
                comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            if it:
                times.append(time.perf_counter() - t0)
        want = 1.0 if which == "bcast" else p * (p + 1) / 2.0
        ok = ok and bool(np.all(buf == want))
        avg = np.array([sum(times) / len(times)])
        comm.Allreduce(MPI.IN_PLACE, avg, op=MPI.MAX)
        rows.append({"bytes": n8 * 8, "iterations": iters, "seconds": float(avg[0])})
    flag = np.array([0 if ok else 1])
    comm.Allreduce(MPI.IN_PLACE, flag, op=MPI.MAX)
    return rows, bool(flag[0] == 0)


def _calibration_case(ctx: Context, p: dict, which: str) -> Case:
    comm = ctx.grid.comm
    size = comm.Get_size()
    peer = p.get("peer", -1)
    peer = size - 1 if peer == -1 else peer
    if which == "pingpong" and not 0 < peer < size:
        raise ValueError(f"pingpong peer must be a rank in 1..{size - 1}, got {peer}")
    state: dict = {}

    def run():
        if which == "pingpong":
            rows, ok = pingpong_sweep(comm, p["sizes"], p["iterations"], peer)
            steps = 1.0
        else:
            rows, ok = _collective_sweep(comm, p["sizes"], p["iterations"], which)
            steps = M.tree_steps(size) * (2 if which == "allreduce" else 1) or 1.0
        state["rows"], state["ok"] = rows, ok
        fit = None
        if size > 1 and len({r["bytes"] for r in rows}) >= 2:
            a, b = M.fit_alpha_beta([r["bytes"] for r in rows], [r["seconds"] for r in rows],
                                    steps=steps)
            fit = M.AlphaBeta(a, b, which)
        state["fit"] = fit
        return rows

    def check(rows):
        return (0.0 if state["ok"] else math.inf), state["ok"]

    def extra():
        d: dict = {"sizes": state["rows"]}
        if state.get("fit") is not None:
            d["fit"] = state["fit"].as_dict()
        return d

    def model(ab):  # raw MPI calls, outside the ledger: only the time is modelled
        one = [(M.pingpong(s, ab) if which == "pingpong" else getattr(M, which)(s, size, ab))
               for s in p["sizes"]]
        return {"model_algorithm": f"{which} sweep (raw MPI, not in the ledger)",
                "model_seconds_per_size": [o["model_seconds"] for o in one]}

    case = Case(run=run, check=check, itemsize=1, model=model)
    case.extra = {"_calibration": extra, "_state": state}
    return case


def _build_pingpong(ctx: Context, p: dict) -> Case:
    return _calibration_case(ctx, p, "pingpong")


def _build_bcast(ctx: Context, p: dict) -> Case:
    return _calibration_case(ctx, p, "bcast")


def _build_allreduce(ctx: Context, p: dict) -> Case:
    return _calibration_case(ctx, p, "allreduce")


# --------------------------------------------------------------------------- diagnostics


def _build_fault(ctx: Context, p: dict) -> Case:
    import os
    import signal
    import sys
    import time

    comm = ctx.grid.comm
    who = comm.Get_size() - 1 if p["rank"] == -1 else p["rank"]
    if not 0 <= who < comm.Get_size():
        raise ValueError(f"fault rank must be in 0..{comm.Get_size() - 1} or -1, "
                         f"got {p['rank']}")

    def run():
        time.sleep(p["seconds"])
        if comm.Get_rank() == who:
            if p["mode"] == "raise":
                raise RuntimeError(f"deliberate failure (fault task) on rank {who}")
            if p["mode"] == "kill":
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            if p["mode"] == "exit":
                os._exit(17)
        if p["mode"] == "hang":
            time.sleep(10 ** 6)
        comm.Barrier()
        return None

    return Case(run=run, check=None)
