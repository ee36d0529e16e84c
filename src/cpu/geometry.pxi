# ---------------------------------------------------------------- geometry

def _round_up(n, m):
    return -(-n // m) * m


def _tap_split(k, d, s):
    """Taps 0..k-1 of one axis (dilation d, stride s): t*d = q*s + r, as lists (r, q)."""
    return [t * d % s for t in range(k)], [t * d // s for t in range(k)]


def _odd_lines(n, itemsize):
    """n elements rounded up to an odd number of 64-byte cache lines.  Channel planes
    that far apart fall into different cache sets; at a multiple of 4 KiB every
    channel's tile would compete for the same few sets of L1."""
    per_line = 64 // itemsize
    lines = -(-n // per_line)
    return (lines + 1 - lines % 2) * per_line


def _aligned_empty(n, dtype):
    """Uninitialised (n,) array starting on a 64-byte boundary."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(n + 64 // itemsize, dtype)
    start = (-raw.ctypes.data % 64) // itemsize
    return raw[start:start + n]


# Scratch buffers are kept per thread and slot for the next call (allocating them
# afresh costs a page fault per 4 KiB page on every call), up to this many bytes each.
SCRATCH_KEEP_BYTES = 256 << 20
_scratch_local = threading.local()
_DTYPE_KEYS = {t: np.dtype(t).str for t in (np.float32, np.float64, np.dtype(np.float32), np.dtype(np.float64))}


cpdef _scratch(slot, n, dtype):
    """Uninitialised 64-byte-aligned (n,) scratch array of this thread's slot `slot`;
    the next call for the slot may return the same memory."""
    buffers = getattr(_scratch_local, "buffers", None)
    if buffers is None:
        buffers = _scratch_local.buffers = {}
    key = (slot, _DTYPE_KEYS.get(dtype) or np.dtype(dtype).str)
    buf = buffers.get(key)
    if buf is None or buf.shape[0] < n:
        buf = _aligned_empty(n, dtype)
        if buf.nbytes <= SCRATCH_KEEP_BYTES:
            buffers[key] = buf
    return buf[:n]


def release_scratch():
    """Drop the calling thread's cached scratch buffers (the next kernel call allocates
    them again)."""
    _scratch_local.buffers = {}


def _group(batch, bytes_per_image):
    """Images per packed group."""
    return max(1, min(batch, PACK_BYTES // max(1, bytes_per_image)))


def _blocked_terms(const int64_t[::1] ptr, const int64_t[::1] chan, const int64_t[::1] wrow,
                   int64_t n_chan, int64_t window_bytes):
    """Term lists (CSR ptr over destinations; chan, wrow) regrouped by channel block.

    Returns (ptr over (destination, block), chan, wrow, number of blocks); within a
    destination and block, terms keep their order (a counting sort).  A block is as
    many channels as fit BLOCK_BYTES at window_bytes each, but holds BLOCK_TERMS
    terms of a destination on average: partial sums are stored and reloaded
    between blocks.
    """
    cdef int64_t n_dst = ptr.shape[0] - 1, n_terms = chan.shape[0]
    cdef int64_t by_bytes = max(1, BLOCK_BYTES // window_bytes)
    cdef int64_t n_cb = max(1, min((n_chan + by_bytes - 1) // by_bytes, n_terms // (n_dst * BLOCK_TERMS)))
    cdef int64_t block = (n_chan + n_cb - 1) // n_cb
    n_cb = (n_chan + block - 1) // block
    if n_cb == 1:
        return ptr, chan, wrow, 1
    blocked_ptr = np.zeros(n_dst * n_cb + 1, np.int64)
    blocked_chan = np.empty(n_terms, np.int64)
    blocked_wrow = np.empty(n_terms, np.int64)
    cdef int64_t[::1] bp = blocked_ptr, bc = blocked_chan, bw = blocked_wrow
    cdef int64_t d, j, slot
    with nogil:
        for d in range(n_dst):
            for j in range(ptr[d], ptr[d + 1]):
                bp[d * n_cb + chan[j] // block + 1] += 1
        for j in range(n_dst * n_cb):
            bp[j + 1] += bp[j]
        for d in range(n_dst):  # bp[slot] is the next free place of slot while filling
            for j in range(ptr[d], ptr[d + 1]):
                slot = d * n_cb + chan[j] // block
                bc[bp[slot]] = chan[j]
                bw[bp[slot]] = wrow[j]
                bp[slot] += 1
        for j in range(n_dst * n_cb, 0, -1):  # shift back: bp[slot] was advanced to the next slot's start
            bp[j] = bp[j - 1]
        bp[0] = 0
    return blocked_ptr, blocked_chan, blocked_wrow, n_cb
