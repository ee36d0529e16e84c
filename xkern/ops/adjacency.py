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

from ..backends import _graphs


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
_SMALL = 512  # graphs with at most this many edges are keyed on all their bytes
_SAMPLES = 64
_cache = OrderedDict()
_lock = threading.Lock()


def _key(index, n_in):
    """Small graphs: all the bytes (hashing them is cheaper than any comparison).  Large
    ones: evenly spaced entries only, hashing all of a large index costs more than an
    exact comparison (np.array_equal) with the one cached graph the sample finds."""
    flat = index.ravel()
    if flat.size <= _SMALL:
        return (index.shape, n_in, True, flat.tobytes())
    return (index.shape, n_in, False, flat[::flat.size // _SAMPLES].tobytes())


def cached_reverse_adjacency(index, n_in):
    """reverse_adjacency, memoised on the index's contents (graphs are fixed while a net trains);
    for a graph cached by xkern.backends._graphs (as xkern.ops passes them), kept beside it."""
    rev = _graphs.table(index, "reverse adjacency", lambda: reverse_adjacency(index, n_in))
    if rev is not None:
        return rev
    key = _key(index, n_in)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
    if hit is not None:
        graph, rev = hit
        if graph is None or np.array_equal(graph, index):
            return rev
    rev = reverse_adjacency(index, n_in)
    # A sampled key keeps a private copy of the graph to compare the next index with.
    entry = (None if key[2] else index.copy(), rev)
    with _lock:
        _cache[key] = entry
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return rev
