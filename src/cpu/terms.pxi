# ---------------------------------------------------------------- argument checks
#
# xkern.ops validates every argument before it calls a kernel; these checks are the last
# line for direct callers of the backend: what the kernels index with must fit together,
# so that a mistake is a ValueError naming the argument, never an out-of-bounds access.
# Shapes are checked on every call (a few C comparisons); index entries and the reverse
# adjacency once per graph (through the term cache, or each call for small graphs).

cdef int _check_conv(const Py_ssize_t *image, const Py_ssize_t *kernel, const Py_ssize_t *index,
                     const Py_ssize_t *result, stride, padding, dilation, tuple names) except -1:
    """ValueError naming the argument unless image (B, Cin, H, W), kernel (Cout, D, kh, kw),
    index (Cout, D) and result (B, Cout, Ho, Wo) fit the geometry; names: the arguments
    that hold image, kernel and result in this kernel's signature.  C comparisons on every
    call; a failure is raised, with its message, by the backends' shared check_conv."""
    cdef Py_ssize_t sh, sw, ph, pw, dh, dw, ho, wo
    try:
        sh, sw = stride
        ph, pw = padding
        dh, dw = dilation
    except (TypeError, ValueError, OverflowError):
        _checks.check_geometry(stride, padding, dilation)  # raises, naming the argument
        raise
    ho = (image[2] + 2 * ph - dh * (kernel[2] - 1) - 1) // sh + 1 if sh >= 1 else 0
    wo = (image[3] + 2 * pw - dw * (kernel[3] - 1) - 1) // sw + 1 if sw >= 1 else 0
    if (sh < 1 or sw < 1 or ph < 0 or pw < 0 or dh < 1 or dw < 1
            or kernel[0] < 1 or kernel[1] < 1 or kernel[2] < 1 or kernel[3] < 1
            or index[0] != kernel[0] or index[1] != kernel[1] or ho < 1 or wo < 1
            or result[0] != image[0] or result[1] != kernel[0] or result[2] != ho or result[3] != wo):
        _checks.check_conv(tuple(image[k] for k in range(4)), tuple(kernel[k] for k in range(4)),
                           (index[0], index[1]), tuple(result[k] for k in range(4)),
                           stride, padding, dilation, names)  # raises
        raise AssertionError("_check_conv and _checks.check_conv disagree")
    return 0


def _check_index(const int64_t[::1] flat, int64_t n_in):
    """ValueError unless every entry of the (flattened) index is in [0, n_in)."""
    cdef int64_t j, bad = -1
    with nogil:
        for j in range(flat.shape[0]):
            if flat[j] < 0 or flat[j] >= n_in:
                bad = j
                break
    if bad >= 0:
        raise ValueError(f"index entries must lie in [0, {n_in}) (the input channels); entry {bad} is {flat[bad]}")


def _check_reverse(const int64_t[::1] flat, const int64_t[::1] ptr, const int64_t[::1] edge, int64_t n_in):
    """ValueError unless (ptr, edge) is the reverse adjacency of the flattened index: ptr
    (n_in + 1,) from 0 to len(flat), edge a permutation of the edge ids that lists under
    u the edges whose index entry is u."""
    cdef int64_t u, k, e, n = flat.shape[0], bad = 0
    if ptr.shape[0] != n_in + 1 or edge.shape[0] != n:
        raise ValueError(f"rev must hold ptr of length {n_in + 1} and edge of length {n} (the edges of index); "
                         f"got {ptr.shape[0]} and {edge.shape[0]}")
    seen = np.zeros(n, np.uint8)
    cdef unsigned char[::1] hit = seen
    with nogil:
        if ptr[0] != 0 or ptr[n_in] != n:
            bad = 1
        for u in range(n_in):
            if bad:
                break
            if ptr[u + 1] < ptr[u] or ptr[u + 1] > n:
                bad = 1
                break
            for k in range(ptr[u], ptr[u + 1]):
                e = edge[k]
                if e < 0 or e >= n or hit[e] or flat[e] != u:
                    bad = 1
                    break
                hit[e] = 1
    if bad:
        raise ValueError("rev is not the reverse adjacency of index (xkern.ops.adjacency.reverse_adjacency)")


