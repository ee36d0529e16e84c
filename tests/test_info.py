"""`python -m xkern info` and xkern.backends.cpu.isa(): the instruction set the kernels run with."""
import platform

import pytest

from testing import run_python, usable

pytestmark = pytest.mark.skipif(not usable("cpu"), reason="the compiled CPU backend is not built")

# x86-64 micro-architecture levels as /proc/cpuinfo spells their flags (the ones GCC's
# target_clones resolver tests for v3 and v4).
V3 = {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "movbe", "xsave"}
V4 = V3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}


def _cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(platform.system() != "Linux" or platform.machine() != "x86_64",
                    reason="reads /proc/cpuinfo's x86 flags")
def test_isa_is_the_widest_level_this_cpu_has():
    from xkern.backends import cpu
    flags = _cpu_flags()
    expected = ("AVX-512" if V4 <= flags else "AVX2" if V3 <= flags else "generic")
    assert cpu.isa().startswith(expected), (cpu.isa(), sorted(V4 - flags))


def test_info_names_the_isa():
    from xkern.backends import cpu
    out = run_python("import sys; from xkern.__main__ import main; sys.exit(main(['info']))")
    line = next(l for l in out.splitlines() if l.strip().startswith("cpu"))
    assert cpu.isa() in line, out
