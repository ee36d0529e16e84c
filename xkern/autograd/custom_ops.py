"""The xkern kernels as torch.library custom ops.

torch.compile and torch.export treat each op as one opaque graph node whose output
shapes come from its fake implementation, so an X-Net traces without graph breaks.
The real implementation hands the tensors to xkern.ops, which validates them and
runs the kernels:
- CPU tensors go as zero-copy numpy views and the numpy results come back through
  torch.from_numpy (no copies either way);
- CUDA tensors go as (contiguous) tensors: the cuda backend reads
  __cuda_array_interface__, allocates its outputs like x (x.new_empty) and launches on
  torch's current stream.
With backend=None, xkern.ops picks "cpu" for host arrays and "cuda" for CUDA arrays.
Each op's body is also a plain function, run_<op>: xkern.autograd.functions calls it
directly in eager mode, where the dispatcher would cost more than a small layer's kernel.

The ops (output_mask flags the gradients wanted, in the order input, weight, bias;
a backward op returns only those, in that order, as a list):
    xkern::xconv2d_fwd(x, weight, index, bias?, stride, padding, dilation, backend?) -> out
    xkern::xconv2d_bwd(grad_out, x, weight, index, stride, padding, dilation, output_mask,
                       backend?) -> grads
    xkern::xlinear_fwd(x, weight, index, bias?, backend?) -> out
    xkern::xlinear_bwd(grad_out, x, weight, index, output_mask, backend?) -> grads

Under torch.autocast (CPU and CUDA) the forward ops cast their float16 / bfloat16 inputs to
float32 and compute and return float32 (torch.library.register_autocast, at the bottom), as
torch's own float32-only ops do.  Outside autocast the ops take float32 / float64 only;
xkern.autograd's Functions (and so xkern.nn) cast half-precision tensors themselves.
"""
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .. import ops
from ..ops.validate import conv_output_size
from ..ops.xconv2d import GRADS


def kernel_arg(t, name):
    """What xkern.ops takes for tensor t: a numpy view on CPU, the tensor itself on CUDA."""
    if t is None:
        return None
    if t.requires_grad:  # .numpy() and __cuda_array_interface__ refuse tensors that require grad
        t = t.detach()
    if not t.is_cpu:
        # The cuda backend adopts C-contiguous arrays only (xkern.ops copies host arrays when
        # needed, not device ones); torch copies on its own stream, and only when needed.
        return t.contiguous()
    try:
        return t.numpy()
    except TypeError:  # a dtype numpy lacks (bfloat16, float8, ...)
        raise TypeError(f"{name} has dtype {t.dtype}, which xkern's kernels do not take "
                        f"(float32 / float64 data, an integer index); for half precision use "
                        f"xkern.nn layers or xkern.autograd.xconv2d / xlinear, which compute "
                        f"it in float32, or call the op under torch.autocast") from None


def _tensor(a, x):
    """A kernel result as a tensor on x's device, sharing its memory."""
    if isinstance(a, np.ndarray):
        return torch.from_numpy(a)
    return torch.as_tensor(a, device=x.device)


def _wanted(output_mask):
    return tuple(name for name, wanted in zip(GRADS, output_mask) if wanted)


def _fake_grads(x, weight, output_mask):
    """Empty gradients shaped like the flagged inputs (input, weight, bias)."""
    likes = (x.shape, weight.shape, weight.shape[:1])
    return [x.new_empty(shape) for shape, wanted in zip(likes, output_mask) if wanted]


def run_xconv2d_fwd(x: Tensor, weight: Tensor, index: Tensor, bias: Optional[Tensor],
                stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                backend: Optional[str]) -> Tensor:
    """X-Conv forward: x (B, Cin, H, W), weight (Cout, D, kh, kw), index (Cout, D) -> (B, Cout, Ho, Wo)."""
    out = ops.xconv2d(kernel_arg(x, "x"), kernel_arg(weight, "weight"), kernel_arg(index, "index"),
                      kernel_arg(bias, "bias"), stride, padding, dilation, backend=backend)
    return _tensor(out, x)


