"""BLAS threads per rank, and which BLAS runs.

Several MPI ranks on one host each running a multi-threaded BLAS oversubscribe the cores and
run far slower than one thread per rank.  distmat therefore limits the BLAS thread pools (via
threadpoolctl) the first time a compute kernel such as :func:`distmat.matmul` runs:

- ``DISTMAT_BLAS_THREADS=<n>`` in the environment: ``n`` threads per rank;
- ``DISTMAT_BLAS_THREADS=auto`` (the default, variable unset): ``max(1, cores // ranks on
  this host)``, so one thread per rank when the ranks fill the cores;
- ``DISTMAT_BLAS_THREADS=off``: distmat leaves the BLAS thread pools alone (use
  ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` or threadpoolctl yourself).

In a program, :func:`set_blas_threads` sets the count explicitly (and turns the automatic
choice off); :func:`blas_info` says which BLAS library, version and kernel run, and with how
many threads.

Ranks on this host are read from the launcher's environment (``MPI_LOCALNRANKS`` from MPICH's
Hydra, ``OMPI_COMM_WORLD_LOCAL_SIZE`` from Open MPI, ``SLURM_NTASKS_PER_NODE``) or, failing
that, counted over the communicator of the first kernel call (``MPI_COMM_TYPE_SHARED``).
"""

from __future__ import annotations

import os
from typing import Any

from mpi4py import MPI
from threadpoolctl import threadpool_info, threadpool_limits

__all__ = ["set_blas_threads", "ensure_blas_threads", "blas_info", "blas_threads",
           "local_ranks", "cores", "ENV_VAR"]

#: Environment variable read by :func:`ensure_blas_threads`.
ENV_VAR = "DISTMAT_BLAS_THREADS"

_state: dict[str, Any] = {"done": False, "threads": None, "limiter": None}


def cores() -> int:
    """Cores this process may run on (its CPU affinity mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def local_ranks(comm: MPI.Comm | None = None) -> int:
    """Number of MPI ranks on this host.

    From the launcher's environment when it says; otherwise the ranks of ``comm`` sharing
    this host (collective over ``comm``); 1 without either.
    """
    for var in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"):
        val = os.environ.get(var, "").split("(")[0].split(",")[0]
        if val.isdigit() and int(val) > 0:
            return int(val)
    if comm is None:
        return 1
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.Get_size()
    finally:
        node.Free()


def set_blas_threads(n: int | None) -> None:
    """Limit every BLAS thread pool of this process to ``n`` threads (None: leave alone).

    Local (no communication).  Overrides ``DISTMAT_BLAS_THREADS`` and the automatic choice.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be a positive integer or None, got {n!r}")
    if n is not None:
        _state["limiter"] = threadpool_limits(limits=n, user_api="blas")
    _state["done"] = True
    _state["threads"] = n


def ensure_blas_threads(comm: MPI.Comm | None = None) -> int | None:
    """Apply the thread policy once per process (see the module docstring).

    Called by distmat's compute kernels on every rank of ``comm``; collective over ``comm``
    only the first time and only when the launcher does not say how many ranks share the host.
    Returns the thread count set, or None when distmat leaves BLAS alone.
    """
    if _state["done"]:
        return _state["threads"]
    raw = os.environ.get(ENV_VAR, "auto").strip().lower()
    if raw in ("off", "none", "0", ""):
        set_blas_threads(None)
    elif raw == "auto":
        set_blas_threads(max(1, cores() // max(1, local_ranks(comm))))
    else:
        try:
            n = int(raw)
        except ValueError:
            raise ValueError(f"{ENV_VAR} must be a positive integer, 'auto' or 'off', "
                             f"got {raw!r}") from None
        set_blas_threads(n if n > 0 else None)
    return _state["threads"]


def blas_threads() -> int | None:
    """The thread count distmat set (None if it has not, or leaves BLAS alone)."""
    return _state["threads"]


def blas_info() -> list[dict[str, Any]]:
    """The BLAS libraries loaded in this process: library, version, kernel, threads.

    One dict per library (numpy and scipy may each bring their own OpenBLAS), with keys
    ``library`` (file name), ``api`` (``openblas``, ``mkl``...), ``version``,
    ``kernel`` (the CPU kernel the library chose, e.g. ``SkylakeX``) and ``threads``.
    """
    import numpy  # noqa: F401 - make sure both BLAS copies are loaded
    import scipy.linalg.blas  # noqa: F401

    out = []
    for info in threadpool_info():
        if info.get("user_api") != "blas":
            continue
        out.append({"library": os.path.basename(info.get("filepath", "")),
                    "api": info.get("internal_api"), "version": info.get("version"),
                    "kernel": info.get("architecture"), "threads": info.get("num_threads")})
    return out
