"""Inference without torch: save a torch model to a .xk file, load it, predict with numpy.

    xkern.runtime.save(model, "model.xk")          # needs torch (traces the model)
    net = xkern.runtime.load("model.xk")           # numpy + xkern's compiled kernels only
    logits = net.predict(x)                        # x float32 (B, C, H, W)

Loading and predicting import neither torch nor numba.  Convolutions (dense, grouped,
depthwise, X) and X-Linear layers run on xkern's compiled CPU kernel (the numpy reference
backend where it is not built), on xkern.set_num_threads() threads, OMP_NUM_THREADS by
default; dense 1x1 convolutions and linear layers are numpy BLAS products, whose threads
follow OMP_NUM_THREADS / OPENBLAS_NUM_THREADS only.  The file format is described in
xkern.runtime.format, the ops in xkern.runtime.graph, their implementations in
xkern.runtime.ops.
"""
from .executor import Program
from .format import read as _read
from .format import write as _write
from .graph import Graph, Node

__all__ = ["save", "load", "Program", "Graph", "Node"]


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
    """The Program stored at path (a .xk file written by save).

    backend: "cpu" (compiled kernels), "reference" (numpy) or None (cpu when built).
    """
    return Program(_read(path), backend=backend)