# Term lists of the graphs seen last, memoised on the index's contents: building them
# costs more than a small layer's kernel, and a net's graphs do not change while it trains.
# At most this many entries (two per X layer: forward and grad_input) and bytes (an entry
# of a graph of n edges holds about 32 n bytes: 4 MiB for 512 x 256).
TERMS_CACHE_SIZE = 512
TERMS_CACHE_BYTES = 256 << 20
# Graphs with at most this many edges are rebuilt each call: cheaper than the look-up (~4 us).
TERMS_CACHE_MIN = 1024
_terms_cache = OrderedDict()
_terms_bytes = 0
_terms_lock = threading.Lock()


def _entry_bytes(entry):
    return entry[0].nbytes + sum(a.nbytes for a in entry[1] if isinstance(a, np.ndarray))


def clear_term_cache():
    """Forget the memoised term lists (the next call of each graph builds them again)."""
    global _terms_bytes
    with _terms_lock:
        _terms_cache.clear()
        _terms_bytes = 0


def _frozen_arrays(made):
    """The tuple made with its arrays copied and read-only: they are shared between calls, and
    a list may be a view of the caller's index, which may change after this call."""
    made = tuple(np.array(a) if isinstance(a, np.ndarray) else a for a in made)
    for a in made:
        if isinstance(a, np.ndarray):
            a.flags.writeable = False
    return made


