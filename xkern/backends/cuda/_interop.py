"""Array kinds, streams and device-side caches for the CUDA backend.

Arguments arrive as torch CUDA tensors, CuPy arrays, numba device arrays or
anything else exposing __cuda_array_interface__; the kernels see numba device
arrays (zero-copy views).  Every view carries the stream its kernels launch on:
torch's current stream for torch tensors, the exported stream for CAI v3
producers (CuPy), else the array's own (numba default) stream.  torch is never
imported here: it is reached through sys.modules only when a tensor arrived.
"""
import hashlib
import sys
import threading
import weakref

import numba
import numpy as np
from numba import cuda

SIMULATOR = bool(numba.config.ENABLE_CUDASIM)

_streams = {}
_lock = threading.Lock()


def is_torch_tensor(a):
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(a, torch.Tensor)


def _external_stream(handle):
    """numba's handle on a foreign stream (cached: creating one per call costs microseconds)."""
    stream = _streams.get(handle)
    if stream is None:
        stream = cuda.external_stream(handle)
        _streams[handle] = stream
    return stream


def torch_stream(t):
    """torch's current stream on t's device, as a numba stream."""
    torch = sys.modules["torch"]
    return _external_stream(torch.cuda.current_stream(t.device).cuda_stream)


def _c_contiguous(shape, strides, itemsize):
    if strides is None:
        return True
    expected = itemsize
    for size, stride in zip(reversed(shape), reversed(strides)):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


def adopt(a, name):
    """A C-contiguous numba device array viewing a's memory (no copy), on a's stream.

    Raises TypeError for host arrays (every argument must live on the GPU like x)
    and ValueError for non-contiguous ones.
    """
    if getattr(a, "__cuda_ndarray__", False):  # numba device array (or the simulator's)
        if not a.is_c_contiguous():
            raise ValueError(f"{name} must be C-contiguous, got strides {a.strides}")
        return a
    desc = getattr(a, "__cuda_array_interface__", None)
    if desc is None:
        raise TypeError(f"{name} must be a CUDA array like x (torch CUDA tensor, CuPy or numba "
                        f"device array), got {type(a).__module__}.{type(a).__name__}")
    dtype = np.dtype(desc["typestr"])
    if not _c_contiguous(desc["shape"], desc.get("strides"), dtype.itemsize):
        raise ValueError(f"{name} must be C-contiguous, got strides {desc.get('strides')}")
    if is_torch_tensor(a):
        return _view(desc, dtype, a, torch_stream(a))
    # sync=False: the kernels are queued on the producer's stream, which already
    # orders them after the producer's work; synchronising here would stall the host.
    return cuda.from_cuda_array_interface(desc, owner=a, sync=False)


_contexts = {}


def _view(desc, dtype, owner, stream):
    """A DeviceNDArray over desc's memory, built directly: numba's generic path looks up
    the current context on every call, which costs more than the kernels of small layers."""
    shape = tuple(desc["shape"])
    strides = tuple(int(np.prod(shape[i + 1:], dtype=np.int64)) * dtype.itemsize for i in range(len(shape)))
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    ctx = _contexts.get(0)
    if ctx is None:
        ctx = _contexts[0] = cuda.current_context()
    data = cuda.cudadrv.driver.MemoryPointer(
        ctx, cuda.cudadrv.driver.binding.CUdeviceptr(desc["data"][0]), size=size, owner=owner)
    return cuda.devicearray.DeviceNDArray(shape, strides, dtype, stream=stream, gpu_data=data)


def device_view(a):
    """A numba view of an output buffer that empty() allocated (already validated)."""
    if getattr(a, "__cuda_ndarray__", False):
        return a
    desc = a.__cuda_array_interface__
    if is_torch_tensor(a):
        return _view(desc, np.dtype(desc["typestr"]), a, 0)
    return cuda.from_cuda_array_interface(desc, owner=a, sync=False)


def empty(shape, dtype, like):
    """An uninitialised array of like's kind on like's device (like: the caller's x)."""
    shape = tuple(int(s) for s in shape)
    if is_torch_tensor(like):
        return like.new_empty(shape)
    module = type(like).__module__.split(".")[0]
    if module == "cupy":
        cupy = sys.modules["cupy"]
        with like.device:
            return cupy.empty(shape, dtype=dtype)
    return cuda.device_array(shape, dtype=dtype, stream=getattr(like, "stream", 0))


_host_copies = {}


def _torch_host_index(index):
    """A read-only host copy of a torch index, reused while the tensor is alive and unmodified.

    Copying a CUDA tensor to the host synchronises the device; an X-Conv's index
    buffer is fixed, so one copy serves every later step.  The entry is keyed on
    the object (held weakly: ids are reused) and its version counter, which
    every in-place write bumps.
    """
    if index.device.type == "cpu":
        return index.detach().numpy()
    hit = _host_copies.get(id(index))
    if hit is not None and hit[0]() is index and hit[1] == index._version:
        return hit[2]
    host = index.detach().cpu().numpy()
    host.setflags(write=False)
    with _lock:
        for key in [k for k, v in _host_copies.items() if v[0]() is None]:
            del _host_copies[key]
        _host_copies[id(index)] = (weakref.ref(index), index._version, host)
    return host


