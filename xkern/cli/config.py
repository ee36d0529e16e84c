"""`python -m xkern config`: the flags that compile and link a C or C++ program against
xkern's inference engine (header xkern_runtime.h, library libxkern_runtime), as
`python -m pybind11 --includes` does for pybind11.

    cc app.c $(python -m xkern config --cflags --libs) -o app

--libs includes an rpath to the library's folder, so the program runs as built, with no
LD_LIBRARY_PATH.
"""
import os
import shlex
import sys


def register(sub):
    p = sub.add_parser(
        "config", help="compiler / linker flags for C programs using xkern's engine (xkern_runtime.h)",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("--cflags", action="store_true", help="print the include flag (-I...)")
    p.add_argument("--libs", action="store_true", help="print the linker flags (-L... -lxkern_runtime -Wl,-rpath,...)")
    p.add_argument("--includedir", action="store_true", help="print the folder holding xkern_runtime.h")
    p.add_argument("--libdir", action="store_true", help="print the folder holding the library")
    p.set_defaults(func=run)


def paths():
    """(include folder, library folder, library file) of this install."""
    runtime = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runtime")
    name = "libxkern_runtime.dylib" if sys.platform == "darwin" else "libxkern_runtime.so"
    return os.path.join(runtime, "include"), runtime, os.path.join(runtime, name)


def run(args):
    include, libdir, library = paths()
    if not (args.cflags or args.libs or args.includedir or args.libdir):
        raise SystemExit("xkern config: give --cflags and/or --libs (or --includedir / --libdir)")
    if (args.libs or args.libdir) and not os.path.exists(library):
        raise SystemExit(f"xkern config: {library} is missing: this install was built without the engine "
                         "(it needs a C++ compiler and pybind11 at build time)")
    words = []
    if args.includedir:
        words.append(shlex.quote(include))
    if args.libdir:
        words.append(shlex.quote(libdir))
    if args.cflags:
        words.append("-I" + shlex.quote(include))
    if args.libs:
        words += ["-L" + shlex.quote(libdir), "-lxkern_runtime", "-Wl,-rpath," + shlex.quote(libdir)]
    print(" ".join(words))
    return 0
