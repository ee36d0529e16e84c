"""Compiled CPU backend: Cython + OpenMP kernels from src/cpu_kernels.pyx (and src/cpu/*.pxi).

The functions follow the kernel contract in xkern.backends (same signatures as
the reference backend).  Each call runs on xkern.set_num_threads' count, or
OpenMP's default when none was set: OMP_NUM_THREADS, and inside a torch
process torch.get_num_threads() (torch and xkern share one OpenMP runtime).
Results are bitwise the same at any thread count.
"""
from .._threads import requested_threads

try:
    from . import _cpu
except ImportError as exc:
    raise ImportError(
        f"the compiled CPU kernels (xkern.backends._cpu) are not built: {exc}. Build them from the "
        "source tree with `pip install --no-build-isolation -e .` (needs Cython, numpy and a C "
        "compiler; OpenMP optional) or `python setup.py build_ext --inplace`") from exc


def require():
    """Nothing left to check: importing this module found the compiled extension."""


def max_threads():
    """OpenMP's default thread count here (1 when built without OpenMP)."""
    return _cpu.max_threads()


def isa():
    """The instruction set the kernels run with on this CPU: the widest of AVX-512, AVX2 + FMA
    and the baseline that both the build and the CPU have."""
    return _cpu.isa()


def openmp_enabled():
    """True when the extension was compiled with OpenMP."""
    return _cpu.openmp_enabled()


def release_scratch():
    """Free the packing buffers the kernels keep for this thread's next call (up to
    _cpu.SCRATCH_KEEP_BYTES each); the next call allocates them again."""
    _cpu.release_scratch()


def xconv2d_fwd(x, weight, index, bias, out, stride, padding, dilation):
    _cpu.xconv2d_fwd(x, weight, index, bias, out, stride, padding, dilation, requested_threads())


def prepare_xconv2d_fwd(x, weight, index, bias, stride, padding, dilation):
    """xconv2d_fwd for arguments of this geometry, checked once: a callable (x, weight, bias)
    returning a new output, or None for arrays of another geometry (optional in a backend:
    xkern.ops.PreparedXconv2d uses it where there is one)."""
    run = _cpu.PreparedForward(x, weight, index, bias, stride, padding, dilation)
    return lambda x, weight, bias: run(x, weight, bias, requested_threads())


def xconv2d_bwd_input(grad_out, weight, index, rev, grad_x, stride, padding, dilation):
    _cpu.xconv2d_bwd_input(grad_out, weight, index, rev, grad_x, stride, padding, dilation,
                           requested_threads())


def xconv2d_bwd_weight(grad_out, x, index, grad_weight, stride, padding, dilation):
    _cpu.xconv2d_bwd_weight(grad_out, x, index, grad_weight, stride, padding, dilation,
                            requested_threads())


def xconv2d_bwd_bias(grad_out, grad_bias):
    _cpu.xconv2d_bwd_bias(grad_out, grad_bias, requested_threads())


def xlinear_fwd(x, weight, index, bias, out):
    _cpu.xlinear_fwd(x, weight, index, bias, out, requested_threads())


def xlinear_bwd_input(grad_out, weight, index, rev, grad_x):
    _cpu.xlinear_bwd_input(grad_out, weight, index, rev, grad_x, requested_threads())


def xlinear_bwd_weight(grad_out, x, index, grad_weight):
    _cpu.xlinear_bwd_weight(grad_out, x, index, grad_weight, requested_threads())


def xlinear_bwd_bias(grad_out, grad_bias):
    _cpu.xlinear_bwd_bias(grad_out, grad_bias, requested_threads())
