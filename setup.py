"""Build the compiled CPU backend (Cython + OpenMP) and the inference engine (C++).

OpenMP is probed by compiling and linking a tiny program with the flags the
compiler accepts; without it the extension builds serial and warns.  Set
XKERN_REQUIRE_OPENMP=1 to make a missing OpenMP an error, XKERN_DISABLE_OPENMP=1
to build serial on purpose.  No -march=native: the kernels pick SIMD widths at
run time (see src/), so one build runs on any CPU of its architecture.

The engine (src/engine/) becomes two files in xkern/runtime/: the shared library
libxkern_runtime (C API, header xkern/runtime/include/xkern_runtime.h) for C programs,
and the pybind11 module _engine for Python.  Both link the same engine objects.  Without
pybind11 or on MSVC the engine is skipped with a warning and xkern.runtime falls back to
its numpy executor.
"""
import glob
import os
import shutil
import sys
import tempfile
import warnings

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    import pybind11
except ImportError:  # a build without build isolation and without pybind11
    pybind11 = None

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
    _engine_lib = None

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
        self._engine_lib = None
        engine = [ext for ext in self.extensions if ext.name == ENGINE_MODULE]
        if engine and not unix:
            warnings.warn("xkern: the C++ inference engine is not built with MSVC; xkern.runtime "
                          "runs its numpy executor.")
            self.extensions.remove(engine[0])
        elif engine:
            engine[0].extra_objects = self.build_engine(base + cflags, ldflags)
        super().build_extensions()

    def build_engine(self, cflags, ldflags):
        """Compile the engine's objects (when their sources changed) and link the shared
        library next to the _engine module; returns the objects for _engine to link."""
        objects = self.compiler.object_filenames(ENGINE_SOURCES, output_dir=self.build_temp)
        inputs = ENGINE_SOURCES + ENGINE_HEADERS
        stale = self.force or any(not os.path.exists(o) for o in objects) or \
            max(map(os.path.getmtime, inputs)) > min(map(os.path.getmtime, objects))
        if stale:
            objects = self.compiler.compile(ENGINE_SOURCES, output_dir=self.build_temp,
                                            include_dirs=ENGINE_INCLUDES,
                                            extra_postargs=cflags + ENGINE_CXXFLAGS)
        folder = os.path.dirname(self.get_ext_fullpath(ENGINE_MODULE))
        os.makedirs(folder, exist_ok=True)
        self._engine_lib = os.path.join(folder, ENGINE_LIB)
        if stale or not os.path.exists(self._engine_lib):
            soname = ["-Wl,-install_name,@rpath/" + ENGINE_LIB] if sys.platform == "darwin" \
                else ["-Wl,-soname," + ENGINE_LIB]
            self.compiler.link_shared_object(objects, self._engine_lib, target_lang="c++",
                                             extra_postargs=ldflags + soname)
        return objects

    def copy_extensions_to_source(self):
        # editable installs: the shared library goes beside the _engine module copied back
        super().copy_extensions_to_source()
        if self._engine_lib:
            build_py = self.get_finalized_command("build_py")
            target = os.path.join(build_py.get_package_dir("xkern.runtime"), ENGINE_LIB)
            self.copy_file(self._engine_lib, target, level=self.verbose)


ENGINE_MODULE = "xkern.runtime._engine"
ENGINE_SOURCES = ["src/engine/xk_format.cpp", "src/engine/xk_engine.cpp", "src/engine/xk_c_api.cpp",
                  "src/engine/xk_backend.cpp"]
# xk_backend.cpp compiles the CPU backend's kernels (src/*.h) into the engine
ENGINE_HEADERS = ["src/engine/xk_model.h", "src/engine/xk_engine.h", "src/engine/xk_kernels.h",
                  "src/engine/xk_depthwise.h", "src/engine/xk_dense.h", "src/engine/xk_first.h",
                  "src/engine/xk_backend.h", "xkern/runtime/include/xkern_runtime.h",
                  "src/cpu_kernels.h", "src/cpu_kernels_impl.h", "src/simd.h"] + sorted(glob.glob("src/kernels/*.h"))
ENGINE_INCLUDES = ["src/engine", "xkern/runtime/include"]
# hidden visibility: the shared library exports the C API (XK_API) and nothing else
ENGINE_CXXFLAGS = ["-std=c++17", "-fPIC", "-fvisibility=hidden"]
ENGINE_LIB = "libxkern_runtime.dylib" if sys.platform == "darwin" else "libxkern_runtime.so"


extensions = [
    Extension(
        "xkern.backends._cpu",
        sources=["src/cpu_kernels.pyx"],
        include_dirs=["src", np.get_include()],
        # the C kernels live in headers: rebuild when they change
        depends=["src/cpu_kernels.h", "src/cpu_kernels_impl.h", "src/simd.h", "src/_openmp_helpers.pxd"]
        + sorted(glob.glob("src/kernels/*.h")) + sorted(glob.glob("src/cpu/*.pxi")),
    ),
]

if pybind11 is None:
    warnings.warn("xkern: pybind11 is not installed, so the C++ inference engine is not built; "
                  "xkern.runtime runs its numpy executor.")
    engine_extensions = []
else:
    engine_extensions = [Extension(
        ENGINE_MODULE,
        sources=["src/engine/xk_bindings.cpp"],
        include_dirs=[pybind11.get_include()] + ENGINE_INCLUDES,
        language="c++",
        extra_compile_args=ENGINE_CXXFLAGS,
        depends=ENGINE_SOURCES + ENGINE_HEADERS,
    )]

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
    ) + engine_extensions,
    cmdclass={"build_ext": BuildExt},
)
