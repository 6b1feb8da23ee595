"""Counter-based random numbers keyed by global position (layer 0: pure numpy).

Entry ``(i, j)`` of an ``m x n`` random matrix is a hash of ``(seed, stream, i * n + j)``
(SplitMix64's finaliser), so any rank can produce any entry on its own: the global matrix is
the same for every grid shape, rank count and block size, and each rank does work
proportional to its local size only.
"""

from __future__ import annotations

import numpy as np

__all__ = ["uniform01", "standard_normal", "mix64"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser applied elementwise to a ``uint64`` array (wrapping arithmetic)."""
    z = x + _GOLDEN
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def _keys(rows: np.ndarray, cols: np.ndarray, ncols: int, seed: int, stream: int) -> np.ndarray:
    base = mix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    base = mix64(base ^ np.uint64(stream))
    r = rows.astype(np.uint64)[:, None] * np.uint64(max(ncols, 1))
    return mix64((r + cols.astype(np.uint64)[None, :]) ^ base)


def uniform01(rows: np.ndarray, cols: np.ndarray, ncols: int, seed: int,
              stream: int = 0) -> np.ndarray:
    """Uniform float64 numbers in ``[0, 1)`` for entries ``rows x cols`` of an ``? x ncols``
    matrix (53 random bits each)."""
    with np.errstate(over="ignore"):
        bits = _keys(rows, cols, ncols, seed, stream) >> np.uint64(11)
    return bits.astype(np.float64) * (1.0 / 9007199254740992.0)


def standard_normal(rows: np.ndarray, cols: np.ndarray, ncols: int, seed: int,
                    stream: int = 0) -> np.ndarray:
    """Standard normal float64 numbers (Box-Muller on two independent uniform streams)."""
    u1 = uniform01(rows, cols, ncols, seed, 2 * stream)
    u2 = uniform01(rows, cols, ncols, seed, 2 * stream + 1)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
