"""The distmat exception hierarchy.

Every public collective raises these identically on every rank: argument errors are decided
from global metadata before any message is sent, and rank-local failures are agreed first
(see :func:`distmat.comm.agreed`).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "DistmatError",
    "ShapeMismatchError",
    "GridMismatchError",
    "SingularMatrixError",
    "RemoteError",
]


class DistmatError(Exception):
    """Base class of all distmat errors."""


class ShapeMismatchError(DistmatError, ValueError):
    """Operand shapes do not conform (the message names both shapes)."""


class GridMismatchError(DistmatError, ValueError):
    """Operands live on different process grids."""


class SingularMatrixError(DistmatError, np.linalg.LinAlgError):
    """A matrix is exactly singular (the message names the zero pivot's global column)."""


class RemoteError(DistmatError):
    """A failure raised on other ranks of a collective, re-raised on this one.

    Used when the original exception type cannot be rebuilt from its message. ``ranks`` lists
    the failing ranks of the communicator, ``reasons`` their messages.
    """

    def __init__(self, message: str, ranks: tuple[int, ...] = (), reasons: tuple[str, ...] = ()):
        super().__init__(message)
        self.ranks = ranks
        self.reasons = reasons
