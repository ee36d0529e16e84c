"""expanderize: turn a torch model's Conv2d / Linear layers into XConv2d / XLinear."""
import copy

import numpy as np
from torch import nn

from .expander_layer import resolve_degree
from .xconv2d import XConv2d
from .xlinear import XLinear


def _dense_layers(model):
    # Exact types only: a subclass may be read by its parent in other ways (MultiheadAttention
    # uses its out_proj Linear's weight directly), so swapping it would break the parent.
    return [(name, m) for name, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]


def _kept(layers, keep, model):
    """ids of the modules that keep is asking to leave dense."""
    keep = () if keep is None else (keep,) if isinstance(keep, str) else tuple(keep)
    names = dict(model.named_modules())
    kept = set()
    for word in keep:
        if word in ("first", "last"):
            if layers:
                kept.add(id(layers[0 if word == "first" else -1][1]))
        elif word in names:
            kept.add(id(names[word]))
        else:
            raise ValueError(f"keep entries must be 'first', 'last' or a module name of the model, "
                             f"got {word!r}")
    return kept


def _expander_twin(layer, degree, compression, method, seed):
    """The XConv2d / XLinear with layer's hyper-parameters, or None where it would not be sparser."""
    if isinstance(layer, nn.Linear):
        n_in = layer.in_features
        args = (layer.in_features, layer.out_features, layer.bias is not None)
        make = XLinear
    else:
        if layer.groups != 1 or layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            return None
        n_in = layer.in_channels
        args = (layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                layer.padding, layer.dilation, layer.bias is not None)
        make = XConv2d
    d = resolve_degree(n_in, degree, compression)
    if d >= n_in:
        return None
    twin = make(*args, degree=d, method=method, seed=seed)
    return twin.to(device=layer.weight.device, dtype=layer.weight.dtype).train(layer.training)


def expanderize(model, *, compression=None, degree=None, keep=("first", "last"), method="random",
                seed=None):
    """A copy of model with its Conv2d / Linear layers replaced by XConv2d / XLinear.

    Each replacement keeps its layer's hyper-parameters (channels, kernel size, stride,
    padding, dilation, bias) and reads D = degree, or max(1, n_in // compression),
    inputs per output, through a fresh graph and freshly initialised weights.
    Left dense: the layers named in keep ("first" / "last": the first / last Conv2d or
    Linear in module order, which for a CNN are the stem conv and the classifier; or a
    module name as in named_modules()), grouped and depthwise convs, convs with string
    padding or a padding_mode other than "zeros", subclasses of Conv2d / Linear, and
    layers where D >= n_in (no saving).  An int seed makes the result reproducible;
    each layer draws its own graph seed from it.  model itself is not modified.
    """
    resolve_degree(1, degree, compression)  # argument errors even for a model with nothing to convert
    model = copy.deepcopy(model)
    layers = _dense_layers(model)
    kept = _kept(layers, keep, model)
    rng = np.random.default_rng(seed)
    twins = {}
    for _, layer in layers:
        if id(layer) not in kept and id(layer) not in twins:
            twin = _expander_twin(layer, degree, compression, method, int(rng.integers(2**32)))
            if twin is not None:
                twins[id(layer)] = twin
    if id(model) in twins:
        return twins[id(model)]
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in twins:
                setattr(parent, name, twins[id(child)])
    return model
