"""Matrix decompositions for data analysis (``dm.decomposition``, layer 3).

>>> res = dm.decomposition.nmf(A, 10, method="hals")   # A ~ W H, W, H >= 0
>>> res.W, res.H, res.history[-1]

Every function is collective over the grid of its arguments.
"""

from .nmf import NMFResult, nmf

__all__ = ["nmf", "NMFResult"]
