"""Build the compiled CPU backend (Cython + OpenMP).

OpenMP is probed by compiling and linking a tiny program with the flags the
compiler accepts; without it the extension builds serial and warns.  Set
XKERN_REQUIRE_OPENMP=1 to make a missing OpenMP an error, XKERN_DISABLE_OPENMP=1
to build serial on purpose.  No -march=native: the kernels pick SIMD widths at
run time (see src/), so one build runs on any CPU of its architecture.
"""
import os
import shutil
import sys
import tempfile
import warnings

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_PROBE = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 ? 0 : 1;
}
"""

# Flags to try in order; MSVC spells it differently and Apple clang needs -Xpreprocessor.
OPENMP_CANDIDATES = {
    "msvc": [(["/openmp"], [])],
    "unix": [(["-fopenmp"], ["-fopenmp"]),
             (["-Xpreprocessor", "-fopenmp"], ["-lomp"])],
}


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def probe_openmp(compiler):
    """Return (compile_args, link_args) that build an OpenMP program, or None."""
    candidates = OPENMP_CANDIDATES.get(compiler.compiler_type, OPENMP_CANDIDATES["unix"])
    tmp = tempfile.mkdtemp(prefix="xkern-omp-")
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        for cflags, ldflags in candidates:
            try:
                objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
                compiler.link_executable(objs, "probe", output_dir=tmp, extra_postargs=ldflags)
            except Exception:  # the compiler rejected the flags: try the next spelling
                continue
            return cflags, ldflags
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    def build_extensions(self):
        unix = self.compiler.compiler_type != "msvc"
        base = ["-O3"] if unix else ["/O2"]
        omp = None if _env_flag("XKERN_DISABLE_OPENMP") else probe_openmp(self.compiler)
        if omp is None:
            msg = ("xkern: OpenMP not available with this compiler; building the CPU "
                   "kernels serial (single-threaded).")
            if _env_flag("XKERN_REQUIRE_OPENMP"):
                raise RuntimeError(msg + " XKERN_REQUIRE_OPENMP is set.")
            warnings.warn(msg)
            cflags, ldflags = [], []
        else:
            cflags, ldflags = omp
            sys.stderr.write(f"xkern: building with OpenMP ({' '.join(cflags)})\n")
        for ext in self.extensions:
            ext.extra_compile_args = base + cflags + list(ext.extra_compile_args)
            ext.extra_link_args = ldflags + list(ext.extra_link_args)
            ext.define_macros = list(ext.define_macros) + [
                ("XKERN_HAVE_OPENMP", "1" if omp else "0"),
                ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
            ]
        super().build_extensions()


extensions = [
    Extension(
        "xkern.backends._cpu",
        sources=["src/cpu_kernels.pyx"],
        include_dirs=["src", np.get_include()],
        # the C kernels live in headers: rebuild when they change
        depends=["src/cpu_kernels.h", "src/cpu_kernels_impl.h", "src/winograd_impl.h", "src/simd.h",
                 "src/_openmp_helpers.pxd"],
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
    cmdclass={"build_ext": BuildExt},
)
