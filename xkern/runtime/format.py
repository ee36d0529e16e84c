"""The .xk file: one uncompressed numpy .npz archive, readable without pickle.

Members:
  graph.json          a 0-d unicode array holding the JSON description below
  <node>.<array>      one .npy per node array (float32 weights, int64 graphs), e.g.
                      "features_3_0.weight", "features_3_0.index"

graph.json:
  {"format": "xkern-runtime", "version": 1,
   "input": "x", "input_shape": [null, 3, 224, 224],      (null: any size)
   "output": "classifier",
   "nodes": [{"name": "stem_0", "op": "conv2d", "inputs": ["x"],
              "attrs": {"stride": [2, 2], ...},
              "arrays": {"weight": "stem_0.weight", "bias": "stem_0.bias"},
              "shape": [1, 64, 112, 112]}, ...],            (shape: as traced, optional)
   "meta": {"model_name": ..., "classes": [...], "normalization": {"mean": [...], "std": [...]}}}

The node list is the layer list, in execution order; xkern.runtime.graph lists the ops.
Weights are stored as the model computes them in eval mode: X layers keep their compact
(Cout, D, kh, kw) weights and their (Cout, D) index, and each batch norm whose input is
a convolution read by nothing else is folded into that convolution's weight and bias
(the others become per-channel `affine` nodes).  A reader must reject a version it does
not know; this one reads version 1.
"""
import json
import zipfile

import numpy as np

from .graph import Graph, Node, check

FORMAT, VERSION = "xkern-runtime", 1
GRAPH_MEMBER = "graph.json"


def write(graph, path):
    """Write graph (checked first) to path, a file name or a binary file object."""
    check(graph)
    members, nodes = {}, []
    for node in graph.nodes:
        names = {}
        for key, arr in node.arrays.items():
            names[key] = f"{node.name}.{key}"
            members[names[key]] = arr
        nodes.append({"name": node.name, "op": node.op, "inputs": list(node.inputs),
                      "attrs": node.attrs, "arrays": names,
                      "shape": None if node.shape is None else [int(s) for s in node.shape]})
    doc = {"format": FORMAT, "version": VERSION, "input": graph.input,
           "input_shape": [None if s is None else int(s) for s in graph.input_shape],
           "output": graph.output, "nodes": nodes, "meta": graph.meta}
    members[GRAPH_MEMBER] = np.array(json.dumps(doc))
    if isinstance(path, (str, bytes)) or hasattr(path, "__fspath__"):
        # np.savez appends ".npz" to a file *name*; through a file object it keeps ours.
        with open(path, "wb") as f:
            np.savez(f, **members)
    else:
        np.savez(path, **members)


def read(path):
    """The Graph stored at path; ValueError when it is not a readable .xk file."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path!r} is not an xkern runtime file (.xk): {exc}") from None
    if not hasattr(archive, "files"):
        raise ValueError(f"{path!r} is not an xkern runtime file (.xk): it holds a single array")
    with archive:
        if GRAPH_MEMBER not in archive.files:
            raise ValueError(f"{path!r} is not an xkern runtime file (.xk): no {GRAPH_MEMBER}")
        try:
            doc = json.loads(str(archive[GRAPH_MEMBER][()]))
        except (OSError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path!r} is a corrupt .xk file: {exc}") from None
        except (ValueError, RecursionError) as exc:  # RecursionError: hostile nesting
            raise ValueError(f"{path!r}: {GRAPH_MEMBER} is not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"{path!r} is not an xkern runtime file (.xk)")
        if doc.get("version") != VERSION:
            raise ValueError(f"{path!r} has .xk version {doc.get('version')!r}; this xkern reads "
                             f"version {VERSION}")
        try:
            nodes = [Node(n["name"], n["op"], list(n["inputs"]), dict(n["attrs"]),
                          {k: archive[member] for k, member in n["arrays"].items()},
                          None if n.get("shape") is None else tuple(n["shape"]))
                     for n in doc["nodes"]]
            graph = Graph(doc["input"], tuple(doc["input_shape"]), nodes, doc["output"],
                          doc.get("meta", {}))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path!r}: malformed {GRAPH_MEMBER} ({exc!r})") from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # a member's bytes
            raise ValueError(f"{path!r} is a corrupt .xk file: {exc}") from None
    return check(graph)
