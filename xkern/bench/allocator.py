"""The C allocator under the timings: glibc malloc's defaults, or freed memory kept.

With glibc's defaults, blocks over a dynamic threshold (up to 32 MiB) come from mmap and go
back to the kernel when freed, and the top of the heap is trimmed: every call that allocates
and frees large temporaries takes fresh zero pages, one page fault per 4 KiB.  torch's grouped
conv backward does so on every step (about 6000 faults per step at L1, against about 1000 for
xkern's), and on this kind of VM a fault costs microseconds.  Caching allocators (jemalloc,
tcmalloc, which PyTorch recommends for CPU training) keep the memory instead.  keep_freed()
asks glibc for that behaviour, so the timings compare the computations rather than the page
faults; the default is what a plain process gets.
"""
import ctypes
import ctypes.util

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's largest on 64-bit: larger blocks always come from mmap
TRIM_THRESHOLD_MAX = 2 ** 31 - 1  # mallopt takes an int


def keep_freed():
    """Make glibc malloc keep freed memory in the process: blocks up to 32 MiB from the heap,
    no trimming.  Returns a description for the report; RuntimeError where the C library
    is not glibc (no mallopt)."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    if mallopt is None:
        raise RuntimeError("keeping freed memory needs glibc's mallopt, which this C library lacks")
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    if not (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_MAX)):
        raise RuntimeError("glibc mallopt refused the thresholds")
    return "glibc malloc keeping freed memory (mallopt: mmap threshold 32 MiB, no trimming)"


DEFAULT = "glibc malloc defaults (freed large blocks return to the kernel: page faults on reuse)"
