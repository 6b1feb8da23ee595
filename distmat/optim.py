"""First-order optimizers for distributed parameters (``dm.optim``, layer 3).

Each optimizer holds a list of :class:`~distmat.DistMatrix` parameters and updates them in
place from gradients with the same shape, block, grid and dtype.  Every update is elementwise,
so it runs on the local arrays alone: :meth:`Optimizer.step` sends no message, and the result
is the same on any grid, rank count or block size.  The state (momentum buffers, accumulated
squares) is kept per parameter as local arrays of the parameter's dtype.

The names, defaults and update rules follow ``torch.optim`` (``SGD``, ``Adagrad``,
``RMSprop``), so a training loop written for PyTorch reads the same here::

    opt = dm.optim.SGD([W1, W2], lr=0.1, momentum=0.9, nesterov=True)
    for epoch in range(epochs):
        g1, g2 = backward(...)          # DistMatrix gradients
        opt.step([g1, g2])

Only real floating dtypes (float32, float64) are supported.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real
from typing import Any

import numpy as np

from .errors import ShapeMismatchError
from .matrix import DistMatrix, check_same_grid

__all__ = ["Optimizer", "SGD", "Adagrad", "AdaGrad", "RMSprop", "RMSProp"]

_REAL = (np.dtype(np.float32), np.dtype(np.float64))


def _hyper(name: str, value: Any, low: float = 0.0, high: float | None = None,
           high_open: bool = False) -> float:
    """``value`` as a float in ``[low, high]`` (``[low, high)`` with ``high_open``)."""
    if isinstance(value, bool) or not isinstance(value, (Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not np.isfinite(v) or v < low or (high is not None and (v >= high if high_open
                                                               else v > high)):
        if high is None:
            want = f">= {low}"
        else:
            want = f"in [{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be {want}, got {value!r}")
    return v


class Optimizer:
    """Base class: parameter bookkeeping, gradient checks and the step counter.

    Parameters
    ----------
    params : sequence of DistMatrix
        The parameters to update in place **(global: the same list on every rank)**.  Each
        must be float32 or float64; they may live on different grids and blocks.

    Attributes
    ----------
    params : list of DistMatrix
        The parameters.
    state : list of dict
        Per-parameter state arrays (local pieces), named as in ``torch.optim``.
    steps : int
        Number of :meth:`step` calls made so far.
    """

    def __init__(self, params: Sequence[DistMatrix]):
        if isinstance(params, DistMatrix):
            raise TypeError("params must be a list of DistMatrix, got a single DistMatrix; "
                            "wrap it in a list")
        try:
            params = list(params)
        except TypeError:
            raise TypeError(f"params must be a list of DistMatrix, got "
                            f"{type(params).__name__}") from None
        if not params:
            raise ValueError("params is an empty list: nothing to optimize")
        for i, p in enumerate(params):
            if not isinstance(p, DistMatrix):
                raise TypeError(f"params[{i}] must be a DistMatrix, got {type(p).__name__}")
            if p.dtype not in _REAL:
                raise TypeError(f"params[{i}] has dtype {p.dtype}; the optimizers support "
                                f"float32 and float64 parameters")
        for i, p in enumerate(params):
            for j in range(i):
                if params[j] is p or np.shares_memory(params[j].local, p.local):
                    raise ValueError(f"params[{i}] and params[{j}] are the same matrix "
                                     f"(or share memory): each parameter must appear once")
        self.params: list[DistMatrix] = params
        self.state: list[dict[str, np.ndarray]] = [{} for _ in params]
        self.steps = 0

    def _check_grads(self, grads: Sequence[DistMatrix]) -> list[DistMatrix]:
        """Validate ``grads`` against the parameters from global metadata only."""
        if isinstance(grads, DistMatrix):
            grads = [grads]
        try:
            grads = list(grads)
        except TypeError:
            raise TypeError(f"grads must be a list of DistMatrix, got "
                            f"{type(grads).__name__}") from None
        if len(grads) != len(self.params):
            raise ValueError(f"step: got {len(grads)} gradients for {len(self.params)} "
                             f"parameters")
        for i, (p, g) in enumerate(zip(self.params, grads, strict=True)):
            if not isinstance(g, DistMatrix):
                raise TypeError(f"grads[{i}] must be a DistMatrix, got {type(g).__name__}")
            if g.shape != p.shape:
                raise ShapeMismatchError(f"grads[{i}] has shape {g.shape} but params[{i}] has "
                                         f"shape {p.shape}")
            check_same_grid(p, g, f"step: params[{i}] and grads[{i}]")
            if g.block != p.block:
                raise ValueError(f"grads[{i}] has block {g.block} but params[{i}] has block "
                                 f"{p.block}: the update is elementwise on the local arrays; "
                                 f"use grads[{i}].redistribute(block={p.block})")
            if g.dtype != p.dtype:
                raise TypeError(f"grads[{i}] has dtype {g.dtype} but params[{i}] has dtype "
                                f"{p.dtype}")
        return grads

    def step(self, grads: Sequence[DistMatrix]) -> None:
        """Update every parameter in place from its gradient.

        Parameters
        ----------
        grads : sequence of DistMatrix
            One gradient per parameter, in the same order, each with the parameter's shape,
            block, grid and dtype **(global metadata)**.  Not modified.

        Raises
        ------
        ShapeMismatchError
            If a gradient's shape differs from its parameter's (naming both).
        GridMismatchError, ValueError, TypeError
            If a gradient lives on another grid, has another block or dtype, or the count
            differs.  All decided from global metadata, so every rank raises the same error.

        Notes
        -----
        Purely local (elementwise on ``local`` arrays): no communication.
        """
        grads = self._check_grads(grads)
        self.steps += 1
        for p, g, st in zip(self.params, grads, self.state, strict=True):
            if p.local.size:
                self._update(p.local, g.local, st)

    def _update(self, p: np.ndarray, g: np.ndarray, st: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def _decayed(self, p: np.ndarray, g: np.ndarray, weight_decay: float) -> np.ndarray:
        """``g + weight_decay * p`` (a new array), or ``g`` itself without decay."""
        return g + weight_decay * p if weight_decay else g


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum.

    With ``g = grad + weight_decay * p`` and, for ``momentum > 0``, the buffer
    ``b = g`` on the first step and ``b = momentum * b + (1 - dampening) * g`` afterwards::

        p -= lr * g                        # momentum == 0
        p -= lr * b                        # momentum > 0
        p -= lr * (g + momentum * b)       # nesterov=True

    Parameters
    ----------
    params : sequence of DistMatrix
        Parameters updated in place **(global)**.
    lr : float
        Learning rate, >= 0 (default 1e-3, as in torch.optim.SGD) **(global)**.
    momentum : float
        Momentum factor, >= 0 (default 0) **(global)**.
    dampening : float
        Dampening of the momentum, >= 0 (default 0) **(global)**.
    weight_decay : float
        L2 penalty, >= 0 (default 0) **(global)**.
    nesterov : bool
        Nesterov momentum (default False); needs ``momentum > 0`` and ``dampening == 0``
        **(global)**.
    """

    def __init__(self, params: Sequence[DistMatrix], lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False):
        self.lr = _hyper("lr", lr)
        self.momentum = _hyper("momentum", momentum)
        self.dampening = _hyper("dampening", dampening)
        self.weight_decay = _hyper("weight_decay", weight_decay)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov must be True or False, got {nesterov!r}")
        if nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening == 0 (got "
                             f"momentum={momentum!r}, dampening={dampening!r})")
        self.nesterov = bool(nesterov)
        super().__init__(params)

    def _update(self, p: np.ndarray, g: np.ndarray, st: dict[str, np.ndarray]) -> None:
        g = self._decayed(p, g, self.weight_decay)
        if self.momentum:
            buf = st.get("momentum_buffer")
            if buf is None:
                buf = st["momentum_buffer"] = np.array(g, copy=True)
            else:
                buf *= self.momentum
                buf += (1.0 - self.dampening) * g
            if self.nesterov:
                p -= self.lr * (g + self.momentum * buf)
                return
            g = buf
        p -= self.lr * g


