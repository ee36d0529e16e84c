"""Reverse adjacency of an expander graph, for gathers over input channels.

index[v, i] = u says output v reads input u through its i-th weight.  The reverse
adjacency lists, for each input u, the flat edge ids e = v * D + i that read it:
edge[ptr[u]:ptr[u + 1]], ascending in e.  grad_input is a gather over these lists,
so it needs no atomics and sums every input channel's terms in one fixed order
(bitwise the same at any thread count).
"""
from collections import OrderedDict
from typing import NamedTuple
import threading

import numpy as np


class ReverseAdjacency(NamedTuple):
    ptr: np.ndarray   # (Cin + 1,) int64, CSR row pointers
    edge: np.ndarray  # (Cout * D,) int64, flat edge ids v * D + i grouped by input channel


def reverse_adjacency(index, n_in):
    """The ReverseAdjacency of a validated int64 (Cout, D) index over n_in inputs."""
    flat = index.ravel()
    edge = np.argsort(flat, kind="stable").astype(np.int64)
    counts = np.bincount(flat, minlength=n_in)
    ptr = np.zeros(n_in + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return ReverseAdjacency(ptr, edge)


_CACHE_SIZE = 64
_cache = OrderedDict()
_lock = threading.Lock()


def cached_reverse_adjacency(index, n_in):
    """reverse_adjacency, memoised on the index's contents (graphs are fixed while a net trains)."""
    key = (index.shape, n_in, index.tobytes())
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    rev = reverse_adjacency(index, n_in)
    with _lock:
        _cache[key] = rev
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return rev
