"""Block-cyclic index math (layer 0: pure functions, no MPI).

A dimension of global length ``n`` is cut into blocks of ``nb`` consecutive indices; block
``b`` lives on process ``b % nprocs`` (the first block on process 0, as in ScaLAPACK with
``RSRC = CSRC = 0``).  Each process stores its blocks in order, so the local index of a global
index ``g`` is ``(g // (nb * nprocs)) * nb + g % nb``.

Everything here works on whole index arrays at once; no loop runs over elements.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Layout",
    "numroc",
    "owned_indices",
    "owner_of",
    "global_to_local",
    "grid_shape_for",
    "panels",
    "check_block",
    "split_by_owner",
]


def numroc(n: int, nb: int, iproc: int, nprocs: int) -> int:
    """Number of the ``n`` global indices that process ``iproc`` of ``nprocs`` owns.

    Parameters
    ----------
    n : int
        Global length of the dimension (>= 0).
    nb : int
        Block size (>= 1).
    iproc : int
        Process coordinate along the dimension, ``0 <= iproc < nprocs``.
    nprocs : int
        Number of processes along the dimension.
    """
    nblocks, rem = divmod(n, nb)
    count = (nblocks // nprocs) * nb
    extra = nblocks % nprocs
    if iproc < extra:
        count += nb
    elif iproc == extra:
        count += rem
    return count


def owned_indices(n: int, nb: int, iproc: int, nprocs: int) -> np.ndarray:
    """Global indices owned by process ``iproc``, in local storage order (increasing).

    Returns an ``int64`` array of length ``numroc(n, nb, iproc, nprocs)``.
    """
    first_blocks = np.arange(iproc * nb, n, nb * nprocs, dtype=np.int64)
    if first_blocks.size == 0:
        return np.empty(0, dtype=np.int64)
    idx = (first_blocks[:, None] + np.arange(nb, dtype=np.int64)[None, :]).ravel()
    return idx[idx < n]


def owner_of(g: np.ndarray | int, nb: int, nprocs: int) -> np.ndarray | int:
    """Process coordinate owning global index (or index array) ``g``."""
    return (g // nb) % nprocs


def global_to_local(g: np.ndarray | int, nb: int, nprocs: int) -> np.ndarray | int:
    """Local storage index of global index (or index array) ``g`` on its owner."""
    return (g // (nb * nprocs)) * nb + g % nb


def grid_shape_for(nprocs: int) -> tuple[int, int]:
    """Near-square grid ``(pr, pc)`` with ``pr * pc == nprocs`` and ``pr <= pc``."""
    if nprocs < 1:
        raise ValueError(f"nprocs must be a positive integer, got {nprocs!r}")
    pr = math.isqrt(nprocs)
    while nprocs % pr:
        pr -= 1
    return pr, nprocs // pr


def panels(n: int, width: int) -> Iterator[tuple[int, int]]:
    """Yield ``(start, width)`` of consecutive panels covering ``range(n)``."""
    if width < 1:
        raise ValueError(f"panel width must be >= 1, got {width}")
    for start in range(0, n, width):
        yield start, min(width, n - start)


def check_block(block: object, name: str = "block") -> tuple[int, int]:
    """Validate a block size ``(mb, nb)`` of positive integers and return it as a tuple."""
    try:
        mb, nb = block  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a pair (mb, nb) of positive integers, got {block!r}"
        ) from None
    for v in (mb, nb):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a pair (mb, nb) of positive integers, got {block!r}")
    return int(mb), int(nb)


@dataclass(frozen=True)
class Layout:
    """A 2D block-cyclic distribution of an ``m x n`` matrix over a ``pr x pc`` grid.

    Attributes
    ----------
    shape : tuple of int
        Global shape ``(m, n)``.
    block : tuple of int
        Block size ``(mb, nb)``.
    grid_shape : tuple of int
        Process grid shape ``(pr, pc)``; coordinate ``(r, c)`` is grid rank ``r * pc + c``.
    """

    shape: tuple[int, int]
    block: tuple[int, int]
    grid_shape: tuple[int, int]

    def local_shape(self, prow: int, pcol: int) -> tuple[int, int]:
        """Shape of the local array stored at grid coordinate ``(prow, pcol)``."""
        (m, n), (mb, nb), (pr, pc) = self.shape, self.block, self.grid_shape
        return numroc(m, mb, prow, pr), numroc(n, nb, pcol, pc)

    def rows(self, prow: int) -> np.ndarray:
        """Global row indices stored on process row ``prow``."""
        return owned_indices(self.shape[0], self.block[0], prow, self.grid_shape[0])

    def cols(self, pcol: int) -> np.ndarray:
        """Global column indices stored on process column ``pcol``."""
        return owned_indices(self.shape[1], self.block[1], pcol, self.grid_shape[1])

    def row_owner(self, i: np.ndarray | int) -> np.ndarray | int:
        """Process row owning global row(s) ``i``."""
        return owner_of(i, self.block[0], self.grid_shape[0])

    def col_owner(self, j: np.ndarray | int) -> np.ndarray | int:
        """Process column owning global column(s) ``j``."""
        return owner_of(j, self.block[1], self.grid_shape[1])

    @property
    def nprocs(self) -> int:
        return self.grid_shape[0] * self.grid_shape[1]

    def transposed(self) -> Layout:
        """The layout of the transpose kept on the same grid (shape and block swapped)."""
        return Layout(self.shape[::-1], self.block[::-1], self.grid_shape)


def split_by_owner(keys: np.ndarray, nparts: int) -> tuple[np.ndarray | None, np.ndarray]:
    """Group positions by owner, keeping their order within each owner.

    Parameters
    ----------
    keys : ndarray of int
        Owner (``0 <= key < nparts``) of each position.
    nparts : int
        Number of owners.

    Returns
    -------
    perm : ndarray
        Positions sorted by owner (stable), or None when already sorted.
    offsets : ndarray
        ``nparts + 1`` offsets: owner ``k``'s positions are ``perm[offsets[k]:offsets[k+1]]``.
    """
    keys = np.asarray(keys, dtype=np.int64)
    counts = np.bincount(keys, minlength=nparts)
    offsets = np.zeros(nparts + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    if keys.size < 2 or bool(np.all(keys[1:] >= keys[:-1])):
        return None, offsets
    return np.argsort(keys, kind="stable"), offsets
