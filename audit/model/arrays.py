"""arrays.py: numpy helpers the column passes share (imported only by modules that already import numpy)."""

from __future__ import annotations

import numpy as np


def member(a: np.ndarray, b) -> np.ndarray:
    """np.isin(a, b) by a sort and a binary search: np.isin's np.unique imports numpy.ma (~10 ms of a run)."""
    b = np.sort(np.asarray(b, dtype=a.dtype))
    if not len(b):
        return np.zeros(len(a), dtype=bool)
    return b[np.minimum(np.searchsorted(b, a), len(b) - 1)] == a