class Adagrad(Optimizer):
    """AdaGrad: per-entry step sizes from the running sum of squared gradients.

    With ``g = grad + weight_decay * p``, step ``t`` (from 1) and
    ``clr = lr / (1 + (t - 1) * lr_decay)``::

        s += g * g                         # s starts at initial_accumulator_value
        p -= clr * g / (sqrt(s) + eps)

    Parameters
    ----------
    params : sequence of DistMatrix
        Parameters updated in place **(global)**.
    lr : float
        Learning rate, >= 0 (default 0.01) **(global)**.
    lr_decay : float
        Learning-rate decay, >= 0 (default 0) **(global)**.
    weight_decay : float
        L2 penalty, >= 0 (default 0) **(global)**.
    initial_accumulator_value : float
        Starting value of ``s``, >= 0 (default 0) **(global)**.
    eps : float
        Added to the denominator, >= 0 (default 1e-10) **(global)**.
    """

    def __init__(self, params: Sequence[DistMatrix], lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10):
        self.lr = _hyper("lr", lr)
        self.lr_decay = _hyper("lr_decay", lr_decay)
        self.weight_decay = _hyper("weight_decay", weight_decay)
        self.initial_accumulator_value = _hyper("initial_accumulator_value",
                                                initial_accumulator_value)
        self.eps = _hyper("eps", eps)
        super().__init__(params)
        for p, st in zip(self.params, self.state, strict=True):
            st["sum"] = np.full(p.local.shape, self.initial_accumulator_value, dtype=p.dtype)

    def _update(self, p: np.ndarray, g: np.ndarray, st: dict[str, np.ndarray]) -> None:
        g = self._decayed(p, g, self.weight_decay)
        clr = self.lr / (1.0 + (self.steps - 1) * self.lr_decay)
        s = st["sum"]
        s += g * g
        den = np.sqrt(s)
        den += self.eps
        p -= clr * (g / den)


