"""Peak memory of one call (a training step), beyond what was resident before it.

CPU (Linux): the growth of the process's resident-set high-water mark.  Before the call the
allocator hands its free pages back to the kernel (glibc malloc_trim), the high-water mark is
reset (writing 5 to /proc/self/clear_refs), and VmRSS is read; after it, VmHWM.  The
difference counts every page the call touches for the first time: torch's and numpy's
buffers, kernel scratch memory (xkern's CPU kernels' cached buffers are released first), the
outputs it returns.  Data that existed before (inputs, parameters) is not counted.  Accuracy: some tens of 4 KiB pages (the kernel keeps RSS
counters per CPU and /proc reports them approximately).
CUDA: growth of torch.cuda.max_memory_allocated (torch's caching allocator only).
"""
import ctypes
import ctypes.util
import gc

_libc = None


def _trim_heap():
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        _libc = ctypes.CDLL(name) if name else False
    trim = getattr(_libc, "malloc_trim", None) if _libc else None
    if trim is not None:
        trim(0)


def _release_kernel_scratch():
    """xkern's CPU kernels keep their packing buffers between calls; free them, so that
    a step's peak counts them like torch's workspaces (freed after every call)."""
    try:
        from ..backends import cpu
    except ImportError:
        return
    cpu.release_scratch()


def _status_kib(*fields):
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in fields:
                values[key] = int(rest.split()[0])
    return [values[k] for k in fields]


def rss_peak_supported():
    """True where the CPU measurement works (Linux with a writable /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_kib("VmRSS", "VmHWM")
    except (OSError, KeyError, ValueError):
        return False
    return True


def peak_bytes(fn, *, device="cpu", sync=None):
    """Peak memory, in bytes, that one call of fn() adds; None where it cannot be measured."""
    if device == "cuda":
        import torch
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        result = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        del result
        return peak
    if not rss_peak_supported():
        return None
    gc.collect()
    _release_kernel_scratch()
    _trim_heap()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    (before,) = _status_kib("VmRSS")
    result = fn()
    if sync is not None:
        sync()
    (high,) = _status_kib("VmHWM")
    del result
    return max(0, high - before) * 1024
