"""Kernels on raw pointers and int32 scalars, launched through cuLaunchKernel.

numba types an array argument as a struct of pointers and int64 shapes and widens
signed indices to int64 with wraparound for negatives; these kernels take
`CPointer` arguments and int32 scalars instead, so indexing is plain pointer
arithmetic.  A launch fills pre-packed parameter slots and calls the driver
directly (numba's dispatcher re-types and marshals every argument: tens of
microseconds).  Kernels use dynamic shared memory (`cuda.shared.array(0, ...)`);
above 48 KiB the driver needs an opt-in per kernel, which `launch` raises to the
largest size asked for so far.

In the simulator the same Python function runs through numba's dispatcher, on
flat device arrays in place of pointers.
"""
import ctypes
import threading

import numba
import numpy as np
from numba import cuda, types

from ._interop import SIMULATOR, stream_key

PTR = "ptr"      # a device pointer to elements of the kernel's dtype
IPTR = "iptr"    # a device pointer to int32
I32 = "i32"      # an int32 scalar
DEFAULT_SHARED = 48 * 1024  # dynamic shared memory every kernel may use without opting in


def numba_types(kinds, dtype):
    nty = numba.from_dtype(np.dtype(dtype))
    table = {PTR: types.CPointer(nty), IPTR: types.CPointer(types.int32), I32: types.int32}
    return tuple(table[k] for k in kinds)


def flat(a):
    """A device array's elements as one dimension (what a pointer argument sees)."""
    return a.reshape(a.size) if a.ndim != 1 else a


def address(a):
    """The device address of a numba device array (0 for an empty one)."""
    ptr = a.device_ctypes_pointer.value
    return ptr or 0


def compile_ptx(pyfunc, signature, cc):
    """(PTX, return type) of pyfunc for compute capability cc, without a GPU.

    numba compiles the device functions a kernel calls for the current device's compute
    capability and so asks the driver for it; here the driver may be absent, so that
    question is answered with cc while compiling.
    """
    from numba.cuda import dispatcher

    class Device:
        compute_capability = tuple(cc)

    saved = dispatcher.get_current_device
    dispatcher.get_current_device = Device
    try:
        return cuda.compile_ptx(pyfunc, signature, cc=tuple(cc))
    finally:
        dispatcher.get_current_device = saved


def find_ptxas():
    """ptxas from the nvidia-cuda-nvcc wheel (the release of the NVVM numba-cuda loads from
    the wheels), else from PATH; None if neither."""
    import glob
    import os
    import shutil
    try:
        import nvidia
    except ImportError:
        nvidia = None
    for base in getattr(nvidia, "__path__", []):
        found = sorted(glob.glob(os.path.join(base, "cu*", "bin", "ptxas")))
        if found:
            return found[-1]
    return shutil.which("ptxas")


class RawKernel:
    """pyfunc compiled for one dtype, its arguments of the given kinds (PTR, IPTR, I32).

    launch(grid, block, shared_bytes, stream, *args) with device arrays for the pointer
    kinds and ints for I32.
    """

    def __init__(self, pyfunc, kinds, dtype):
        self.kinds = tuple(kinds)
        self._lock = threading.Lock()
        if SIMULATOR:
            self._dispatcher = cuda.jit(pyfunc)
            return
        self._dispatcher = cuda.jit(numba_types(kinds, dtype))(pyfunc)
        self._overload = next(iter(self._dispatcher.overloads.values()))
        self._functions = {}  # device id -> [CUfunction, opted-in shared bytes]
        self._slots = [ctypes.c_int32() if k == I32 else ctypes.c_uint64() for k in self.kinds]
        self._params = (ctypes.c_void_p * len(self._slots))(
            *[ctypes.addressof(s) for s in self._slots])
        self._params_address = ctypes.addressof(self._params)

    def launch(self, grid, block, shared_bytes, stream, *args):
        if SIMULATOR:
            args = [flat(a) if k != I32 else int(a) for k, a in zip(self.kinds, args)]
            self._dispatcher[grid, block, stream, shared_bytes](*args)
            return
        from cuda.bindings import driver as cu
        grid = tuple(grid) + (1,) * (3 - len(grid))
        with self._lock:
            func = self._function(shared_bytes)
            for slot, kind, value in zip(self._slots, self.kinds, args):
                slot.value = int(value) if kind == I32 else address(value)
            (err,) = cu.cuLaunchKernel(func, *grid, block, 1, 1, shared_bytes, stream_key(stream),
                                       self._params_address, 0)
        if err != cu.CUresult.CUDA_SUCCESS:
            raise RuntimeError(f"cuLaunchKernel failed: {err!r} (grid {grid}, block {block}, "
                               f"{shared_bytes} bytes of shared memory)")

    def _function(self, shared_bytes):
        """The kernel's handle on the current device, opted in to shared_bytes."""
        from cuda.bindings import driver as cu
        device = cuda.get_current_device().id
        entry = self._functions.get(device)
        if entry is None:
            cufunc = self._overload._codelibrary.get_cufunc()
            entry = self._functions[device] = [cu.CUfunction(int(cufunc.handle)), DEFAULT_SHARED,
                                               cufunc.handle]
        if shared_bytes > entry[1]:
            attr = cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
            handle = entry[2]
            if isinstance(handle, cu.CUkernel):
                (err,) = cu.cuKernelSetAttribute(attr, shared_bytes, handle, device)
            else:
                (err,) = cu.cuFuncSetAttribute(handle, attr, shared_bytes)
            if err != cu.CUresult.CUDA_SUCCESS:
                raise RuntimeError(f"cannot opt in to {shared_bytes} bytes of dynamic shared memory: "
                                   f"{err!r}")
            entry[1] = shared_bytes
        return entry[0]
