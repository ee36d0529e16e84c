"""Inference without torch: save a torch model to a .xk file, load it, predict.

    xkern.runtime.save(model, "model.xk")          # needs torch (traces the model)
    net = xkern.runtime.load("model.xk")           # the C++ engine; no torch
    logits = net.predict(x)                        # x float32 (B, C, H, W)

Loading and predicting import neither torch nor numba.  By default the network runs on
xkern's C++ engine (xkern.runtime.engine; the same engine C programs use through
xkern_runtime.h), on xkern.set_num_threads() threads, OMP_NUM_THREADS by default.
backend="cpu" and backend="reference" run the numpy executor (Program), op by op, with
convolutions on xkern's compiled CPU kernel or the numpy reference backend: the engine's
oracle.  The file format is described in xkern.runtime.format, the ops in
xkern.runtime.graph, the executor's implementations in xkern.runtime.ops.
"""
import io

from . import engine as _engine_module
from .engine import Engine
from .executor import Program
from .format import read as _read
from .format import write as _write
from .graph import Graph, Node

__all__ = ["save", "load", "Engine", "Program", "Graph", "Node"]
BACKENDS = ("engine", "cpu", "reference")


def save(model, path, input_shape=None, *, meta=None):
    """Write the torch model (computed as in eval mode) to path as a .xk file.

    input_shape: (B, C, H, W) of an example batch, optional; when given, the file
    records each layer's output shape and predict checks C, H and W against it.
    meta: JSON-able facts to keep in the file (class names, input normalisation).
    Returns the Graph written.
    """
    from ..export import to_graph  # torch is needed to read the model, not to run it
    graph = to_graph(model, input_shape, meta=meta)
    _write(graph, path)
    return graph


def load(path, *, backend=None):
    """The network stored at path (a .xk file written by save, or a binary file object).

    backend: "engine" (the C++ engine: an Engine), "cpu" (the numpy executor on the
    compiled kernels: a Program), "reference" (the numpy executor on the numpy reference
    backend: a Program) or None (the engine when it is built, else cpu, else reference).
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    if backend is None:
        backend = "engine" if _engine_module.available() else None
    if backend != "engine":
        return Program(_read(path), backend=backend)
    if isinstance(path, (str, bytes)) or hasattr(path, "__fspath__"):
        graph = _read(path)  # the checks and messages of the numpy reader
        with open(path, "rb") as f:
            data = f.read()
    else:
        data = path.read()
        graph = _read(io.BytesIO(data))
    return Engine(graph, data)
