"""dm.optim against reference numpy implementations, step for step, on several grids.

Every rank builds the same parameters and gradients from a fixed seed; the reference runs the
update rules of torch.optim (written out here independently, on the global arrays) and each
step's gathered parameters must match it to a few units of rounding.
"""

import numpy as np
import pytest

import distmat as dm
from distmat.testing import assert_all, subgrids

pytestmark = pytest.mark.mpi

GRIDS = [(1, 1), (1, 2), (2, 1), (2, 2), (1, 3), (3, 1)]
#: (shape, block) of the parameters: awkward blocks, and a matrix smaller than the grid
SHAPES = [((13, 7), (3, 2)), ((2, 3), (1, 1)), ((9, 10), (4, 4))]
STEPS = 5


# ----------------------------------------------------------------- reference implementations
class RefSGD:
    def __init__(self, ps, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False):
        self.ps, self.h = ps, dict(lr=lr, mu=momentum, d=dampening, wd=weight_decay,
                                   nest=nesterov)
        self.buf = [None] * len(ps)

    def step(self, gs):
        h = self.h
        for i, (p, g) in enumerate(zip(self.ps, gs, strict=True)):
            if h["wd"] != 0:
                g = g + h["wd"] * p
            if h["mu"] != 0:
                if self.buf[i] is None:
                    self.buf[i] = g.copy()
                else:
                    self.buf[i] = h["mu"] * self.buf[i] + (1 - h["d"]) * g
                g = g + h["mu"] * self.buf[i] if h["nest"] else self.buf[i]
            self.ps[i] = p - h["lr"] * g


class RefAdagrad:
    def __init__(self, ps, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10):
        self.ps, self.h = ps, dict(lr=lr, decay=lr_decay, wd=weight_decay, eps=eps)
        self.s = [np.full_like(p, initial_accumulator_value) for p in ps]
        self.t = 0

    def step(self, gs):
        h = self.h
        self.t += 1
        clr = h["lr"] / (1 + (self.t - 1) * h["decay"])
        for i, (p, g) in enumerate(zip(self.ps, gs, strict=True)):
            if h["wd"] != 0:
                g = g + h["wd"] * p
            self.s[i] = self.s[i] + g * g
            self.ps[i] = p - clr * g / (np.sqrt(self.s[i]) + h["eps"])


class RefRMSprop:
    def __init__(self, ps, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False):
        self.ps, self.h = ps, dict(lr=lr, a=alpha, eps=eps, wd=weight_decay, mu=momentum,
                                   c=centered)
        self.v = [np.zeros_like(p) for p in ps]
        self.m = [np.zeros_like(p) for p in ps]
        self.b = [np.zeros_like(p) for p in ps]

    def step(self, gs):
        h = self.h
        for i, (p, g) in enumerate(zip(self.ps, gs, strict=True)):
            if h["wd"] != 0:
                g = g + h["wd"] * p
            self.v[i] = h["a"] * self.v[i] + (1 - h["a"]) * g * g
            if h["c"]:
                self.m[i] = h["a"] * self.m[i] + (1 - h["a"]) * g
                avg = np.sqrt(self.v[i] - self.m[i] ** 2) + h["eps"]
            else:
                avg = np.sqrt(self.v[i]) + h["eps"]
            if h["mu"] > 0:
                self.b[i] = h["mu"] * self.b[i] + g / avg
                self.ps[i] = p - h["lr"] * self.b[i]
            else:
                self.ps[i] = p - h["lr"] * g / avg


CONFIGS = [
    (dm.optim.SGD, RefSGD, dict(lr=0.1)),
    (dm.optim.SGD, RefSGD, dict(lr=0.05, momentum=0.9)),
    (dm.optim.SGD, RefSGD, dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    (dm.optim.SGD, RefSGD, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.02)),
    (dm.optim.Adagrad, RefAdagrad, dict(lr=0.1)),
    (dm.optim.Adagrad, RefAdagrad, dict(lr=0.1, lr_decay=0.05, weight_decay=0.01,
                                        initial_accumulator_value=0.1, eps=1e-6)),
    (dm.optim.RMSprop, RefRMSprop, dict()),
    (dm.optim.RMSprop, RefRMSprop, dict(lr=0.02, alpha=0.9, momentum=0.5, centered=True,
                                        weight_decay=0.01)),
    (dm.optim.RMSprop, RefRMSprop, dict(lr=0.02, momentum=0.3)),
]


def _run_case(grid, opt_cls, ref_cls, hyper, dtype, seed):
    """Run STEPS steps distributed and in numpy; return a failure string or None."""
    gen = np.random.default_rng(seed)
    p0 = [gen.standard_normal(shape).astype(dtype) for shape, _ in SHAPES]
    params = [dm.from_global(p, grid=grid, block=blk, root=None)
              for p, (_, blk) in zip(p0, SHAPES, strict=True)]
    opt = opt_cls(params, **hyper)
    ref = ref_cls([p.copy() for p in p0], **hyper)
    eps = float(np.finfo(dtype).eps)
    for t in range(STEPS):
        g = [gen.standard_normal(shape).astype(dtype) for shape, _ in SHAPES]
        grads = [dm.from_global(x, grid=grid, block=blk, root=None)
                 for x, (_, blk) in zip(g, SHAPES, strict=True)]
        opt.step(grads)
        ref.step(g)
        for i, P in enumerate(params):
            got = P.gather(None)
            want = ref.ps[i]
            tol = 16 * eps * (np.abs(want) + np.abs(p0[i]) + 1.0)
            if got.dtype != np.dtype(dtype) or not np.all(np.abs(got - want) <= tol):
                err = float(np.max(np.abs(got.astype(np.float64) - want)))
                return (f"{grid.shape} {opt_cls.__name__}({hyper}) {np.dtype(dtype).name} "
                        f"step {t + 1} param {i}: max error {err:.3g}")
    if opt.steps != STEPS:
        return f"steps counter {opt.steps}"
    return None


