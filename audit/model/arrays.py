"""arrays.py: numpy helpers the column passes share (imported only by modules that already import numpy)."""

from __future__ import annotations

import numpy as np


def member(a: np.ndarray, b) -> np.ndarray:
    """np.isin(a, b) by a sort and a binary search: np.isin's np.unique imports numpy.ma (~10 ms of a run)."""
    b = np.sort(np.asarray(b, dtype=a.dtype))
    if not len(b):
        return np.zeros(len(a), dtype=bool)
    return b[np.minimum(np.searchsorted(b, a), len(b) - 1)] == a


def name_heads(words: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Each name's first 8 bytes as a little-endian u64 (words: the 8 bytes at each name's start, read on past its
    end), the bytes past its length zeroed: what a prefix or a whole short name is compared with."""
    width = np.minimum(lens, 8).astype(np.uint64) * np.uint64(8)
    return words & np.where(width < 64, (np.uint64(1) << (width % np.uint64(64))) - np.uint64(1), ~np.uint64(0))


def dotted(joined: bytes, starts: np.ndarray) -> np.ndarray:
    """Whether each name holds a '.': joined is the names NUL-separated, each starting at starts."""
    out = np.zeros(len(starts), dtype=bool)
    out[np.searchsorted(starts, np.flatnonzero(np.frombuffer(joined, dtype=np.uint8) == 0x2E), "right") - 1] = True
    return out
