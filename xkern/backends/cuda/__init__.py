"""CUDA backend: Numba kernels on CUDA arrays (torch CUDA tensors, CuPy, numba device arrays).

Kernels follow the contract of xkern.backends: every function writes its whole
output and is deterministic (no floating-point atomics).  Results come back as
the caller's array kind (see _interop.empty).  numba is an optional dependency
(pip install 'xkern[cuda]'); require() says what is missing.
"""
import numpy as _np

# numba-cuda (0.30 and older) calls numpy.row_stack while compiling kernels; numpy 2.5 removed
# that alias of vstack.  Restoring the alias is the smallest change that lets kernels compile.
if not hasattr(_np, "row_stack"):
    _np.row_stack = _np.vstack

try:
    from numba import cuda as _cuda
except ImportError as _exc:  # numba absent: the backend reports it through require()
    _MISSING = f"numba is not installed (pip install 'xkern[cuda]'): {_exc}"
else:
    _MISSING = None
    from ._interop import adopt, empty, host_index
    from .xconv2d_bwd_bias import xconv2d_bwd_bias
    from .xconv2d_bwd_input import xconv2d_bwd_input
    from .xconv2d_bwd_weight import xconv2d_bwd_weight
    from .xconv2d_fwd import xconv2d_fwd
    from .xlinear import xlinear_bwd_bias, xlinear_bwd_input, xlinear_bwd_weight, xlinear_fwd


def require():
    """Raise ImportError/RuntimeError saying why CUDA kernels cannot run here."""
    if _MISSING:
        raise ImportError(_MISSING)
    if not _cuda.is_available():
        raise RuntimeError("no CUDA GPU or driver usable by numba (numba.cuda.is_available() is "
                           "False); set NUMBA_ENABLE_CUDASIM=1 before importing numba to run "
                           "the kernels in Numba's simulator")


def device_name():
    """The current CUDA device's name ("CUDA simulator" under NUMBA_ENABLE_CUDASIM)."""
    require()
    from ._interop import SIMULATOR
    if SIMULATOR:
        return "CUDA simulator"
    name = _cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


__all__ = ["require", "adopt", "empty", "host_index", "device_name",
           "xconv2d_fwd", "xconv2d_bwd_input", "xconv2d_bwd_weight", "xconv2d_bwd_bias",
           "xlinear_fwd", "xlinear_bwd_input", "xlinear_bwd_weight", "xlinear_bwd_bias"]