class RMSprop(Optimizer):
    """RMSProp: step sizes from a moving average of squared gradients.

    With ``g = grad + weight_decay * p`` and ``v`` (and ``m``) starting at zero::

        v = alpha * v + (1 - alpha) * g * g
        m = alpha * m + (1 - alpha) * g            # centered=True only
        d = sqrt(v - m * m) + eps                  # centered; sqrt(v) + eps otherwise
        p -= lr * g / d                            # momentum == 0
        b = momentum * b + g / d; p -= lr * b      # momentum > 0 (b starts at zero)

    Parameters
    ----------
    params : sequence of DistMatrix
        Parameters updated in place **(global)**.
    lr : float
        Learning rate, >= 0 (default 0.01) **(global)**.
    alpha : float
        Smoothing constant in [0, 1] (default 0.99) **(global)**.
    eps : float
        Added to the denominator, >= 0 (default 1e-8) **(global)**.
    weight_decay : float
        L2 penalty, >= 0 (default 0) **(global)**.
    momentum : float
        Momentum factor, >= 0 (default 0) **(global)**.
    centered : bool
        Normalise by the estimated variance instead of the second moment (default False)
        **(global)**.
    """

    def __init__(self, params: Sequence[DistMatrix], lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False):
        self.lr = _hyper("lr", lr)
        self.alpha = _hyper("alpha", alpha, 0.0, 1.0)
        self.eps = _hyper("eps", eps)
        self.weight_decay = _hyper("weight_decay", weight_decay)
        self.momentum = _hyper("momentum", momentum)
        if not isinstance(centered, (bool, np.bool_)):
            raise TypeError(f"centered must be True or False, got {centered!r}")
        self.centered = bool(centered)
        super().__init__(params)
        for p, st in zip(self.params, self.state, strict=True):
            st["square_avg"] = np.zeros(p.local.shape, dtype=p.dtype)
            if self.centered:
                st["grad_avg"] = np.zeros(p.local.shape, dtype=p.dtype)
            if self.momentum:
                st["momentum_buffer"] = np.zeros(p.local.shape, dtype=p.dtype)

    def _update(self, p: np.ndarray, g: np.ndarray, st: dict[str, np.ndarray]) -> None:
        g = self._decayed(p, g, self.weight_decay)
        a = self.alpha
        v = st["square_avg"]
        v *= a
        v += (1.0 - a) * (g * g)
        if self.centered:
            m = st["grad_avg"]
            m *= a
            m += (1.0 - a) * g
            den = np.sqrt(v - m * m)
        else:
            den = np.sqrt(v)
        den += self.eps
        if self.momentum:
            b = st["momentum_buffer"]
            b *= self.momentum
            b += g / den
            p -= self.lr * b
        else:
            p -= self.lr * (g / den)


#: Aliases with the spellings of the literature.
AdaGrad = Adagrad
RMSProp = RMSprop
