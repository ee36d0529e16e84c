"""Hypothesis profiles: "ci" (reproducible: derandomized, no example database) is chosen
when the CI environment variable is set, "dev" otherwise; HYPOTHESIS_PROFILE overrides.
Neither has a deadline: timings on a shared 2-core machine are noise, not failures."""
import os

# Set before anything loads the OpenMP runtime.  The tests make thousands of tiny kernel
# calls; with more runnable threads than cores, OpenMP's default spin-waiting at every
# barrier made them ~100x slower (127 ms instead of 1 ms per call, measured on 2 cores).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")


def _cuda_gpu_present():
    """True when torch sees a CUDA GPU and numba is installed to drive it."""
    import importlib.util
    if importlib.util.find_spec("numba") is None:
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# The CUDA tests run on the GPU when there is one (XKERN_CUDA_REAL=1, which is also how to
# say so explicitly) and in Numba's simulator otherwise (XKERN_CUDA_REAL=0 forces it).  numba
# reads NUMBA_ENABLE_CUDASIM once, at import, so it is set before any test module imports numba.
if "XKERN_CUDA_REAL" not in os.environ:
    os.environ["XKERN_CUDA_REAL"] = "1" if _cuda_gpu_present() else "0"
if os.environ["XKERN_CUDA_REAL"] != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

from hypothesis import settings

settings.register_profile("ci", deadline=None, derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


import pytest  # noqa: E402


@pytest.fixture
def threads():
    """xkern.set_num_threads, with OpenMP's default thread count restored after the test."""
    import xkern
    yield xkern.set_num_threads
    xkern.set_num_threads(None)


@pytest.fixture(autouse=True)
def threaded_small_forwards(monkeypatch):
    """The test layers are tiny: let their forwards split between threads as large ones do
    (the cpu backend runs forwards under SERIAL_MACS on one thread), so that the thread-count
    tests exercise the threaded paths."""
    try:
        from xkern.backends import _cpu
    except ImportError:  # the compiled backend is not built: nothing to set
        return
    monkeypatch.setattr(_cpu, "SERIAL_MACS", 0)
