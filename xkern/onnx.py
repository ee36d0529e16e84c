"""Export to ONNX with standard operators only, so any ONNX runtime runs X-Nets.

    xkern.onnx.export(model, "model.onnx", (1, 3, 224, 224))

An X-Conv (weight (Cout, D, kh, kw), index (Cout, D)) becomes
    Gather(x, index.ravel(), axis=1)  -> (B, Cout*D, H, W): channel v*D + i is x[:, index[v, i]]
    Conv(group=Cout, weight)          -> group v convolves exactly its D gathered channels
which keeps the compact weights, at the cost of materialising the gathered tensor
(Cout*D / Cin times the size of x).  An X-Linear becomes Gather -> Reshape (B, Cout, D) -> Mul(weight)
-> ReduceSum(axis 2) -> Add(bias).  xconv="dense" instead scatters each X layer into the
equivalent dense weight (W_dense[v, index[v, i]] += weight[v, i]) and emits a plain
Conv / Gemm: a larger file that runs at dense speed.
Batch norms are folded into convolutions as in xkern.runtime; the others become Mul/Add.
The batch axis is symbolic ("batch"); C, H, W are fixed by input_shape.  meta (class
names, normalisation) goes to the model's metadata_props, each value as JSON.
"""
import json

import numpy as np

OPSET, IR_VERSION = 17, 8
XCONV_MODES = ("gather", "dense")


def export(model, path, input_shape, *, xconv="gather", meta=None):
    """Write the torch model (as in eval mode) to path as an ONNX model; returns the ModelProto.

    input_shape: (B, C, H, W) of an example batch (B is exported as a free axis).
    xconv: "gather" (Gather + grouped Conv, compact) or "dense" (dense-equivalent weights).
    """
    from ._extras import require
    require("xkern.onnx.export", "onnx")
    from .export import to_graph
    import onnx
    proto = graph_to_onnx(to_graph(model, input_shape, meta=meta), xconv=xconv)
    onnx.save(proto, path)
    return proto


def graph_to_onnx(graph, *, xconv="gather"):
    """The onnx ModelProto of a runtime Graph (xkern.runtime.graph); needs onnx, not torch."""
    from ._extras import require
    require("xkern.onnx.graph_to_onnx", "onnx")
    import onnx
    from onnx import TensorProto, helper
    if xconv not in XCONV_MODES:
        raise ValueError(f"xconv must be one of {XCONV_MODES}, got {xconv!r}")
    if any(s is None for s in graph.input_shape[1:]):
        raise ValueError("ONNX export needs the input's C, H and W: give input_shape")
    b = _Builder(graph, xconv)
    for node in graph.nodes:
        getattr(b, "op_" + node.op)(node)
    shape = lambda s: ["batch", *s[1:]] if s is not None else None
    out_shape = {n.name: n.shape for n in graph.nodes}.get(graph.output)
    proto = helper.make_model(
        helper.make_graph(
            b.nodes, "xkern",
            [helper.make_tensor_value_info(graph.input, TensorProto.FLOAT, shape(graph.input_shape))],
            [helper.make_tensor_value_info(graph.output, TensorProto.FLOAT, shape(out_shape))],
            b.initializers),
        opset_imports=[helper.make_opsetid("", OPSET)], producer_name="xkern")
    proto.ir_version = IR_VERSION
    helper.set_model_props(proto, {key: json.dumps(value) for key, value in graph.meta.items()})
    onnx.checker.check_model(proto)
    return proto


def _dense_weight(weight, index, n_in):
    """W_dense (Cout, Cin, ...) with W_dense[v, index[v, i]] += weight[v, i]."""
    dense = np.zeros((weight.shape[0], n_in) + weight.shape[2:], np.float64)
    rows = np.repeat(np.arange(weight.shape[0]), weight.shape[1])
    np.add.at(dense, (rows, index.ravel()), weight.reshape((-1,) + weight.shape[2:]))
    return dense.astype(np.float32)


def _bins(n, o):
    """(o, n) float32 matrix whose row i averages torch's adaptive pooling bin i of n inputs."""
    pool = np.zeros((o, n), np.float32)
    for i in range(o):
        lo, hi = i * n // o, -(-(i + 1) * n // o)
        pool[i, lo:hi] = 1 / (hi - lo)
    return pool