def _cached_terms(kind, index, extra, make):
    """make() for the (Cout, D) graph `index` (and the hashable `extra` it depends on), from the cache
    when an equal index was seen: the key holds evenly spaced entries of the index, and a
    hit is confirmed against a private copy of the whole index.  The arrays made are
    copied and made read-only: they are shared between calls."""
    # xkern.ops' cached copy of the graph: its tables are found by identity
    hit = _graphs.table(index if isinstance(index, np.ndarray) else index.base, (kind, extra),
                        lambda: _frozen_arrays(make()))
    if hit is not None:
        return hit
    if index.shape[0] * index.shape[1] <= TERMS_CACHE_MIN:
        return make()
    flat = np.asarray(index).ravel()
    key = (kind, np.shape(index), extra, flat[::max(1, flat.size // 64)].tobytes())
    with _terms_lock:
        hit = _terms_cache.get(key)
        if hit is not None:
            _terms_cache.move_to_end(key)
    if hit is not None and np.array_equal(hit[0], flat):
        return hit[1]
    made = _frozen_arrays(make())
    entry = (flat.copy(), made)
    global _terms_bytes
    with _terms_lock:
        old = _terms_cache.pop(key, None)
        if old is not None:
            _terms_bytes -= _entry_bytes(old)
        _terms_cache[key] = entry
        _terms_bytes += _entry_bytes(entry)
        while len(_terms_cache) > 1 and (len(_terms_cache) > TERMS_CACHE_SIZE or _terms_bytes > TERMS_CACHE_BYTES):
            _terms_bytes -= _entry_bytes(_terms_cache.popitem(last=False)[1])
    return made


def _forward_terms(index, int64_t n_in, int64_t window, int64_t share):
    """The forward's term lists (output v reads index[v, :]), blocked; index (an array) checked.
    Term (v, d)'s weight row is v * D + d, or with share > 1 (the shared-load path, whose
    weights _shared_weights interleaves by output) (v // share) * D + d."""
    flat = index.ravel()
    _check_index(flat, n_in)
    n_out, degree = index.shape[0], index.shape[1]
    rows = np.arange(n_out * degree, dtype=np.int64)
    if share > 1:
        rows = rows // (share * degree) * degree + rows % degree
    return _blocked_terms(np.arange(0, n_out * degree + 1, degree, dtype=np.int64), flat, rows, n_in, window)


def _run_rows(index, int64_t n_in):
    """(The first index row of each run of XK_SHARE outputs, flat,); index checked."""
    _check_index(index.ravel(), n_in)
    return (np.ascontiguousarray(index[::XK_SHARE]).reshape(-1),)


cpdef _shared_weights(weight):
    """weight (Cout, D, kh, kw), a C-contiguous float32 / float64 array (or a buffer over one),
    as (ceil(Cout / XK_SHARE), D, kh * kw, XK_SHARE), flat: the XK_SHARE outputs of a run next
    to each other for every term and tap (xk_corr_shared, xk_spread_shared, xk_quad_panel), the
    padding outputs' weights zero: this thread's scratch slot 3, valid until its next call.
    (Made on every call by xk_interleave4, which transposes blocks in registers, into kept
    scratch: a fresh array of a few hundred KiB costs a page fault per 4 KiB, and numpy's
    transpose of an axis of 4 is many times slower.)"""
    w = weight if cnp.PyArray_Check(weight) else np.asarray(weight)
    if cnp.PyArray_NDIM(w) != 4 or not cnp.PyArray_IS_C_CONTIGUOUS(w):
        raise ValueError(f"weight must be a C-contiguous (Cout, D, kh, kw) array, got shape {w.shape}")
    cdef Py_ssize_t *shape = <Py_ssize_t *>cnp.PyArray_DIMS(w)
    cdef int64_t n_out = shape[0], per = shape[1] * shape[2] * shape[3]
    cdef int64_t n = (n_out + XK_SHARE - 1) // XK_SHARE * per * XK_SHARE
    if cnp.PyArray_TYPE(w) == cnp.NPY_FLOAT:
        out = _scratch(3, n, np.float32)
        xk_interleave4_f32(<const float *>cnp.PyArray_DATA(w), n_out, per, <float *>cnp.PyArray_DATA(out))
    elif cnp.PyArray_TYPE(w) == cnp.NPY_DOUBLE:
        out = _scratch(3, n, np.float64)
        xk_interleave4_f64(<const double *>cnp.PyArray_DATA(w), n_out, per, <double *>cnp.PyArray_DATA(out))
    else:
        raise ValueError(f"weight must be float32 or float64, got {w.dtype}")
    return out


def _quad_terms(index, int64_t n_in, int64_t width):
    """(xk_quad_panel's panel offsets, flat int32,): index (Cout, D), checked, times the
    panel's channel width, its rows padded with zeros to whole quads of XK_SHARE, as
    (quads, D, XK_SHARE)."""
    flat = index.ravel()
    _check_index(flat, n_in)
    if n_in * width > np.iinfo(np.int32).max:
        raise ValueError(f"{n_in} input channels are too many for 32-bit panel offsets")
    rows = np.zeros((_round_up(index.shape[0], XK_SHARE), index.shape[1]), np.int32)
    rows[:index.shape[0]] = index * width
    return (np.ascontiguousarray(rows.reshape(-1, XK_SHARE, index.shape[1]).transpose(0, 2, 1)).reshape(-1),)


def _quad_weights(weight):
    """1x1 weight (Cout, D, 1, 1) as the forward quads' (quads, D, XK_SHARE), flat
    (_shared_weights)."""
    return _shared_weights(weight)


def _input_quads(index, rev, int64_t n_in, int64_t width):
    """grad_input's quads (xk_quads_t) over the reverse adjacency rev of index (Cout, D), both
    checked: (panel offsets int32, quad ptr, rows, edges), the last two per slot and per
    term.  Inputs go in order of in-degree, most first (stable), so that a quad's four
    lists differ little in length; shorter lists are padded to the quad's longest with
    terms that read the panel's zero row (offset Cout * width) through edge Cout * D, whose
    weight _edge_weights makes 0.  Each input's edges keep rev's order."""
    flat = index.ravel()
    _check_index(flat, n_in)
    _check_reverse(flat, rev.ptr, rev.edge, n_in)
    n_out, degree = index.shape[0], index.shape[1]
    ptr, edge = np.asarray(rev.ptr, np.int64), np.asarray(rev.edge, np.int64)
    count = np.diff(ptr)
    rows = np.argsort(-count, kind="stable")
    n_slots = _round_up(n_in, XK_SHARE)
    per_slot = np.zeros(n_slots, np.int64)
    per_slot[:n_in] = count[rows]
    qptr = np.zeros(n_slots // XK_SHARE + 1, np.int64)
    np.cumsum(per_slot.reshape(-1, XK_SHARE).max(axis=1), out=qptr[1:])
    n_terms = int(qptr[n_slots // XK_SHARE])  # (no negative index: this module is compiled without wraparound)
    off = np.full((n_terms, XK_SHARE), n_out * width, np.int32)
    edges = np.full((n_terms, XK_SHARE), n_out * degree, np.int64)
    slot = np.repeat(np.arange(n_in), per_slot[:n_in])                      # each term's slot
    within = np.arange(slot.shape[0]) - np.repeat(np.cumsum(per_slot[:n_in]) - per_slot[:n_in], per_slot[:n_in])
    e = edge[ptr[rows[slot]] + within]
    term = qptr[slot // XK_SHARE] + within
    off[term, slot % XK_SHARE] = e // degree * width
    edges[term, slot % XK_SHARE] = e
    return off.reshape(-1), qptr, rows, edges.reshape(-1)


def _edge_weights(const floating[:, :, :, ::1] weight, const int64_t[::1] edges):
    """weight (Cout, D, 1, 1) at the flat edges (Cout * D: a padding term's 0), in one nogil pass,
    in this thread's scratch slot 4 (valid until its next call)."""
    cdef int64_t n = weight.shape[0] * weight.shape[1], j, e
    out = _scratch(4, edges.shape[0], np.float32 if floating is float else np.float64)
    cdef floating[::1] o = out
    cdef const floating *flat = &weight[0, 0, 0, 0]
    with nogil:
        for j in range(edges.shape[0]):
            e = edges[j]
            o[j] = flat[e] if e < n else 0
    return out


@functools.lru_cache(maxsize=16)
def _quad_edges(int64_t n_out, int64_t degree):
    """The forward quads' term slots (quads, D, XK_SHARE), flat, as edges v * D + d of the weight;
    n_out * D (no edge: weight 0) for the slots of the last quad's padding outputs.  Read-only,
    kept for the next call of that shape."""
    v = np.arange(_round_up(n_out, XK_SHARE), dtype=np.int64).reshape(-1, 1, XK_SHARE)
    e = np.where(v < n_out, v * degree + np.arange(degree, dtype=np.int64).reshape(1, -1, 1), n_out * degree)
    e = e.reshape(-1)
    e.flags.writeable = False
    return e


def _wino_weights(const floating[:, :, :, ::1] weight, const int64_t[::1] edges, bint flip, int m,
                  int n_chunks):
    """The (m + 2)^2 Winograd-transformed weights (G w G^T, xk_wino_weights) for tiles of m x m
    outputs of the 3x3 weight's flat edges in term-slot order, ((m + 2)^2, len(edges)) flat,
    rotated by 180 degrees when flip (grad_input); a slot past the edges gets 0.  n_chunks
    threads share the slots.  This thread's scratch slot 6, valid until its next call."""
    cdef int64_t n = edges.shape[0], n_edges = weight.shape[0] * weight.shape[1], chunk
    out = _scratch(6, (m + 2) * (m + 2) * n, np.float32 if floating is float else np.float64)
    cdef floating[::1] u = out
    cdef int64_t lo, hi
    for chunk in prange(n_chunks, nogil=True, schedule="static", chunksize=1, num_threads=n_chunks):
        lo, hi = n * chunk // n_chunks, n * (chunk + 1) // n_chunks  # each slot's lane computes alike
        if floating is float:
            xk_wino_weights_f32(&u[0], &weight[0, 0, 0, 0], &edges[0], n, n_edges, flip, m, lo, hi)
        else:
            xk_wino_weights_f64(&u[0], &weight[0, 0, 0, 0], &edges[0], n, n_edges, flip, m, lo, hi)
    return out


def _input_terms(index, rev, int64_t n_in, int64_t window):
    """grad_input's term lists (input u gathers the edges rev lists under it), blocked;
    index (an array) and rev checked."""
    flat = index.ravel()
    _check_index(flat, n_in)
    _check_reverse(flat, rev.ptr, rev.edge, n_in)
    degree = index.shape[1]
    return _blocked_terms(rev.ptr, rev.edge // degree, rev.edge, index.shape[0], window)


@functools.lru_cache(maxsize=16)
def _iota(n):
    """0, 1, ..., n - 1 (int64, read-only), kept for the next call of that length."""
    a = np.arange(n, dtype=np.int64)
    a.flags.writeable = False
    return a


def _gather_rows(const floating[:, ::1] src, const int64_t[::1] rows, const int64_t[::1] cols):
    """src[rows][:, cols] as a C-contiguous array, in one pass: this thread's scratch slot 5,
    valid until its next call (a fresh array costs a page fault per 4 KiB)."""
    out = _scratch(5, rows.shape[0] * cols.shape[0], np.float32 if floating is float else np.float64)
    out = out.reshape(rows.shape[0], cols.shape[0])
    cdef floating[:, ::1] dst = out
    cdef int64_t j, t, n_cols = cols.shape[0]
    with nogil:
        for j in range(rows.shape[0]):
            for t in range(n_cols):
                dst[j, t] = src[rows[j], cols[t]]
    return out
