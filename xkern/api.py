"""Public entry points.  torch tensors go through autograd (xkern.autograd), every
other array (numpy, CUDA arrays) straight to xkern.ops.  torch is imported only
when a torch tensor arrives, so numpy users never load it.
"""
import sys

from . import ops


def _is_torch_tensor(a):
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(a, torch.Tensor)


def xconv2d(x, weight, index, bias=None, stride=1, padding=0, dilation=1, *, backend=None):
    """Expander convolution: out[b, v] = bias[v] + sum_i conv(x[b, index[v, i]], weight[v, i]).

    x (B, Cin, H, W); weight (Cout, D, kh, kw); index (Cout, D) integers in [0, Cin),
    repeats allowed (they add up); bias (Cout,) or None; stride, padding, dilation an
    int or an (h, w) pair.  Equals torch's conv2d(x, W_dense, bias, stride, padding,
    dilation) where W_dense[v, index[v, i]] += weight[v, i].  numpy in, numpy out
    (dtype of x); torch tensors in, a differentiable torch tensor out; CUDA arrays in,
    the same kind out.  backend: None (chosen by the inputs), "cpu", "reference" or "cuda".
    """
    if _is_torch_tensor(x):
        from .autograd import xconv2d as torch_xconv2d
        return torch_xconv2d(x, weight, index, bias, stride, padding, dilation, backend=backend)
    return ops.xconv2d(x, weight, index, bias, stride, padding, dilation, backend=backend)


def xlinear(x, weight, index, bias=None, *, backend=None):
    """Expander linear layer: out[b, v] = bias[v] + sum_i weight[v, i] * x[b, index[v, i]].

    x (B, Cin); weight (Cout, D); index (Cout, D); bias (Cout,) or None.  Same
    array-kind rules as xconv2d.
    """
    if _is_torch_tensor(x):
        from .autograd import xlinear as torch_xlinear
        return torch_xlinear(x, weight, index, bias, backend=backend)
    return ops.xlinear(x, weight, index, bias, backend=backend)


xconv2d_backward = ops.xconv2d_backward
xlinear_backward = ops.xlinear_backward
