"""torch model -> xkern.runtime.graph.Graph, through torch.fx.

The model is traced symbolically (XConv2d / XLinear and torch.nn's modules are leaves),
so a forward with Python control flow that does not depend on values (residual adds,
concatenations, Sequentials) becomes a flat node list.  Each fx node maps to at most
one graph node; identities (Dropout, Identity, .contiguous()) map to their input.
Batch norms become `affine` nodes with eval-mode statistics; xkern.export.fold then
folds them into convolutions.
"""
import operator

import numpy as np
import torch
import torch.fx
from torch.fx.passes.shape_prop import ShapeProp
import torch.nn.functional as F
from torch import nn

from ..nn import XConv2d, XLinear
from ..runtime.graph import Graph, Node

_IDENTITY_MODULES = (nn.Dropout, nn.Identity)
_ADD = (operator.add, operator.iadd, torch.add)
_CAT = (torch.cat, torch.concat)
_IDENTITY_FUNCTIONS = (F.dropout, torch.dropout)


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return isinstance(m, (XConv2d, XLinear)) or super().is_leaf_module(m, qualname)


def _numpy(t, dtype=np.float32):
    return np.ascontiguousarray(t.detach().cpu().numpy().astype(dtype))


def _pair(v):
    return [int(v), int(v)] if isinstance(v, int) else [int(i) for i in v]


