"""Differentiable xconv2d / xlinear on torch tensors.

XConv2dFunction and XLinearFunction are the public autograd wrappers.  They only
save, dispatch and return: forward and backward each call one custom op
(xkern.autograd.custom_ops), and xkern.ops inside it validates and runs the kernels.
Dynamo traces an autograd.Function whose forward and backward are made of traceable
ops, so torch.compile(fullgraph=True) and torch.export see the custom ops and no
graph break.

One addition to that design: the Functions' backward, and their context setup, are
also registered as the forward ops' own autograd formula (torch.library.register_autograd,
at the bottom).  torch.export keeps the custom op but not the Function around it, so
without this an exported X-Net could not backpropagate.  Both paths run the same code.

The Functions take ctx in forward rather than defining setup_context: for a
setup_context Function, apply binds its arguments through inspect.signature on every
call, about 25 us, more than a tiny layer's kernel.
"""
import torch

from ..ops import get_backend
from ..ops.validate import pair
from . import custom_ops


def _require_tensors(weight, bias, backend):
    """What the custom ops' schemas need before xkern.ops can check the rest: tensors
    (autograd differentiates only those) and a backend that is a name (str) or None."""
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor when x is one, got {type(t).__name__}")
    if backend is not None and not isinstance(backend, str):
        # ops' own error for what is not a name.  Names are checked inside the op: loading
        # a backend here, during tracing, would break a torch.compile graph.
        get_backend(backend)


def _as_index(index):
    """Graphs often come as numpy arrays (xkern.graphs.expander); the custom ops take tensors."""
    return index if index is None or isinstance(index, torch.Tensor) else torch.as_tensor(index)


def _needed(ctx):
    """output_mask for the backward ops: gradients of (x, weight, bias), inputs 0, 1 and 3."""
    needs = ctx.needs_input_grad
    return [needs[0], needs[1], needs[3]]


def _unpack(grads, output_mask):
    """(grad_x, grad_weight, grad_bias) from the backward op's list of the flagged ones."""
    rest = iter(grads)
    return tuple(next(rest) if wanted else None for wanted in output_mask)


def _setup_conv(ctx, inputs, output):
    """What XConv2dFunction.backward reads: the setup_context of xkern::xconv2d_fwd."""
    x, weight, index, _, stride, padding, dilation, backend = inputs
    ctx.save_for_backward(x, weight, index)
    ctx.conv = (stride, padding, dilation)
    ctx.backend = backend


def _setup_linear(ctx, inputs, output):
    """What XLinearFunction.backward reads: the setup_context of xkern::xlinear_fwd."""
    x, weight, index, _, backend = inputs
    ctx.save_for_backward(x, weight, index)
    ctx.backend = backend


class XConv2dFunction(torch.autograd.Function):
    """apply(x, weight, index, bias, stride, padding, dilation, backend): stride, padding,
    dilation as [h, w] int lists; returns (B, Cout, Ho, Wo)."""

    @staticmethod
    def forward(ctx, x, weight, index, bias, stride, padding, dilation, backend):
        _setup_conv(ctx, (x, weight, index, bias, stride, padding, dilation, backend), None)
        return custom_ops.xconv2d_fwd(x, weight, index, bias, stride, padding, dilation, backend)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, index = ctx.saved_tensors
        mask = _needed(ctx)
        grads = custom_ops.xconv2d_bwd(grad_out, x, weight, index, *ctx.conv, mask, ctx.backend)
        grad_x, grad_weight, grad_bias = _unpack(grads, mask)
        return grad_x, grad_weight, None, grad_bias, None, None, None, None


class XLinearFunction(torch.autograd.Function):
    """apply(x, weight, index, bias, backend); returns (B, Cout)."""

    @staticmethod
    def forward(ctx, x, weight, index, bias, backend):
        _setup_linear(ctx, (x, weight, index, bias, backend), None)
        return custom_ops.xlinear_fwd(x, weight, index, bias, backend)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, index = ctx.saved_tensors
        mask = _needed(ctx)
        grads = custom_ops.xlinear_bwd(grad_out, x, weight, index, mask, ctx.backend)
        grad_x, grad_weight, grad_bias = _unpack(grads, mask)
        return grad_x, grad_weight, None, grad_bias, None


def xconv2d(x, weight, index, bias=None, stride=1, padding=0, dilation=1, *, backend=None):
    """xkern.xconv2d on torch tensors, differentiable in x, weight and bias.

    x (B, Cin, H, W); weight (Cout, D, kh, kw); index (Cout, D) integer tensor or array;
    bias (Cout,) or None.  Returns (B, Cout, Ho, Wo) on x's device.
    """
    _require_tensors(weight, bias, backend)
    conv = [list(pair(stride, "stride", 1)), list(pair(padding, "padding", 0)),
            list(pair(dilation, "dilation", 1))]
    return XConv2dFunction.apply(x, weight, _as_index(index), bias, *conv, backend)


def xlinear(x, weight, index, bias=None, *, backend=None):
    """xkern.xlinear on torch tensors, differentiable in x, weight and bias.

    x (B, Cin); weight (Cout, D); index (Cout, D); bias (Cout,) or None.  Returns (B, Cout).
    """
    _require_tensors(weight, bias, backend)
    return XLinearFunction.apply(x, weight, _as_index(index), bias, backend)


# See the module docstring: the same formulas make the ops differentiable on their own.
custom_ops.xconv2d_fwd.register_autograd(XConv2dFunction.backward, setup_context=_setup_conv)
custom_ops.xlinear_fwd.register_autograd(XLinearFunction.backward, setup_context=_setup_linear)
