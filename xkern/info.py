"""What this install of xkern can do: versions, backends, threads, devices."""
import importlib.util
import os

from ._threads import requested_threads
from ._version import __version__


def get_num_threads():
    """Threads the CPU kernels use now (set_num_threads, else OpenMP's default)."""
    if requested_threads():
        return requested_threads()
    try:
        from .backends import cpu
    except ImportError:
        return 1
    return cpu.max_threads()


def _cpu_status():
    try:
        from .backends import cpu
    except ImportError as exc:
        return {"usable": False, "reason": str(exc)}
    return {"usable": True, "openmp": cpu.openmp_enabled(), "threads": get_num_threads(), "isa": cpu.isa()}


def _cuda_status():
    if importlib.util.find_spec("numba") is None:
        return {"usable": False, "reason": "numba is not installed (pip install xkern[cuda])"}
    try:
        from .backends import cuda
        cuda.require()
    except (ImportError, RuntimeError) as exc:
        return {"usable": False, "reason": str(exc)}
    return {"usable": True, "device": cuda.device_name()}


def collect():
    """A dict describing the install; `python -m xkern info` prints it."""
    return {
        "xkern": __version__,
        "location": os.path.dirname(os.path.abspath(__file__)),
        "numpy": importlib.import_module("numpy").__version__,
        "torch": _version_of("torch"),
        "numba": _version_of("numba"),
        "backends": {"reference": {"usable": True}, "cpu": _cpu_status(), "cuda": _cuda_status()},
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }


def _version_of(name):
    if importlib.util.find_spec(name) is None:
        return None
    from importlib.metadata import version, PackageNotFoundError
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"