class _Translator:
    """Walks an fx graph, appending runtime Nodes; value[fx node] = runtime value name."""

    def __init__(self, gm, batch):
        self.modules = dict(gm.named_modules())
        self.batch = batch
        self.nodes, self.value = [], {}

    def fail(self, node, what):
        raise NotImplementedError(f"xkern.export cannot translate {node.format_node()}: {what}")

    def shape(self, node):
        meta = node.meta.get("tensor_meta")
        return None if meta is None else tuple(meta.shape)

    def emit(self, node, op, inputs, attrs=None, arrays=None):
        for i in inputs:
            if not isinstance(i, torch.fx.Node) or i not in self.value:
                self.fail(node, f"input {i!r} is not a tensor computed by the model")
        shape = self.shape(node)
        if shape is not None:
            shape = (self.batch,) + shape[1:]
        self.nodes.append(Node(node.name, op, [self.value[i] for i in inputs], attrs or {},
                               arrays or {}, shape))
        self.value[node] = node.name

    def alias(self, node, source):
        self.value[node] = self.value[source]

    def ndim(self, node, x):
        shape = self.shape(x)
        if shape is None:
            self.fail(node, "a negative axis needs the input's rank: give input_shape")
        return len(shape)

    # ------------------------------------------------------------ modules
    def module(self, node):
        m, x = self.modules[node.target], node.args[0]
        if isinstance(m, _IDENTITY_MODULES):
            return self.alias(node, x)
        if isinstance(m, XConv2d):
            return self.emit(node, "xconv2d", [x], dict(
                stride=_pair(m.stride), padding=_pair(m.padding), dilation=_pair(m.dilation),
                in_channels=m.in_channels), self.weights(m, index=True))
        if isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros" or isinstance(m.padding, str) and m.padding != "valid":
                self.fail(node, f"padding={m.padding!r}, padding_mode={m.padding_mode!r} "
                          "(only explicit zero padding is supported)")
            padding = [0, 0] if isinstance(m.padding, str) else _pair(m.padding)
            return self.emit(node, "conv2d", [x], dict(
                stride=_pair(m.stride), padding=padding, dilation=_pair(m.dilation), groups=m.groups),
                self.weights(m))
        if isinstance(m, XLinear):
            return self.emit(node, "xlinear", [x], dict(in_features=m.in_features),
                             self.weights(m, index=True))
        if isinstance(m, nn.Linear):
            return self.emit(node, "linear", [x], {}, self.weights(m))
        if isinstance(m, nn.BatchNorm2d):
            return self.batch_norm(node, m, x)
        if isinstance(m, nn.ReLU):
            return self.emit(node, "relu", [x])
        if isinstance(m, nn.ReLU6):
            return self.emit(node, "relu6", [x])
        if isinstance(m, nn.MaxPool2d):
            if m.return_indices:
                self.fail(node, "return_indices=True")
            return self.max_pool(node, x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
        if isinstance(m, nn.AvgPool2d):
            return self.avg_pool(node, x, m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                 m.count_include_pad, m.divisor_override)
        if isinstance(m, nn.AdaptiveAvgPool2d):
            return self.adaptive_avg_pool(node, x, m.output_size)
        if isinstance(m, nn.Flatten):
            return self.flatten(node, x, m.start_dim, m.end_dim)
        self.fail(node, f"module type {type(m).__name__} is not supported")

    def weights(self, m, index=False):
        arrays = {"weight": _numpy(m.weight)}
        if m.bias is not None:
            arrays["bias"] = _numpy(m.bias)
        if index:
            arrays["index"] = _numpy(m.index, np.int64)
        return arrays

    def batch_norm(self, node, m, x):
        if m.running_mean is None:
            self.fail(node, "a batch norm without running statistics normalises by the batch's own")
        mean = m.running_mean.detach().double().cpu().numpy()
        var = m.running_var.detach().double().cpu().numpy()
        gamma = np.ones_like(mean) if m.weight is None else m.weight.detach().double().cpu().numpy()
        beta = np.zeros_like(mean) if m.bias is None else m.bias.detach().double().cpu().numpy()
        scale = gamma / np.sqrt(var + m.eps)
        self.emit(node, "affine", [x], {}, {"scale": scale.astype(np.float32),
                                            "shift": (beta - mean * scale).astype(np.float32)})

    def max_pool(self, node, x, kernel, stride, padding, dilation, ceil_mode):
        stride = kernel if stride is None or stride == [] else stride
        self.emit(node, "maxpool2d", [x], dict(kernel=_pair(kernel), stride=_pair(stride),
                                               padding=_pair(padding), dilation=_pair(dilation),
                                               ceil_mode=bool(ceil_mode)))

    def avg_pool(self, node, x, kernel, stride, padding, ceil_mode, count_include_pad, divisor):
        stride = kernel if stride is None or stride == [] else stride
        self.emit(node, "avgpool2d", [x], dict(kernel=_pair(kernel), stride=_pair(stride),
                                               padding=_pair(padding), ceil_mode=bool(ceil_mode),
                                               count_include_pad=bool(count_include_pad),
                                               divisor=None if divisor is None else int(divisor)))

    def adaptive_avg_pool(self, node, x, size):
        size = [size, size] if size is None or isinstance(size, int) else list(size)
        self.emit(node, "adaptive_avgpool2d", [x],
                  dict(output_size=[None if s is None else int(s) for s in size]))

    def flatten(self, node, x, start, end):
        rank = None if start >= 0 and end >= -1 else self.ndim(node, x)
        start = start + rank if start < 0 else start
        end = -1 if end == -1 else end + rank if end < 0 else end
        if start < 1:
            self.fail(node, "flattening the batch axis")
        if rank is not None and end == rank - 1:
            end = -1
        self.emit(node, "flatten", [x], dict(start_dim=int(start), end_dim=int(end)))

    # ------------------------------------------------------------ functions and methods
    def function(self, node):
        f, args, kw = node.target, node.args, node.kwargs
        if f in _ADD:
            if len(args) != 2 or kw.get("alpha", 1) != 1:
                self.fail(node, "only a + b of two tensors is supported")
            return self.emit(node, "add", list(args))
        if f in _CAT:
            tensors, dim = args[0], args[1] if len(args) > 1 else kw.get("dim", 0)
            rank = None if dim >= 0 or self.shape(tensors[0]) is None else len(self.shape(tensors[0]))
            dim = dim + rank if rank is not None else dim  # else negative, resolved when run
            if dim == 0:
                self.fail(node, "joining along the batch axis")
            return self.emit(node, "concat", list(tensors), dict(axis=int(dim)))
        if f in _IDENTITY_FUNCTIONS:
            return self.alias(node, args[0])
        if f is torch.flatten:
            return self.flatten(node, args[0], *self.params(node, args[1:], kw, start_dim=0, end_dim=-1))
        if f in (F.relu, torch.relu):
            return self.emit(node, "relu", [args[0]])
        if f is F.relu6:
            return self.emit(node, "relu6", [args[0]])
        if f is F.adaptive_avg_pool2d:
            return self.adaptive_avg_pool(node, args[0], *self.params(node, args[1:], kw, output_size=None))
        if f is F.max_pool2d:
            return self.max_pool(node, args[0], *self.params(
                node, args[1:], kw, kernel_size=None, stride=None, padding=0, dilation=1,
                ceil_mode=False, return_indices=False)[:5])
        if f is F.avg_pool2d:
            return self.avg_pool(node, args[0], *self.params(
                node, args[1:], kw, kernel_size=None, stride=None, padding=0, ceil_mode=False,
                count_include_pad=True, divisor_override=None))
        self.fail(node, "this function is not supported")

    def params(self, node, args, kw, **defaults):
        """Positional + keyword arguments as a list in the order of defaults."""
        names = list(defaults)
        values = dict(defaults, **dict(zip(names, args)), **kw)
        unknown = set(values) - set(names)
        if unknown or len(args) > len(names):
            self.fail(node, f"unexpected arguments {sorted(unknown)}")
        if values.get("return_indices"):
            self.fail(node, "return_indices=True")
        return [values[n] for n in names]

    def method(self, node):
        name, x = node.target, node.args[0]
        if name == "contiguous":
            return self.alias(node, x)
        if name == "size":
            return None  # only view / reshape may read it, and they take shapes from the trace
        if name == "flatten":
            return self.flatten(node, x, *self.params(node, node.args[1:], node.kwargs,
                                                      start_dim=0, end_dim=-1))
        if name in ("relu", "relu_"):
            return self.emit(node, "relu", [x])
        if name in ("view", "reshape"):
            shape, shape_in = self.shape(node), self.shape(x)
            if shape is None:
                self.fail(node, "view / reshape needs the traced shapes: give input_shape")
            if shape[0] != shape_in[0]:
                self.fail(node, f"the batch axis changes ({shape_in} -> {shape})")
            return self.emit(node, "reshape", [x], dict(shape=[int(s) for s in shape[1:]]))
        self.fail(node, f"the tensor method {name!r} is not supported")

    def run(self, graph):
        inputs = [n for n in graph.nodes if n.op == "placeholder"]
        if len(inputs) != 1:
            raise NotImplementedError(f"xkern.export needs a model with one input, got {len(inputs)}")
        output = None
        for node in graph.nodes:
            if node.op == "placeholder":
                self.value[node] = node.name
            elif node.op == "call_module":
                self.module(node)
            elif node.op == "call_function":
                self.function(node)
            elif node.op == "call_method":
                self.method(node)
            elif node.op == "output":
                output = node.args[0]
                if not isinstance(output, torch.fx.Node):
                    self.fail(node, "the model must return one tensor")
            else:
                self.fail(node, f"fx op {node.op!r} (constants / attributes read in forward)")
        return inputs[0].name, self.value[output]


def trace(model, input_shape=None):
    """Graph of model as computed in eval mode (batch norms not yet folded).

    input_shape (B, C, H, W): an example batch size; when given, the model runs once on
    zeros (in eval mode, without gradients, on its own device) to record every shape.
    """
    gm = torch.fx.GraphModule(model, _Tracer().trace(model))
    batch = None
    if input_shape is not None:
        input_shape = tuple(int(s) for s in input_shape)
        if len(input_shape) != 4 or min(input_shape) < 1:
            raise ValueError(f"input_shape must be (B, C, H, W) of positive sizes, got {input_shape}")
        batch = input_shape[0]
        param = next(model.parameters(), None)
        device = param.device if param is not None else "cpu"
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            with torch.no_grad():
                # batch 2 at least, so a reshape that mixes samples shows up in the batch axis
                example = torch.zeros((max(batch, 2),) + input_shape[1:], device=device)
                ShapeProp(gm).propagate(example)
        finally:
            for m, mode in modes:
                m.training = mode
    translator = _Translator(gm, batch)
    name, output = translator.run(gm.graph)
    shape = (None,) + tuple(input_shape[1:]) if input_shape is not None else (None,) * 4
    return Graph(name, shape, translator.nodes, output)
