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

Half precision: the kernels compute in float32 or float64.  The Functions cast float16 /
bfloat16 inputs to float32, run the float32 kernels (float32 accumulation), and return
float32 under torch.autocast (the custom ops' own autocast rule: compute and return
float32) or else the promoted dtype of x and weight, e.g. bfloat16 for a bfloat16 layer
on bfloat16 data.  Gradients come back in each input's dtype.
"""
import weakref

import torch

from .. import ops
from ..ops import get_backend
from ..ops.validate import pair
from . import custom_ops
from .custom_ops import kernel_arg


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


# Tensor types whose ops may skip the dispatcher (subclasses such as FakeTensor may not).
_PLAIN = (torch.Tensor, torch.nn.Parameter)
_dispatch_modes = getattr(torch._C, "_len_torch_dispatch_stack", lambda: 1)


def _direct(*tensors):
    """True when the custom ops' bodies (custom_ops.run_*) may run without torch's dispatcher,
    which costs more than a small layer's kernel: eager mode on plain tensors, with no
    dispatch mode (FakeTensor, FlopCounterMode, ...) that must see the op.  Autocast needs no
    dispatcher here: the Functions cast half precision themselves and the ops' autocast rule
    leaves float32 / float64 as they are."""
    if torch.compiler.is_compiling() or _dispatch_modes():
        return False
    for t in tensors:
        if t is not None and (type(t) not in _PLAIN or t.is_meta):
            return False
    return True


def _direct_backward(*tensors):
    """_direct for a backward: with create_graph (grad mode on) the op runs, and its missing
    autograd formula refuses a double backward by name."""
    return not torch.is_grad_enabled() and _direct(*tensors)


def _inference(*tensors):
    """True when a call needs no autograd record (grad mode off, or no input requiring grad) and
    may skip the dispatcher (_direct): it then runs without an autograd Function, whose apply
    costs about as much as the dispatcher."""
    return _direct(*tensors) and not (torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in tensors))


class _Record:
    """What _to_float32 records, for a call made without an autograd Function."""
    __slots__ = ("dtypes", "out_dtype")


_HALF = (torch.float16, torch.bfloat16)


def _float32(t):
    """t as float32 when it is float16 / bfloat16 (the kernels take float32 or float64), else t."""
    return t.float() if t is not None and t.dtype in _HALF else t


def _to_float32(ctx, x, weight, bias):
    """(x, weight, bias) for the kernels; ctx remembers the dtypes the gradients go back to and
    the output's dtype (None: as computed)."""
    if x.dtype not in _HALF and weight.dtype not in _HALF and (bias is None or bias.dtype not in _HALF):
        ctx.dtypes = ctx.out_dtype = None
        return x, weight, bias
    ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
    # Under autocast the custom ops compute and return float32 (custom_ops.py); outside it a
    # half-precision layer returns its own precision, as torch's Conv2d and Linear do, and like
    # them takes one dtype.
    if torch.is_autocast_enabled(x.device.type):
        ctx.out_dtype = None
    elif x.dtype == weight.dtype and (bias is None or bias.dtype == x.dtype):
        ctx.out_dtype = x.dtype
    else:
        bias_text = "" if bias is None else f", bias {bias.dtype}"
        raise TypeError(f"x has dtype {x.dtype}, weight {weight.dtype}{bias_text}: outside "
                        f"torch.autocast an X layer takes one dtype; convert the layer and its "
                        f"input alike (layer.to(dtype)) or run it under torch.autocast")
    return _float32(x), _float32(weight), _float32(bias)


def _from_float32(ctx, out):
    return out if ctx.out_dtype is None else out.to(ctx.out_dtype)


def _grads_back(ctx, grads):
    """The float32 gradients of half-precision inputs in those inputs' dtypes."""
    dtypes = getattr(ctx, "dtypes", None)  # unset when torch.export's op-level autograd runs
    if dtypes is None:
        return grads
    return tuple(g if g is None or d is None else g.to(d) for g, d in zip(grads, dtypes))


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
        x, weight, bias = _to_float32(ctx, x, weight, bias)
        _setup_conv(ctx, (x, weight, index, bias, stride, padding, dilation, backend), None)
        op = custom_ops.run_xconv2d_fwd if _direct(x, weight, index, bias) else custom_ops.xconv2d_fwd
        out = op(x, weight, index, bias, stride, padding, dilation, backend)
        return _from_float32(ctx, out)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, index = ctx.saved_tensors
        mask = _needed(ctx)
        grad_out = _float32(grad_out)
        op = custom_ops.run_xconv2d_bwd if _direct_backward(grad_out, x, weight, index) else custom_ops.xconv2d_bwd
        grads = op(grad_out, x, weight, index, *ctx.conv, mask, ctx.backend)
        grad_x, grad_weight, grad_bias = _grads_back(ctx, _unpack(grads, mask))
        return grad_x, grad_weight, None, grad_bias, None, None, None, None