@pytest.mark.grids
def test_optimizers_match_numpy_reference_step_for_step(comm):
    bad = []
    for gi, (_shape, grid) in enumerate(subgrids(comm, GRIDS)):
        if grid is None:
            continue
        for ci, (opt_cls, ref_cls, hyper) in enumerate(CONFIGS):
            for dtype in (np.float32, np.float64):
                f = _run_case(grid, opt_cls, ref_cls, hyper, dtype, 1000 * gi + ci)
                if f:
                    bad.append(f)
    assert_all(comm, not bad, "; ".join(bad[:4]))


def test_step_sends_no_message(comm):
    grid = dm.ProcessGrid(comm)
    try:
        W = dm.random((17, 11), seed=1, grid=grid, block=(3, 2), dtype=np.float32)
        G = dm.random((17, 11), seed=2, grid=grid, block=(3, 2), dtype=np.float32)
        opts = [dm.optim.SGD([W], lr=0.1, momentum=0.9, nesterov=True),
                dm.optim.Adagrad([W]), dm.optim.RMSprop([W], momentum=0.5, centered=True)]
        with dm.profile(grid) as prof:
            for opt in opts:
                for _ in range(3):
                    opt.step([G])
        tot = prof.total
        ok = (not prof.ops and tot.msgs_sent.sum == 0 and tot.bytes_sent.sum == 0
              and tot.bytes_recv.sum == 0 and tot.calls.sum == 0)
        assert_all(comm, ok, f"step() communicated: {prof.as_dict()}")
    finally:
        grid.free()


def test_defaults_follow_torch(comm):
    grid = dm.ProcessGrid(comm)
    try:
        W = dm.zeros((3, 3), grid=grid)
        s = dm.optim.SGD([W])
        assert (s.lr, s.momentum, s.dampening, s.weight_decay, s.nesterov) == \
            (1e-3, 0.0, 0.0, 0.0, False)
        a = dm.optim.Adagrad([W])
        assert (a.lr, a.lr_decay, a.weight_decay, a.initial_accumulator_value, a.eps) == \
            (0.01, 0.0, 0.0, 0.0, 1e-10)
        r = dm.optim.RMSprop([W])
        assert (r.lr, r.alpha, r.eps, r.weight_decay, r.momentum, r.centered) == \
            (0.01, 0.99, 1e-8, 0.0, 0.0, False)
        assert dm.optim.AdaGrad is dm.optim.Adagrad and dm.optim.RMSProp is dm.optim.RMSprop
    finally:
        grid.free()


def test_bad_arguments_raise_on_every_rank(comm):
    grid = dm.ProcessGrid(comm)
    try:
        W = dm.ones((6, 4), grid=grid, block=(2, 2))
        V = dm.ones((3, 5), grid=grid, block=(2, 2))
        opt = dm.optim.SGD([W, V], lr=0.1)
        with pytest.raises(dm.ShapeMismatchError, match=r"\(4, 6\).*\(6, 4\)"):
            opt.step([dm.ones((4, 6), grid=grid, block=(2, 2)), V])
        with pytest.raises(ValueError, match="block"):
            opt.step([dm.ones((6, 4), grid=grid, block=(3, 1)), V])
        with pytest.raises(TypeError, match="dtype"):
            opt.step([W.astype(np.float32), V])
        with pytest.raises(ValueError, match="1 gradients for 2"):
            opt.step([W])
        with pytest.raises(TypeError, match="DistMatrix"):
            opt.step([np.ones((6, 4)), V])
        if comm.Get_size() > 1:
            other = dm.ProcessGrid(comm, (comm.Get_size(), 1))
            try:
                with pytest.raises(dm.GridMismatchError):
                    opt.step([dm.ones((6, 4), grid=other, block=(2, 2)), V])
            finally:
                other.free()
        for bad in (dict(lr=-0.1), dict(momentum=-1), dict(weight_decay=-1e-3),
                    dict(dampening=-1), dict(nesterov=True), dict(lr=float("nan")),
                    dict(momentum=0.9, dampening=0.1, nesterov=True)):
            with pytest.raises(ValueError):
                dm.optim.SGD([W], **bad)
        with pytest.raises(TypeError, match="lr"):
            dm.optim.SGD([W], lr="0.1")
        for bad in (dict(lr=-1), dict(eps=-1), dict(lr_decay=-1),
                    dict(initial_accumulator_value=-1)):
            with pytest.raises(ValueError):
                dm.optim.Adagrad([W], **bad)
        for bad in (dict(alpha=1.5), dict(alpha=-0.1), dict(eps=-1), dict(momentum=-1)):
            with pytest.raises(ValueError):
                dm.optim.RMSprop([W], **bad)
        with pytest.raises(TypeError, match="float32 and float64"):
            dm.optim.SGD([W.astype(np.complex128)])
        with pytest.raises(ValueError, match="empty"):
            dm.optim.SGD([])
        with pytest.raises(TypeError, match="list"):
            dm.optim.SGD(W)
        with pytest.raises(ValueError, match="same matrix"):
            dm.optim.SGD([W, W])
        # nothing was updated by the failed calls, and the optimizer still works
        opt.step([W.copy(), V.copy()])
        ok = np.allclose(W.gather(None), 0.9) and np.allclose(V.gather(None), 0.9)
        assert_all(comm, ok and opt.steps == 1, "failed steps changed the parameters")
    finally:
        grid.free()
