"""Sparse x sparse products (placeholder; filled in below)."""

from __future__ import annotations

__all__ = ["matmul"]


def matmul(A, B, *, filter_eps=None, retain_sparsity=False):  # noqa: D103
    raise NotImplementedError
