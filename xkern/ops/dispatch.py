"""The one table from a backend name (or the kind of input) to its kernels.

A backend here is its kernel module plus how to adopt arguments as its array type,
how to allocate outputs like an input, and how to read the index on the host.
Backends load lazily, so `import xkern` imports neither numba nor torch.
"""
import importlib
from typing import Callable, NamedTuple

import numpy as np

from .validate import host_array, host_index


class Backend(NamedTuple):
    name: str
    kernels: object                       # module with the functions listed in xkern.backends
    adopt: Callable = host_array          # (array, name) -> backend array, C-contiguous
    empty: Callable = None                # (shape, dtype, like=the caller's x) -> uninitialised output of x's kind
    host_index: Callable = host_index     # index as a host array, for validation


def _host_empty(shape, dtype, like):
    return np.empty(shape, dtype=dtype)


def _load_reference():
    return Backend("reference", importlib.import_module("xkern.backends.reference"), empty=_host_empty)


def _load_cpu():
    from ..backends import cpu
    cpu.require()  # raises with the reason when the extension is not built
    return Backend("cpu", cpu, empty=_host_empty)


def _load_cuda():
    from ..backends import cuda
    cuda.require()  # raises with the reason: numba missing, no GPU, ...
    return Backend("cuda", cuda, adopt=cuda.adopt, empty=cuda.empty, host_index=cuda.host_index)


LOADERS = {"reference": _load_reference, "cpu": _load_cpu, "cuda": _load_cuda}
_loaded = {}


def get_backend(name):
    """The Backend called name; a ValueError lists the names, a RuntimeError says what is missing."""
    if name not in LOADERS:
        raise ValueError(f"backend must be one of {sorted(LOADERS)} or None, got {name!r}")
    backend = _loaded.get(name)
    if backend is None:
        try:
            backend = LOADERS[name]()
        except ImportError as exc:
            raise RuntimeError(f"no {name} backend: {exc}") from exc
        _loaded[name] = backend
    return backend


def is_device_array(a):
    """True for CUDA arrays (torch CUDA tensors, numba device arrays, CuPy).

    numba device arrays are recognised by __cuda_ndarray__ too: the simulator's
    (NUMBA_ENABLE_CUDASIM=1) have no __cuda_array_interface__.
    """
    return hasattr(a, "__cuda_array_interface__") or getattr(a, "__cuda_ndarray__", False) is True


def pick_backend(backend, x):
    """The backend to run: the one named, else cuda for CUDA arrays and cpu for host arrays."""
    on_device = type(x) is not np.ndarray and is_device_array(x)  # ndarrays: skip two lookups
    if backend is None:
        backend = "cuda" if on_device else "cpu"
    chosen = get_backend(backend)
    if on_device != (chosen.name == "cuda"):
        where = "a CUDA array" if on_device else "a host array"
        raise ValueError(f"backend={backend!r} cannot run on x, which is {where}")
    return chosen
