"""Optional dependencies: which extra of pyproject.toml installs each, and one way to say one is missing.

The core needs numpy only.  Commands and features that need more call `require` before any
work starts, so a missing package is one line naming the extra (`pip install 'xkern[train]'`),
not a traceback halfway through a run.  Features that can do without a package (progress bars
without tqdm, runs without plots) test `available` and say what they leave out.
"""
import importlib.util
import sys

# import name -> (pip package, the extra that installs it)
PACKAGES = {
    "torch": ("torch", "torch"),
    "tqdm": ("tqdm", "train"),
    "sklearn": ("scikit-learn", "train"),
    "matplotlib": ("matplotlib", "train"),
    "PIL": ("pillow", "train"),
    "onnx": ("onnx", "onnx"),
    "onnxruntime": ("onnxruntime", "onnx"),
    "numba": ("numba", "cuda"),
    "asv": ("asv", "bench"),
}


class MissingExtra(ImportError):
    """An optional package a command or feature needs is not installed; the message says which
    extra installs it."""


def available(module):
    """Whether `module` (a top-level import name) can be imported, without importing it.

    A module set to None in sys.modules counts as missing, as it does for `import`.
    """
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _install_hint(modules, extra):
    packages = " ".join(PACKAGES[m][0] for m in modules)
    extra = extra or PACKAGES[modules[0]][1]
    return f"pip install 'xkern[{extra}]' (or: pip install {packages})"


def missing_message(module, feature, extra=None):
    """"<feature> needs <package>, which is not installed: pip install 'xkern[<extra>]' ..."."""
    return (f"{feature} needs {PACKAGES[module][0]}, which is not installed: "
            f"{_install_hint([module], extra)}")


def require(feature, *modules, extra=None):
    """Raise MissingExtra unless every module is importable.

    feature: what needs them, as the user asked for it ("python -m xkern train", "--plot");
    extra: the extra to name (default: the first missing module's own extra).
    """
    missing = [m for m in modules if not available(m)]
    if missing:
        names = ", ".join(PACKAGES[m][0] for m in missing)
        verb = "is" if len(missing) == 1 else "are"
        raise MissingExtra(f"{feature} needs {names}, which {verb} not installed: "
                           f"{_install_hint(missing, extra)}")
