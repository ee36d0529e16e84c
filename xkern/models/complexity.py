"""Parameter and multiply-accumulate counts of a model, counting only real weights."""
import itertools
import math
import numbers

import torch
from torch import nn
from torch.func import functional_call

from ..nn import XConv2d, XLinear

COUNTED = (nn.Conv2d, nn.Linear, XConv2d, XLinear)


def complexity(model, input_shape):
    """{"params", "macs", "flops"} of model for ONE sample.

    input_shape: (C, H, W), or (N, C, H, W) whose N is ignored: counts are per sample.
    params: every parameter of the model; an X layer's weight is compact, (Cout, D, kh, kw)
    or (Cout, D), and its index is a buffer, so only real weights count.
    macs: multiply-accumulates of the convolutions and fully connected layers (bias adds,
    BatchNorm, activations and pooling are not counted, as in the usual tables):
    per output element, prod(weight.shape[1:]), i.e. (Cin / groups) kh kw for Conv2d,
    D kh kw for XConv2d, Cin for Linear and D for XLinear.  flops = 2 macs.
    The forward pass runs on torch's meta device (shapes only, no arithmetic) through
    torch.func.functional_call with meta copies of the parameters and buffers, so it takes
    milliseconds at any resolution and leaves the model untouched (every submodule's mode is restored).
    """
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise TypeError(f"input_shape must be a tuple of ints, got {input_shape!r}") from None
    if len(shape) not in (3, 4) or not all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in shape):
        raise ValueError(f"input_shape must be (C, H, W) or (N, C, H, W) positive ints, got {input_shape!r}")
    sample = (1,) + tuple(int(s) for s in shape[-3:])
    macs = 0

    def count(module, inputs, output):
        nonlocal macs
        macs += output[0].numel() * math.prod(module.weight.shape[1:])

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, COUNTED)]
    tensors = itertools.chain(model.named_parameters(), model.named_buffers())
    meta = {name: torch.empty_like(t, device="meta") for name, t in tensors}
    first = next(model.parameters(), None)
    dtype = torch.get_default_dtype() if first is None else first.dtype
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            functional_call(model, meta, (torch.empty(sample, dtype=dtype, device="meta"),))
    finally:
        for m, training in modes:
            m.training = training
        for hook in hooks:
            hook.remove()
    params = sum(p.numel() for p in model.parameters())
    return {"params": params, "macs": macs, "flops": 2 * macs}