xconv2d_fwd = torch.library.custom_op("xkern::xconv2d_fwd", mutates_args=())(run_xconv2d_fwd)


@xconv2d_fwd.register_fake
def _xconv2d_fwd_fake(x, weight, index, bias, stride, padding, dilation, backend):
    sizes = [conv_output_size(x.shape[2 + a], weight.shape[2 + a], stride[a], padding[a], dilation[a])
             for a in range(2)]
    return x.new_empty((x.shape[0], weight.shape[0], *sizes))


def run_xconv2d_bwd(grad_out: Tensor, x: Tensor, weight: Tensor, index: Tensor,
                stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                output_mask: Sequence[bool], backend: Optional[str]) -> List[Tensor]:
    """The X-Conv gradients flagged in output_mask, of the shapes of x, weight and (Cout,)."""
    grads = ops.xconv2d_backward(kernel_arg(grad_out, "grad_out"), kernel_arg(x, "x"), kernel_arg(weight, "weight"),
                                 kernel_arg(index, "index"), stride, padding, dilation,
                                 backend=backend, grads=_wanted(output_mask))
    return [_tensor(g, x) for g in grads if g is not None]


xconv2d_bwd = torch.library.custom_op("xkern::xconv2d_bwd", mutates_args=())(run_xconv2d_bwd)


@xconv2d_bwd.register_fake
def _xconv2d_bwd_fake(grad_out, x, weight, index, stride, padding, dilation, output_mask, backend):
    return _fake_grads(x, weight, output_mask)


def run_xlinear_fwd(x: Tensor, weight: Tensor, index: Tensor, bias: Optional[Tensor],
                backend: Optional[str]) -> Tensor:
    """X-Linear forward: x (B, Cin), weight (Cout, D), index (Cout, D) -> (B, Cout)."""
    out = ops.xlinear(kernel_arg(x, "x"), kernel_arg(weight, "weight"), kernel_arg(index, "index"),
                      kernel_arg(bias, "bias"), backend=backend)
    return _tensor(out, x)


xlinear_fwd = torch.library.custom_op("xkern::xlinear_fwd", mutates_args=())(run_xlinear_fwd)


@xlinear_fwd.register_fake
def _xlinear_fwd_fake(x, weight, index, bias, backend):
    return x.new_empty((x.shape[0], weight.shape[0]))


def run_xlinear_bwd(grad_out: Tensor, x: Tensor, weight: Tensor, index: Tensor,
                output_mask: Sequence[bool], backend: Optional[str]) -> List[Tensor]:
    """The X-Linear gradients flagged in output_mask, of the shapes of x, weight and (Cout,)."""
    grads = ops.xlinear_backward(kernel_arg(grad_out, "grad_out"), kernel_arg(x, "x"), kernel_arg(weight, "weight"),
                                 kernel_arg(index, "index"), backend=backend, grads=_wanted(output_mask))
    return [_tensor(g, x) for g in grads if g is not None]


xlinear_bwd = torch.library.custom_op("xkern::xlinear_bwd", mutates_args=())(run_xlinear_bwd)


@xlinear_bwd.register_fake
def _xlinear_bwd_fake(grad_out, x, weight, index, output_mask, backend):
    return _fake_grads(x, weight, output_mask)


# Autocast: cast half-precision inputs to float32 and compute in float32 (the kernels have no
# half-precision paths yet; BENCHMARKS.md, numerics).  float64 inputs stay float64.  Only the
# forward ops: their backward receives float32 (their output's dtype) and the float32 casts
# they saved.  A rule on the backward ops would also hide that they have no autograd formula,
# so a double backward would get no gradient instead of an error.
if hasattr(xconv2d_fwd, "register_autocast"):  # torch >= 2.5
    for _op in (xconv2d_fwd, xlinear_fwd):
        for _device in ("cpu", "cuda"):
            _op.register_autocast(_device, torch.float32)
