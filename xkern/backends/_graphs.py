"""One private, read-only copy of each expander graph seen recently, and what kernels derive from it.

A net's graphs do not change while it trains or infers, yet every call hands its index
over again (often as a fresh array over the same memory).  xkern.ops looks each index up
here once per call (lookup) and passes the cached copy on to the kernels, so that every
table a backend derives from a graph (term lists, reverse adjacency, the block-run flag)
is found by identity beside that copy (table) instead of by comparing contents again in
each cache.  The least recently used graphs go past CACHE_SIZE graphs or CACHE_BYTES of
copies and tables (the graph in use always stays).

Entries are keyed by (shape, Cin, the graph's bytes) for small graphs and by evenly
spaced entries for large ones, confirmed against the whole copy (np.array_equal):
hashing all of a large index costs more than comparing it with the one candidate.
"""
import threading
from collections import OrderedDict

import numpy as np

CACHE_SIZE = 256         # graphs kept (a net has one or two per X layer)
CACHE_BYTES = 256 << 20  # their copies and tables (a 512 x 256 graph's term lists: about 4 MiB a kind)
SMALL = 512              # graphs with at most this many edges are keyed on all their bytes
SAMPLES = 64             # entries a large graph is keyed on


class Graph:
    """A cached graph: index (Cout, D) int64, C-contiguous, read-only; entries in [0, n_in)."""
    __slots__ = ("index", "n_in", "tables", "nbytes")

    def __init__(self, index, n_in):
        self.index = index
        self.n_in = n_in
        self.tables = {}
        self.nbytes = index.nbytes


_cache = OrderedDict()    # key -> Graph, least recently used first
_by_id = {}               # id(Graph.index) -> Graph, for table()
_bytes = 0                # the cached graphs' nbytes
_lock = threading.Lock()


def _key(idx, n_in):
    flat = idx.reshape(-1)
    if flat.size <= SMALL:
        return (idx.shape, n_in, True, flat.astype(np.int64, copy=False).tobytes())
    return (idx.shape, n_in, False, flat[::flat.size // SAMPLES].astype(np.int64, copy=False).tobytes())


def lookup(idx, n_in):
    """The cached copy of the integer (Cout, D) array idx over n_in inputs, or None when no
    equal graph is cached (then validate it and call insert)."""
    key = _key(idx, n_in)
    with _lock:
        graph = _cache.get(key)
        if graph is not None:
            _cache.move_to_end(key)
    if graph is None or not (key[2] or _equal(graph.index, idx)):
        return None
    return graph.index


def _equal(cached, idx):
    """cached (int64, C order) == idx, entry by entry: two copies and a memcmp when idx has
    cached's layout (half the time of np.array_equal's elementwise compare and reduction)."""
    if idx.dtype == cached.dtype and idx.flags.c_contiguous:
        return cached.tobytes() == idx.tobytes()
    return np.array_equal(cached, idx)


def _evict(keep):
    """Drop least recently used graphs, never `keep`, while over the budgets; holds _lock."""
    global _bytes
    for key in list(_cache):
        if len(_cache) <= CACHE_SIZE and _bytes <= CACHE_BYTES:
            break
        graph = _cache[key]
        if graph is not keep:
            del _cache[key]
            _by_id.pop(id(graph.index), None)
            _bytes -= graph.nbytes


def insert(idx, n_in):
    """Cache a copy of idx, whose entries the caller checked to lie in [0, n_in); returns the copy."""
    global _bytes
    copy = np.array(idx, dtype=np.int64, order="C")
    copy.flags.writeable = False
    graph = Graph(copy, n_in)
    key = _key(copy, n_in)
    with _lock:
        old = _cache.pop(key, None)
        if old is not None:
            _by_id.pop(id(old.index), None)
            _bytes -= old.nbytes
        _cache[key] = graph
        _by_id[id(copy)] = graph
        _bytes += graph.nbytes
        _evict(graph)
    return copy


def _nbytes(value):
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, tuple):
        return sum(_nbytes(v) for v in value)
    return 0


def _graph_of(index):
    """The Graph whose cached copy is index (what lookup or insert returned), else None."""
    graph = _by_id.get(id(index))
    return graph if graph is not None and graph.index is index else None


def checked(index, n_in):
    """True when index is a cached copy of a graph over at most n_in inputs: its entries were
    checked to lie in [0, n_in) before it was cached."""
    graph = _graph_of(index)
    return graph is not None and graph.n_in <= n_in


def table(index, key, make):
    """make()'s result for the graph `index`, made once and kept beside it under `key`, when
    index is a cached copy (what lookup or insert returned); else None, since a caller's
    own array may change between calls.  make() must not return views of index."""
    global _bytes
    graph = _graph_of(index)
    if graph is None:
        return None
    hit = graph.tables.get(key)
    if hit is None:
        hit = make()
        nbytes = _nbytes(hit)
        with _lock:
            if key not in graph.tables:
                graph.tables[key] = hit
                graph.nbytes += nbytes
                if _by_id.get(id(index)) is graph:  # still cached: count it
                    _bytes += nbytes
                    _evict(graph)
    return hit


def clear():
    """Forget every cached graph and what was derived from it."""
    global _bytes
    with _lock:
        _cache.clear()
        _by_id.clear()
        _bytes = 0
