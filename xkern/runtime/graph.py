"""The runtime's network description: a small torch-free graph of named nodes.

A Graph holds one input value (a float32 batch (B, C, H, W)), a list of Nodes in
execution order and the name of the output value.  Each node reads values by name
(the graph input or earlier nodes) and produces the value named after itself.  The
batch axis is always axis 0 and no op mixes samples.

Ops and what a node of each holds (arrays are numpy, attrs JSON-able):

  conv2d              weight (Cout, Cin/groups, kh, kw), bias (Cout,) optional;
                      stride, padding, dilation (h, w) pairs, groups
                      (dense, grouped and depthwise convolution, torch's Conv2d)
  xconv2d             weight (Cout, D, kh, kw), index (Cout, D) int64, bias optional;
                      stride, padding, dilation, in_channels
  linear              weight (Cout, Cin), bias optional
  xlinear             weight (Cout, D), index (Cout, D) int64, bias optional; in_features
  affine              scale (C,), shift (C,): x * scale[c] + shift[c] per channel
                      (an eval-mode batch norm that could not be folded into a conv)
  relu, relu6         max(x, 0); min(max(x, 0), 6)
  maxpool2d           kernel, stride, padding, dilation (h, w) pairs, ceil_mode
  avgpool2d           kernel, stride, padding, ceil_mode, count_include_pad,
                      divisor (int or null: torch's divisor_override)
  adaptive_avgpool2d  output_size (h, w), an entry null keeps that input size
  add                 two inputs of one shape
  concat              n inputs joined along axis (not 0; negative counts from the end)
  flatten             start_dim (>= 1) .. end_dim (-1 or >= start_dim) merged into one axis
  reshape             shape: the sizes after the batch axis (one may be -1)

A node may also carry `shape`, the output shape seen when the model was traced
(batch included): informative only, and used by the ONNX exporter.
"""
from dataclasses import dataclass, field

import numpy as np

PAIR = "pair"                    # an [h, w] list of ints >= 0
POSITIVE_PAIR = "positive_pair"  # an [h, w] list of ints >= 1
# op -> (number of inputs (None: any >= 1), required arrays, optional arrays, attrs: kind)
OPS = {
    "conv2d": (1, ("weight",), ("bias",),
               {"stride": POSITIVE_PAIR, "padding": PAIR, "dilation": POSITIVE_PAIR, "groups": int}),
    "xconv2d": (1, ("weight", "index"), ("bias",),
                {"stride": POSITIVE_PAIR, "padding": PAIR, "dilation": POSITIVE_PAIR, "in_channels": int}),
    "linear": (1, ("weight",), ("bias",), {}),
    "xlinear": (1, ("weight", "index"), ("bias",), {"in_features": int}),
    "affine": (1, ("scale", "shift"), (), {}),
    "relu": (1, (), (), {}),
    "relu6": (1, (), (), {}),
    "maxpool2d": (1, (), (), {"kernel": POSITIVE_PAIR, "stride": POSITIVE_PAIR, "padding": PAIR,
                              "dilation": POSITIVE_PAIR, "ceil_mode": bool}),
    "avgpool2d": (1, (), (), {"kernel": POSITIVE_PAIR, "stride": POSITIVE_PAIR, "padding": PAIR,
                              "ceil_mode": bool, "count_include_pad": bool, "divisor": "int_or_none"}),
    "adaptive_avgpool2d": (1, (), (), {"output_size": "size_pair"}),
    "add": (2, (), (), {}),
    "concat": (None, (), (), {"axis": int}),
    "flatten": (1, (), (), {"start_dim": int, "end_dim": int}),
    "reshape": (1, (), (), {"shape": "int_list"}),
}


@dataclass
class Node:
    """One op: reads the values named in inputs, produces the value called name."""
    name: str
    op: str
    inputs: list
    attrs: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)
    shape: tuple = None


@dataclass
class Graph:
    """input: the input value's name; input_shape: (B, C, H, W), None where free;
    nodes in execution order; output: the name of the value returned; meta: JSON-able
    facts about the model (name, classes, input normalisation)."""
    input: str
    input_shape: tuple
    nodes: list
    output: str
    meta: dict = field(default_factory=dict)

    def consumers(self):
        """value name -> number of node inputs (plus the graph output) that read it."""
        counts = {self.input: 0, **{n.name: 0 for n in self.nodes}}
        for node in self.nodes:
            for name in node.inputs:
                counts[name] += 1
        counts[self.output] += 1
        return counts

    def summary(self):
        """The layer list as text, one node per line."""
        lines = []
        for node in self.nodes:
            sizes = ", ".join(f"{k} {tuple(a.shape)}" for k, a in node.arrays.items())
            shape = "" if node.shape is None else f" -> {tuple(node.shape)}"
            lines.append(f"{node.name}: {node.op}({', '.join(node.inputs)}){shape}"
                         + (f"  [{sizes}]" if sizes else ""))
        return "\n".join(lines)


def _ints(values, minimum):
    return all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) and i >= minimum
               for i in values)