class XLinearFunction(torch.autograd.Function):
    """apply(x, weight, index, bias, backend); returns (B, Cout)."""

    @staticmethod
    def forward(ctx, x, weight, index, bias, backend):
        x, weight, bias = _to_float32(ctx, x, weight, bias)
        _setup_linear(ctx, (x, weight, index, bias, backend), None)
        op = custom_ops.run_xlinear_fwd if _direct(x, weight, index, bias) else custom_ops.xlinear_fwd
        return _from_float32(ctx, op(x, weight, index, bias, backend))

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, index = ctx.saved_tensors
        mask = _needed(ctx)
        grad_out = _float32(grad_out)
        op = custom_ops.run_xlinear_bwd if _direct_backward(grad_out, x, weight, index) else custom_ops.xlinear_bwd
        grads = op(grad_out, x, weight, index, mask, ctx.backend)
        grad_x, grad_weight, grad_bias = _grads_back(ctx, _unpack(grads, mask))
        return grad_x, grad_weight, None, grad_bias, None


def xconv2d(x, weight, index, bias=None, stride=1, padding=0, dilation=1, *, backend=None):
    """xkern.xconv2d on torch tensors, differentiable in x, weight and bias.

    x (B, Cin, H, W); weight (Cout, D, kh, kw); index (Cout, D) integer tensor or array;
    bias (Cout,) or None.  Returns (B, Cout, Ho, Wo) on x's device.

    Inference calls on CPU tensors remember a graph by its index tensor and torch's version
    counter of it: change an index in place through torch (index[...] = ..., copy_,
    load_state_dict), not through .data or a numpy view, which the counter does not see.
    """
    _require_tensors(weight, bias, backend)
    geometry = (pair(stride, "stride", 1), pair(padding, "padding", 0), pair(dilation, "dilation", 1))
    index = _as_index(index)
    if _inference(x, weight, index, bias):
        record = _Record()
        x, weight, bias = _to_float32(record, x, weight, bias)
        if x.is_cpu and index.is_cpu:
            return _from_float32(record, _prepared_xconv2d(x, weight, index, bias, geometry, backend))
        return _from_float32(record, custom_ops.run_xconv2d_fwd(x, weight, index, bias, *map(list, geometry),
                                                                backend))
    return XConv2dFunction.apply(x, weight, index, bias, *map(list, geometry), backend)


# Inference on CPU tensors runs through an ops.PreparedXconv2d per layer and input geometry,
# found by the index tensor (its id, checked through a weak reference, which also drops the
# entry when the tensor goes) and torch's version counter of it (which counts in-place changes
# made through torch: index[...] = ..., copy_, load_state_dict).  At most PREPARED_SIZE
# entries, the oldest dropped first.
PREPARED_SIZE = 512
_prepared = {}


def _prepared_xconv2d(x, weight, index, bias, geometry, backend):
    """xconv2d's forward on CPU tensors without autograd, through the prepared call of
    (index, geometry, x's and the parameters' shapes and dtypes)."""
    key = (id(index), index._version, x.shape, x.stride(), x.dtype, weight.shape, weight.dtype,
           None if bias is None else (bias.shape, bias.dtype), geometry, backend)
    entry = _prepared.get(key)
    if entry is None or entry[0]() is not index:
        prepared = ops.PreparedXconv2d(kernel_arg(x, "x"), kernel_arg(weight, "weight"), kernel_arg(index, "index"),
                                       kernel_arg(bias, "bias"), *geometry, backend=backend)
        if len(_prepared) >= PREPARED_SIZE:
            _prepared.pop(next(iter(_prepared)), None)
        entry = _prepared[key] = (weakref.ref(index, lambda _, key=key: _prepared.pop(key, None)), prepared,
                                  _Views(), _Views())
    views = entry[2].of(weight, "weight"), None if bias is None else entry[3].of(bias, "bias")
    return torch.from_numpy(entry[1](x.detach().numpy() if x.requires_grad else x.numpy(), *views))


class _Views:
    """The numpy view of the last parameter tensor seen, while that tensor (weakly held) keeps its
    memory: layers call again and again with the same weight, whose .detach().numpy() costs a
    microsecond.  The view shares the tensor's memory, so it sees in-place changes; assigning
    .data moves the memory, and the next call takes a new view."""
    __slots__ = ("ref", "ptr", "strides", "view")

    def __init__(self):
        self.ref = self.ptr = self.strides = self.view = None

    def of(self, t, name):
        ref = self.ref
        if ref is None or ref() is not t or t.data_ptr() != self.ptr or t.stride() != self.strides:
            self.view = kernel_arg(t, name)
            self.ref, self.ptr, self.strides = weakref.ref(t), t.data_ptr(), t.stride()
        return self.view


def xlinear(x, weight, index, bias=None, *, backend=None):
    """xkern.xlinear on torch tensors, differentiable in x, weight and bias.

    x (B, Cin); weight (Cout, D); index (Cout, D); bias (Cout,) or None.  Returns (B, Cout).
    """
    _require_tensors(weight, bias, backend)
    index = _as_index(index)
    if _inference(x, weight, index, bias):
        record = _Record()
        x, weight, bias = _to_float32(record, x, weight, bias)
        return _from_float32(record, custom_ops.run_xlinear_fwd(x, weight, index, bias, backend))
    return XLinearFunction.apply(x, weight, index, bias, backend)


# See the module docstring: the same formulas make the ops differentiable on their own.
custom_ops.xconv2d_fwd.register_autograd(XConv2dFunction.backward, setup_context=_setup_conv)
custom_ops.xlinear_fwd.register_autograd(XLinearFunction.backward, setup_context=_setup_linear)
