"""Thread count requested for the compiled CPU kernels.

Without set_num_threads the kernels use OpenMP's default: OMP_NUM_THREADS when it
is set, and inside a torch process torch.get_num_threads() (torch and xkern share
one OpenMP runtime there).
"""
_requested = 0  # 0: OpenMP's default


def set_num_threads(n):
    """Run the CPU kernels on n threads; None returns to OpenMP's default."""
    global _requested
    if n is None:
        _requested = 0
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int or None, got {n!r}")
    _requested = n


def requested_threads():
    """The count passed to the kernels: n from set_num_threads, or 0 for OpenMP's default."""
    return _requested
