"""torch model -> the runtime's graph (xkern.runtime.graph), shared by xkern.runtime.save
and xkern.onnx.export.  Importing this imports torch."""
from .fold import fold_batch_norms
from .trace import trace

__all__ = ["to_graph", "trace", "fold_batch_norms"]


def to_graph(model, input_shape=None, *, meta=None):
    """The Graph that computes model in eval mode, batch norms folded where possible.

    input_shape (B, C, H, W): optional example shape (records layer shapes; needed by
    view / reshape); meta: JSON-able facts stored with the graph.
    """
    graph = fold_batch_norms(trace(model, input_shape))
    graph.meta = dict(meta or {})
    return graph