def _is_pair(v, minimum):
    return isinstance(v, (list, tuple)) and len(v) == 2 and _ints(v, minimum)


# attribute kind -> whether a value is valid
_VALID = {
    PAIR: lambda v: _is_pair(v, 0),
    POSITIVE_PAIR: lambda v: _is_pair(v, 1),
    int: lambda v: _ints([v], -2**62),
    bool: lambda v: isinstance(v, bool),
    "int_or_none": lambda v: v is None or _ints([v], 1),
    "size_pair": lambda v: isinstance(v, (list, tuple)) and len(v) == 2
    and all(i is None or _ints([i], 1) for i in v),
    "int_list": lambda v: isinstance(v, (list, tuple)) and _ints(v, -1),
}


def _check_attr(node, key, kind, value):
    if not _VALID[kind](value):
        raise ValueError(f"node {node.name!r} ({node.op}): attribute {key!r} is invalid: {value!r}")


def _check_arrays(node):
    """Shapes and dtypes of a node's arrays agree with each other and its attrs."""
    a, where = node.arrays, f"node {node.name!r} ({node.op})"
    for key, arr in a.items():
        want = np.int64 if key == "index" else np.float32
        if not isinstance(arr, np.ndarray) or arr.dtype != want:
            raise ValueError(f"{where}: array {key!r} must be a {np.dtype(want)} ndarray")
    ndim = {"conv2d": 4, "xconv2d": 4, "linear": 2, "xlinear": 2, "affine": 1}.get(node.op)
    if ndim is None:
        return
    first = a["scale"] if node.op == "affine" else a["weight"]
    if first.ndim != ndim or 0 in first.shape:
        raise ValueError(f"{where}: weight must be a non-empty {ndim}-D array, got {first.shape}")
    n_out = first.shape[0]
    for key in ("bias", "shift"):
        if key in a and a[key].shape != (n_out,):
            raise ValueError(f"{where}: {key} must have shape ({n_out},), got {a[key].shape}")
    if "index" in a:
        n_in = node.attrs["in_channels" if node.op == "xconv2d" else "in_features"]
        index = a["index"]
        if index.shape != first.shape[:2]:
            raise ValueError(f"{where}: index must have shape {first.shape[:2]}, got {index.shape}")
        if index.min() < 0 or index.max() >= n_in:
            raise ValueError(f"{where}: index entries must lie in [0, {n_in})")
    if node.op == "conv2d" and (node.attrs["groups"] < 1 or n_out % node.attrs["groups"]):
        raise ValueError(f"{where}: groups={node.attrs['groups']} must divide Cout={n_out}")


def _check_axes(node):
    """Ops that name axes must leave the batch axis (0) alone."""
    at = node.attrs
    if node.op == "concat" and at["axis"] == 0:
        raise ValueError(f"node {node.name!r} (concat): axis must not be the batch axis 0")
    if node.op == "flatten" and (at["start_dim"] < 1 or (at["end_dim"] != -1 and at["end_dim"] < at["start_dim"])):
        raise ValueError(f"node {node.name!r} (flatten): need 1 <= start_dim <= end_dim or end_dim = -1, "
                         f"got {at['start_dim']}, {at['end_dim']}")
    if node.op == "reshape" and sum(1 for s in at["shape"] if s == -1) > 1:
        raise ValueError(f"node {node.name!r} (reshape): at most one -1 in shape {at['shape']}")


def check(graph):
    """Raise ValueError naming the first node that is malformed: unknown op, a read of a
    value not yet produced, missing or ill-typed attrs and arrays.  Returns graph."""
    known = {graph.input}
    for node in graph.nodes:
        if node.op not in OPS:
            raise ValueError(f"node {node.name!r}: unknown op {node.op!r} (known: {sorted(OPS)})")
        n_inputs, required, optional, attrs = OPS[node.op]
        if node.name in known:
            raise ValueError(f"node {node.name!r}: the name is used twice")
        if (n_inputs is None and not node.inputs) or (n_inputs is not None and len(node.inputs) != n_inputs):
            raise ValueError(f"node {node.name!r} ({node.op}) takes {n_inputs or '>= 1'} inputs, "
                             f"got {len(node.inputs)}")
        for name in node.inputs:
            if name not in known:
                raise ValueError(f"node {node.name!r} reads {name!r}, which no earlier node produces")
        missing = set(required) - set(node.arrays)
        extra = set(node.arrays) - set(required) - set(optional)
        if missing or extra:
            raise ValueError(f"node {node.name!r} ({node.op}): arrays {sorted(node.arrays)}, "
                             f"expected {list(required)} plus optionally {list(optional)}")
        for key, kind in attrs.items():
            if key not in node.attrs:
                raise ValueError(f"node {node.name!r} ({node.op}): attribute {key!r} is missing")
            _check_attr(node, key, kind, node.attrs[key])
        _check_arrays(node)
        _check_axes(node)
        known.add(node.name)
    if graph.output not in known:
        raise ValueError(f"the graph output {graph.output!r} is not produced by any node")
    return graph
