"""Non-negative matrix factorization ``A ~ W H`` (``dm.decomposition.nmf``, layer 3).

Distribution
------------
``A`` (``m x n``, dense or block-sparse) never moves.  The factors live where the products
need them, in Elemental's notation:

- ``W[MC,*]``: each rank keeps the rows of ``W`` that its process row owns in ``A`` (all
  ``k`` columns), replicated along the grid row;
- ``H^T[MR,*]``: each rank keeps the columns of ``H`` that its process column owns in ``A``
  (stored transposed, ``nloc x k``), replicated down the grid column.

Every quantity an update needs is then one local kernel and one all-reduce:

- ``A H^T`` and ``H H^T``: ``A_loc @ Ht_loc`` and ``Ht_loc^T Ht_loc``, summed along the grid
  row in one all-reduce of ``(mloc + k) x k`` numbers;
- ``A^T W`` and ``W^T W``: ``A_loc^T @ W_loc`` and ``W_loc^T W_loc``, summed down the grid
  column in one all-reduce of ``(nloc + k) x k`` numbers.

So an iteration moves ``O((m / pr + n / pc) k)`` words and no entry of ``A``; the small
``k x k`` Gram matrices are replicated on every rank, and the factor updates are
elementwise (or ``k`` column sweeps) on the local rows, done redundantly by the ranks that
share them.  A block-sparse ``A`` uses its local block-CSR directly (the SpMM kernel of
:func:`distmat.sparse.spmm.local_product`, and a local transpose of the block structure
built once for ``A^T W``; see :mod:`distmat.linalg._local_operator`), so dense and sparse
inputs run the same iteration.

Error
-----
``||A - W H||_F^2 = ||A||_F^2 - 2 trace(W^T A H^T) + trace((W^T W)(H H^T))``, computed from
``sum(W_loc * (A H^T)_loc)`` and ``sum((W_loc^T W_loc) * (H H^T))`` (ranks of process column
0 contribute) in one non-blocking all-reduce over the whole grid that overlaps the next local
product; every rank therefore sees bitwise the same error and takes the same stopping
decision.  The formula cancels: it gives ``||A - W H||_F^2 / ||A||_F^2`` to a few units of
the working precision's eps (so a float32 relative error near 1e-3 carries noise of about
1e-5), and it is clipped at 0 near an exact factorization.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from mpi4py import MPI

from .. import comm as _c
from .. import rng
from ..errors import GridMismatchError, ShapeMismatchError
from ..grid import ProcessGrid
from ..layout import Layout
from ..linalg._local_operator import LocalOperator
from ..matrix import DistMatrix, default_block
from ..sparse.bsr import BlockSparseMatrix

__all__ = ["nmf", "NMFResult", "METHODS"]

METHODS = ("mu", "hals")


@dataclass
class NMFResult:
    """What :func:`nmf` returns.

    Attributes
    ----------
    W : DistMatrix
        ``m x k``, non-negative, on ``A``'s grid with row block ``A``'s row block.
    H : DistMatrix
        ``k x n``, non-negative, on ``A``'s grid with column block ``A``'s column block.
    history : ndarray
        ``history[t] = ||A - W_t H_t||_F / ||A||_F`` (float64) for the initial factors
        (``t = 0``) and after each of the ``n_iter`` iterations; the same on every rank.
        For ``A = 0`` the absolute error ``||W_t H_t||_F`` is recorded instead.
    n_iter : int
        Number of iterations done (``len(history) - 1``).
    converged : bool
        True if the iteration stopped because the relative change of the error fell below
        ``tol`` or the error reached 0 (as for ``A = 0``); False if it stopped at
        ``max_iter``.

    ``W, H, history = nmf(A, k)`` unpacks the three results the way a tuple would.
    """

    W: DistMatrix
    H: DistMatrix
    history: np.ndarray
    n_iter: int
    converged: bool

    def __iter__(self) -> Iterator[Any]:
        return iter((self.W, self.H, self.history))


# --------------------------------------------------------------------------- argument checks


def _check_int(v: Any, name: str, lo: int, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo \
            or (hi is not None and v > hi):
        rng_txt = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ValueError(f"{name} must be an integer {rng_txt}, got {v!r}")
    return int(v)


def _check_args(A: Any, k: Any, method: Any, max_iter: Any, tol: Any, seed: Any
                ) -> tuple[int, int, np.dtype]:
    if not isinstance(A, (DistMatrix, BlockSparseMatrix)):
        raise TypeError(f"A must be a distmat.DistMatrix or distmat.sparse.BlockSparseMatrix, "
                        f"got {type(A).__name__}")
    if A.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"A must be real (float32 or float64) for a non-negative "
                        f"factorization, got dtype {A.dtype}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    m, n = A.shape
    if min(m, n) < 1:
        raise ValueError(f"A must have at least one row and one column, got shape {A.shape}")
    k = _check_int(k, "k", 1, min(m, n))
    _check_int(max_iter, "max_iter", 0)
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating, np.integer)) \
            or not tol >= 0 or not np.isfinite(tol):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    _check_int(seed, "seed", 0)
    return m, n, A.dtype


def _check_factor(X: Any, name: str, shape: tuple[int, int], grid: ProcessGrid) -> None:
    if X is None:
        return
    if not isinstance(X, DistMatrix):
        raise TypeError(f"{name} must be a DistMatrix or None, got {type(X).__name__}")
    if X.shape != shape:
        raise ShapeMismatchError(f"{name} must have shape {shape}, got {X.shape}")
    if not X.grid.compatible(grid):
        raise GridMismatchError(f"{name} lives on a different process grid ({X.grid.shape}) "
                                f"than A ({grid.shape})")
    if X.dtype.kind not in "f":
        raise TypeError(f"{name} must be real (float32 or float64), got dtype {X.dtype}")


def _min_and_bad(x: np.ndarray) -> tuple[float, float]:
    """(-(smallest entry), 1 if any entry is NaN/Inf) of a local array, for a MAX reduce."""
    if x.size == 0:
        return -np.inf, 0.0
    bad = 0.0 if bool(np.isfinite(x).all()) else 1.0
    return -float(np.nanmin(x)) if bad == 0.0 else 0.0, bad


# --------------------------------------------------------------------------- local kernels


def _update(method: str, X: np.ndarray, AY: np.ndarray, G: np.ndarray, eps: float
            ) -> np.ndarray:
    """One update of the factor rows ``X`` (``r x k``) given ``A Y`` and the Gram ``Y^T Y``.

    ``"mu"``: Lee and Seung's multiplicative rule ``X * AY / (X G + eps)``.  ``"hals"``:
    hierarchical ALS, column ``j`` at a time (later columns see the earlier ones updated),
    ``X[:, j] = max(0, X[:, j] + (AY[:, j] - X G[:, j]) / G[j, j])``; a column with
    ``G[j, j] == 0`` (its partner in the other factor is zero) is left as it is.
    """
    if method == "mu":
        den = X @ G
        den += eps
        return X * AY / den
    X = X.copy()
    for j in range(X.shape[1]):
        g = G[j, j]
        if g > 0:
            col = X[:, j] + (AY[:, j] - X @ G[:, j]) / g
            np.maximum(col, 0, out=col)
            X[:, j] = col
    return X


# --------------------------------------------------------------------------- initial factors


def _rows_mc_star(X: DistMatrix, rows_block: int, grid: ProcessGrid, dtype: np.dtype,
                  transpose: bool) -> np.ndarray:
    """A user factor as ``W[MC,*]`` (or, with ``transpose``, ``H^T[MR,*]``): one all-reduce.

    ``W`` (``m x k``) is brought to row block ``rows_block`` (A's), so each rank holds some
    columns of its process row's rows; the ranks of a grid row then sum their zero-padded
    pieces.  ``H`` (``k x n``) likewise with column block and grid columns.
    """
    if transpose:
        if X.block[1] != rows_block:
            X = X.redistribute(block=(X.block[0], rows_block))
        full = np.zeros((X.local.shape[1], X.shape[0]), dtype=dtype)
        full[:, X.global_rows] = X.local.T
        _c.allreduce(grid.col_comm, full)
    else:
        if X.block[0] != rows_block:
            X = X.redistribute(block=(rows_block, X.block[1]))
        full = np.zeros((X.local.shape[0], X.shape[1]), dtype=dtype)
        full[:, X.global_cols] = X.local
        _c.allreduce(grid.row_comm, full)
    return full


# --------------------------------------------------------------------------- the driver


def nmf(A: DistMatrix | BlockSparseMatrix, k: int, *, method: str = "mu", max_iter: int = 200,
        tol: float = 1e-4, seed: int = 0, W0: DistMatrix | None = None,
        H0: DistMatrix | None = None) -> NMFResult:
    """Non-negative matrix factorization ``A ~ W H``. Collective over ``A``'s grid.

    Minimises ``||A - W H||_F`` over non-negative ``W`` (``m x k``) and ``H`` (``k x n``).
    The distribution and costs are described in :mod:`distmat.decomposition.nmf`: ``A`` is
    never moved, each iteration does two local products with ``A`` and two all-reduces of
    ``O((m / pr + n / pc) k)`` numbers.

    Parameters
    ----------
    A : DistMatrix or BlockSparseMatrix
        ``m x n`` non-negative, finite, float32 or float64 **(global)**.  The factors get its
        dtype.
    k : int
        Rank of the factorization, ``1 <= k <= min(m, n)`` **(global)**.
    method : {"mu", "hals"}
        ``"mu"``: Lee and Seung's multiplicative updates (``H <- H * (W^T A) / (W^T W H +
        eps)``, then the same for ``W``; ``eps`` is the dtype's machine epsilon), whose error
        never increases.  ``"hals"``: hierarchical alternating least squares (Cichocki's
        column-by-column exact updates, clipped at 0), usually much faster to converge
        **(global)**.  Both update ``W`` first, then ``H``.
    max_iter : int
        Most iterations (each updates ``W`` then ``H``) **(global)**; 0 returns the initial
        factors with their error.
    tol : float
        Stop when ``|e_{t-1} - e_t| < tol * e_{t-1}`` for the relative errors ``e``
        **(global)**; 0 runs ``max_iter`` iterations (unless the error reaches 0).
    seed : int
        Seed of the initial factors when ``W0`` / ``H0`` are not given **(global)**:
        ``W0 = s * dm.random((m, k), seed=seed)`` and ``H0 = s * dm.random((k, n),
        seed=seed + 1)`` (uniform on ``[0, 1)``, in A's dtype), ``s = 2 sqrt(mean(A) / k)`` so
        that ``W0 H0`` has ``A``'s mean.  They do not depend on the grid, so neither does the
        result (up to rounding).
    W0, H0 : DistMatrix, optional
        Initial factors (non-negative, finite, on ``A``'s grid, any block) **(global)**; each
        one not given is drawn as above.

    Returns
    -------
    NMFResult
        ``W``, ``H`` (DistMatrix), ``history`` (relative errors ``||A - W H||_F / ||A||_F``
        of the initial factors and after each iteration, float64, on every rank), ``n_iter``
        and ``converged``.

    Raises
    ------
    TypeError
        If ``A`` is not a DistMatrix / BlockSparseMatrix of float32 or float64 (or a factor
        has the wrong type).
    ValueError
        If ``k``, ``method``, ``max_iter``, ``tol`` or ``seed`` are out of range, or ``A``
        (or ``W0`` / ``H0``) has a negative or non-finite entry (agreed: raised on every
        rank, naming the argument).
    ShapeMismatchError, GridMismatchError
        If ``W0`` / ``H0`` have the wrong shape or grid.

    Examples
    --------
    >>> res = dm.decomposition.nmf(A, 10, method="hals", max_iter=100)
    >>> res.history[-1], res.n_iter
    >>> Wg = res.W.gather(root=0)
    """
    m, n, dtype = _check_args(A, k, method, max_iter, tol, seed)
    k = int(k)
    grid = A.grid
    _check_factor(W0, "W0", (m, k), grid)
    _check_factor(H0, "H0", (k, n), grid)
    loc = LocalOperator(A)
    mloc, nloc = loc.mloc, loc.nloc
    eps = float(np.finfo(dtype).eps)
    comm = grid.comm

    with _c.operation("nmf"):
        # validation of the values (one MAX all-reduce) and ||A||, mean(A) (one SUM)
        named = [("A", loc.values)] + [(nm, X.local) for nm, X in (("W0", W0), ("H0", H0))
                                       if X is not None]
        flags = np.array([v for _, x in named for v in _min_and_bad(x)], dtype=np.float64)
        _c.allreduce(comm, flags, MPI.MAX)
        for i, (nm, _) in enumerate(named):
            if flags[2 * i + 1] > 0:
                raise ValueError(f"{nm} must contain only finite values (it holds NaN or Inf)")
            if flags[2 * i] > 0:
                raise ValueError(f"{nm} must be non-negative; its smallest entry is "
                                 f"{-flags[2 * i]:.6g}")
        vals = loc.values
        sums = np.array([np.sum(vals, dtype=np.float64),
                         np.sum(np.square(vals, dtype=np.float64))])
        _c.allreduce(comm, sums)
        _c.bcast(comm, sums, 0)   # bitwise the same everywhere (scale of the initial factors)
        normA2 = float(sums[1])
        normA = float(np.sqrt(normA2))
        scale = 2.0 * np.sqrt(max(float(sums[0]), 0.0) / (m * n) / k)

        mb, nb = loc.block
        kidx = np.arange(k)
        if W0 is None:
            W = (dtype.type(scale) * rng.uniform01(loc.rows, kidx, k, seed).astype(dtype))
        else:
            W = _rows_mc_star(W0, mb, grid, dtype, transpose=False)
        if H0 is None:
            Ht = (dtype.type(scale)
                  * rng.uniform01(kidx, loc.cols, n, seed + 1).astype(dtype)).T.copy()
        else:
            Ht = _rows_mc_star(H0, nb, grid, dtype, transpose=True)

        rowbuf = np.empty((mloc + k, k), dtype=dtype)  # [A H^T ; H H^T], summed along rows
        colbuf = np.empty((nloc + k, k), dtype=dtype)  # [A^T W ; W^T W], summed down columns
        pq = np.empty(2, dtype=np.float64)
        contribute = grid.mycol == 0
        history: list[float] = []
        converged = False
        t = 0
        while True:
            loc.times(Ht, rowbuf[:mloc])
            np.matmul(Ht.T, Ht, out=rowbuf[mloc:])
            _c.allreduce(grid.row_comm, rowbuf)
            AHt, GH = rowbuf[:mloc], rowbuf[mloc:]
            # error of (W_t, H_t): overlap its tiny all-reduce with the next local product
            if contribute:
                pq[0] = np.sum(W * AHt, dtype=np.float64)
                pq[1] = np.sum((W.T @ W) * GH, dtype=np.float64)
            else:
                pq[:] = 0.0
            req = _c.iallreduce(comm, pq)
            Wn = _update(method, W, AHt, GH, eps)
            loc.h_times(Wn, colbuf[:nloc])
            np.matmul(Wn.T, Wn, out=colbuf[nloc:])
            req.wait()
            # the stopping test below must come out the same on every rank, and MPI does not
            # promise bitwise-equal all-reduce results everywhere: every rank takes rank 0's
            _c.bcast(comm, pq, 0)
            err = float(np.sqrt(max(normA2 - 2.0 * pq[0] + pq[1], 0.0)))
            history.append(err / normA if normA > 0 else err)
            if history[-1] == 0.0 or (t > 0 and abs(history[-2] - history[-1])
                                      < tol * history[-2]):
                converged = True
                break
            if t == max_iter:
                break
            W = Wn
            _c.allreduce(grid.col_comm, colbuf)
            Ht = _update(method, Ht, colbuf[:nloc], colbuf[nloc:], eps)
            t += 1

    Wb = (mb, default_block((m, k), grid.shape)[1])
    Hb = (default_block((k, n), grid.shape)[0], nb)
    Wl = np.ascontiguousarray(W[:, Layout((m, k), Wb, grid.shape).cols(grid.mycol)])
    Hl = np.ascontiguousarray(Ht[:, Layout((k, n), Hb, grid.shape).rows(grid.myrow)].T)
    return NMFResult(W=DistMatrix._wrap(Wl, (m, k), Wb, grid),
                     H=DistMatrix._wrap(Hl, (k, n), Hb, grid),
                     history=np.asarray(history, dtype=np.float64), n_iter=t,
                     converged=converged)
