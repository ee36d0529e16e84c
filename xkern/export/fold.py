"""Fold eval-mode batch norms (`affine` nodes) into the convolution before them.

conv then affine computes scale[v] * (sum_i w[v, i] * x_i + b[v]) + shift[v], which is
one convolution with weight rows scale[v] * w[v] and bias scale[v] * b[v] + shift[v]:
the same for a dense, grouped or X conv, since row v holds exactly output v's weights.
Only a conv read by nothing but the affine node is folded; the other affine nodes stay.
"""
import numpy as np

FOLDABLE = ("conv2d", "xconv2d")


def _fold(conv, affine):
    scale = affine.arrays["scale"].astype(np.float64)
    shift = affine.arrays["shift"].astype(np.float64)
    weight = conv.arrays["weight"].astype(np.float64)
    bias = conv.arrays.get("bias", np.zeros(weight.shape[0])).astype(np.float64)
    conv.arrays["weight"] = (weight * scale[:, None, None, None]).astype(np.float32)
    conv.arrays["bias"] = (bias * scale + shift).astype(np.float32)


def fold_batch_norms(graph):
    """graph with every foldable affine node merged into its conv (in place); returns graph."""
    consumers = graph.consumers()
    producer = {n.name: n for n in graph.nodes}
    renamed, kept = {}, []
    for node in graph.nodes:
        node.inputs = [renamed.get(name, name) for name in node.inputs]
        source = producer.get(node.inputs[0]) if node.op == "affine" else None
        if source is not None and source.op in FOLDABLE and consumers[source.name] == 1:
            _fold(source, node)
            renamed[node.name] = source.name
            consumers[source.name] = consumers[node.name]
            continue
        kept.append(node)
    graph.nodes = kept
    graph.output = renamed.get(graph.output, graph.output)
    return graph