class _Builder:
    """Appends ONNX nodes and initializers for runtime nodes: op_<op> per runtime op."""

    def __init__(self, graph, xconv):
        from onnx import helper, numpy_helper
        self.helper, self.numpy_helper = helper, numpy_helper
        self.xconv = xconv
        self.nodes, self.initializers = [], []
        self.shapes = {graph.input: tuple(graph.input_shape), **{n.name: n.shape for n in graph.nodes}}

    def const(self, name, array):
        self.initializers.append(self.numpy_helper.from_array(np.asarray(array), name))
        return name

    def emit(self, op, inputs, output, **attrs):
        self.nodes.append(self.helper.make_node(op, list(inputs), [output], name=output, **attrs))

    def _conv(self, node, x, weight, group):
        at = node.attrs
        inputs = [x, self.const(f"{node.name}.weight", weight)]
        if "bias" in node.arrays:
            inputs.append(self.const(f"{node.name}.bias", node.arrays["bias"]))
        ph, pw = at["padding"]
        self.emit("Conv", inputs, node.name, kernel_shape=list(weight.shape[2:]),
                  strides=list(at["stride"]), pads=[ph, pw, ph, pw],
                  dilations=list(at["dilation"]), group=group)

    def op_conv2d(self, node):
        self._conv(node, node.inputs[0], node.arrays["weight"], node.attrs["groups"])

    def _gather(self, node):
        """Gather the D inputs of every output next to each other along axis 1."""
        index = self.const(f"{node.name}.index", node.arrays["index"].ravel())
        gathered = f"{node.name}.gathered"
        self.emit("Gather", [node.inputs[0], index], gathered, axis=1)
        return gathered

    def op_xconv2d(self, node):
        weight = node.arrays["weight"]
        if self.xconv == "dense":
            dense = _dense_weight(weight, node.arrays["index"], node.attrs["in_channels"])
            return self._conv(node, node.inputs[0], dense, 1)
        self._conv(node, self._gather(node), weight, weight.shape[0])

    def _gemm(self, node, weight):
        inputs = [node.inputs[0], self.const(f"{node.name}.weight", weight)]
        if "bias" in node.arrays:
            inputs.append(self.const(f"{node.name}.bias", node.arrays["bias"]))
        self.emit("Gemm", inputs, node.name, transB=1)

    def op_linear(self, node):
        self._gemm(node, node.arrays["weight"])

    def op_xlinear(self, node):
        weight, n = node.arrays["weight"], node.name
        if self.xconv == "dense":
            return self._gemm(node, _dense_weight(weight, node.arrays["index"], node.attrs["in_features"]))
        shape = self.const(f"{n}.shape", np.array([-1, *weight.shape], np.int64))
        self.emit("Reshape", [self._gather(node), shape], f"{n}.edges")
        self.emit("Mul", [f"{n}.edges", self.const(f"{n}.weight", weight)], f"{n}.products")
        axes = self.const(f"{n}.axes", np.array([2], np.int64))
        summed = n if "bias" not in node.arrays else f"{n}.sum"
        self.emit("ReduceSum", [f"{n}.products", axes], summed, keepdims=0)
        if "bias" in node.arrays:
            self.emit("Add", [summed, self.const(f"{n}.bias", node.arrays["bias"])], n)

    def op_affine(self, node):
        a, n = node.arrays, node.name
        self.emit("Mul", [node.inputs[0], self.const(f"{n}.scale", a["scale"][:, None, None])], f"{n}.scaled")
        self.emit("Add", [f"{n}.scaled", self.const(f"{n}.shift", a["shift"][:, None, None])], n)

    def op_relu(self, node):
        self.emit("Relu", node.inputs, node.name)

    def op_relu6(self, node):
        low = self.const(f"{node.name}.min", np.array(0, np.float32))
        high = self.const(f"{node.name}.max", np.array(6, np.float32))
        self.emit("Clip", [node.inputs[0], low, high], node.name)

    def _pads(self, at):
        ph, pw = at["padding"]
        return [ph, pw, ph, pw]

    def op_maxpool2d(self, node):
        at = node.attrs
        self.emit("MaxPool", node.inputs, node.name, kernel_shape=list(at["kernel"]),
                  strides=list(at["stride"]), pads=self._pads(at), dilations=list(at["dilation"]),
                  ceil_mode=int(at["ceil_mode"]))

    def op_avgpool2d(self, node):
        at = node.attrs
        if at["divisor"] is not None:
            raise NotImplementedError(f"node {node.name!r}: ONNX AveragePool has no divisor_override")
        self.emit("AveragePool", node.inputs, node.name, kernel_shape=list(at["kernel"]),
                  strides=list(at["stride"]), pads=self._pads(at), ceil_mode=int(at["ceil_mode"]),
                  count_include_pad=int(at["count_include_pad"]))

    def op_adaptive_avgpool2d(self, node):
        shape = self.shapes.get(node.inputs[0])
        size = node.attrs["output_size"]
        if shape is not None:
            size = [shape[2 + a] if s is None else s for a, s in enumerate(size)]
        if list(size) == [1, 1]:
            return self.emit("GlobalAveragePool", node.inputs, node.name)
        if shape is None:
            raise NotImplementedError(f"node {node.name!r}: adaptive average pooling to {size} "
                                      "needs the traced input size")
        # Separable and linear: out = P_h @ x @ P_w^T, row i of P averaging torch's bin
        # [floor(i * n / o), ceil((i + 1) * n / o)).
        n, t = node.name, f"{node.name}.rows"
        self.emit("MatMul", [node.inputs[0], self.const(f"{n}.pool_w", _bins(shape[3], size[1]).T)], t)
        self.emit("MatMul", [self.const(f"{n}.pool_h", _bins(shape[2], size[0])), t], n)

    def op_add(self, node):
        self.emit("Add", node.inputs, node.name)

    def op_concat(self, node):
        self.emit("Concat", node.inputs, node.name, axis=node.attrs["axis"])

    def op_flatten(self, node):
        start, end = node.attrs["start_dim"], node.attrs["end_dim"]
        if end == -1:
            target = [0] * start + [-1]
        elif node.shape is not None:
            target = [0] + list(node.shape[1:])
        else:
            raise NotImplementedError(f"node {node.name!r}: flatten up to axis {end} needs traced shapes")
        self._reshape(node, target)

    def op_reshape(self, node):
        self._reshape(node, [0] + list(node.attrs["shape"]))

    def _reshape(self, node, target):
        shape = self.const(f"{node.name}.shape", np.array(target, np.int64))
        self.emit("Reshape", [node.inputs[0], shape], node.name)