def host_index(index):
    """index as a host array: host array-likes as they are, CUDA arrays copied back."""
    if is_torch_tensor(index):
        return _torch_host_index(index)
    if getattr(index, "__cuda_ndarray__", False):
        return index.copy_to_host()
    if hasattr(index, "__cuda_array_interface__"):
        return cuda.from_cuda_array_interface(index.__cuda_array_interface__, owner=index,
                                              sync=True).copy_to_host()
    return np.asarray(index)


def stream_key(stream):
    """A hashable name for a stream (0 for numba's default stream)."""
    handle = getattr(stream, "handle", None)
    if handle is None:
        return 0
    try:
        return int(handle)  # cuda-bindings CUstream
    except TypeError:
        return handle.value or 0  # ctypes c_void_p


class DeviceCache:
    """Host tables uploaded once, keyed on their content: graphs are fixed while a net trains."""

    def __init__(self, size=512):
        # up to three tables per X layer (forward, grad_input, grad_weight): 64 entries,
        # the first bound, was fewer than an X-DenseNet-BC-40's 38 layers need in one step
        self._size = size
        self._items = {}

    def clear(self):
        with _lock:
            self._items.clear()

    def get(self, key, build):
        """The device arrays build() returns (a tuple of host arrays), uploaded on first use."""
        with _lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items[key] = self._items.pop(key)  # most recently used last
                return hit
        # to_device on the legacy default stream is synchronous: the tables are
        # complete before any stream can read them.
        tables = tuple(cuda.to_device(np.ascontiguousarray(t)) for t in build())
        with _lock:
            self._items[key] = tables
            while len(self._items) > self._size:
                self._items.pop(next(iter(self._items)))
        return tables


def content_key(*arrays):
    """A short digest of arrays' shapes, dtypes and bytes."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(repr((a.shape, a.dtype.str)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.digest()


def device_id():
    return 0 if SIMULATOR else cuda.get_current_device().id


class Workspace:
    """Grow-only scratch memory per (device, stream, slot).

    Reuse is safe because every kernel using a slot's buffer is queued on that
    stream, so a later call's writes start after the earlier call's reads.
    """

    ALIGN = 256

    def __init__(self):
        self._buffers = {}

    def take(self, stream, slot, specs):
        """Arrays of the given [(shape, dtype), ...], carved from one buffer."""
        offsets, total = [], 0
        for shape, dtype in specs:
            offsets.append(total)
            n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            total += -(-max(n, 1) // self.ALIGN) * self.ALIGN
        key = (device_id(), stream_key(stream), slot)
        with _lock:
            buf = self._buffers.get(key)
            if buf is None or buf.shape[0] < total:
                buf = cuda.device_array(total, dtype=np.uint8, stream=stream)
                self._buffers[key] = buf
        out = []
        for (shape, dtype), off in zip(specs, offsets):
            n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            out.append(buf[off:off + n].view(np.dtype(dtype)).reshape(tuple(shape)))
        return out


workspace = Workspace()


def sm_count():
    """Streaming multiprocessors of the current device (1 in the simulator: fewest blocks)."""
    if SIMULATOR:
        return 1
    return cuda.get_current_device().MULTIPROCESSOR_COUNT


_dummies = {}


def dummy(dtype):
    """A 1-element device array standing in for an absent optional argument (bias)."""
    key = (device_id(), np.dtype(dtype))
    arr = _dummies.get(key)
    if arr is None:
        arr = cuda.to_device(np.zeros(1, dtype=dtype))
        _dummies[key] = arr
    return arr


class Kernel:
    """A kernel compiled once for its one signature, launched without per-call dispatch.

    numba's kernel[grid, block, stream](...) re-types every argument and builds a
    launch configuration per call; with the signature fixed, launching the compiled
    overload directly keeps host time per launch small.  The simulator keeps the
    ordinary path (it has no compiled overloads).
    """

    def __init__(self, pyfunc, signature):
        if SIMULATOR:
            self._dispatcher = cuda.jit(pyfunc)
            self._compiled = None
        else:
            self._dispatcher = cuda.jit(signature)(pyfunc)
            self._compiled = next(iter(self._dispatcher.overloads.values()))

    def __call__(self, grid, block, stream, *args):
        if self._compiled is None:
            self._dispatcher[grid, block, stream](*args)
            return
        grid = tuple(grid) + (1,) * (3 - len(grid)) if isinstance(grid, tuple) else (grid, 1, 1)
        block = tuple(block) + (1,) * (3 - len(block)) if isinstance(block, tuple) else (block, 1, 1)
        self._compiled.launch(args, grid, block, _core_stream(stream), 0)


_core_streams = {}


def _core_stream(stream):
    key = stream_key(stream)
    core = _core_streams.get(key)
    if core is None:
        core = _core_streams[key] = cuda.cudadrv.driver._to_core_stream(stream)
    return core
