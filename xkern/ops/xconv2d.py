"""xconv2d and its backward: validate, allocate, pick a backend, call its kernels."""
import numpy as np

from .adjacency import cached_reverse_adjacency
from .dispatch import pick_backend
from .validate import Conv2dArgs, grad_names, grad_out_array

GRADS = ("input", "weight", "bias")


def _conv_args(backend, x, weight, index, bias, stride, padding, dilation):
    return Conv2dArgs(x, weight, backend.host_index(index) if index is not None else None,
                      bias, stride, padding, dilation, adopt=backend.adopt)


def xconv2d(x, weight, index, bias=None, stride=1, padding=0, dilation=1, *, backend=None):
    """Expander convolution.

    x (B, Cin, H, W); weight (Cout, D, kh, kw); index (Cout, D) integers in [0, Cin);
    bias (Cout,) or None.  Returns (B, Cout, Ho, Wo), equal to torch's
    conv2d(x, W_dense, bias, stride, padding, dilation) with
    W_dense[v, index[v, i]] += weight[v, i].
    """
    be = pick_backend(backend, x)
    a = _conv_args(be, x, weight, index, bias, stride, padding, dilation)
    out = be.empty(a.out_shape, a.x.dtype, x)
    if a.x.shape[0]:
        be.kernels.xconv2d_fwd(a.x, a.weight, a.index, a.bias, out, a.stride, a.padding, a.dilation)
    return out


class PreparedXconv2d:
    """xconv2d for arguments of one geometry, validated once: x's shape, strides and dtype,
    weight's and bias's shapes, the graph (held as xkern.ops' cached copy), stride, padding
    and dilation.  Calling it with host arrays of that geometry checks only that they have
    it, then runs the kernel; other arguments take xconv2d's full checks.  For callers that
    run one layer again and again (xkern.autograd at inference keeps one per layer and input
    shape): on a small layer the checks cost as much as the kernel."""
    __slots__ = ("backend", "index", "geometry", "x_key", "weight_key", "bias_key", "out_shape", "run")

    def __init__(self, x, weight, index, bias=None, stride=1, padding=0, dilation=1, *, backend=None):
        be = pick_backend(backend, x)
        a = _conv_args(be, x, weight, index, bias, stride, padding, dilation)
        self.backend, self.index = be, a.index
        self.geometry = (a.stride, a.padding, a.dilation)
        self.x_key = (a.x.shape, a.x.strides, a.x.dtype)
        self.weight_key = (a.weight.shape, a.x.dtype)
        self.bias_key = None if a.bias is None else a.bias.shape
        self.out_shape = a.out_shape
        # the backend's own prepared call, where it has one: it checks in C what _fits checks
        prepare = getattr(be.kernels, "prepare_xconv2d_fwd", None)
        self.run = None if prepare is None else prepare(a.x, a.weight, a.index, a.bias, *self.geometry)

    def _fits(self, x, weight, bias):
        return (type(x) is np.ndarray and (x.shape, x.strides, x.dtype) == self.x_key
                and type(weight) is np.ndarray and (weight.shape, weight.dtype) == self.weight_key
                and weight.flags.c_contiguous
                and (bias is None if self.bias_key is None else
                     type(bias) is np.ndarray and bias.shape == self.bias_key and bias.dtype == self.x_key[2]
                     and bias.flags.c_contiguous))

    def __call__(self, x, weight, bias=None):
        """xconv2d(x, weight, index, bias, stride, padding, dilation) with the prepared index and
        geometry."""
        if self.run is not None:
            out = self.run(x, weight, bias)
            if out is not None:
                return out
        elif self.backend.name != "cuda" and self._fits(x, weight, bias):
            out = np.empty(self.out_shape, self.x_key[2])
            if self.out_shape[0]:
                self.backend.kernels.xconv2d_fwd(x, weight, self.index, bias, out, *self.geometry)
            return out
        return xconv2d(x, weight, self.index, bias, *self.geometry, backend=self.backend.name)


def xconv2d_backward(grad_out, x, weight, index, stride=1, padding=0, dilation=1, *,
                     backend=None, grads=GRADS):
    """Gradients of xconv2d: (grad_x, grad_weight, grad_bias).

    grad_out (B, Cout, Ho, Wo) is the gradient of the loss w.r.t. xconv2d's output.
    grads names which to compute ("input", "weight", "bias"); the others come back None.
    """
    grads = grad_names(grads, GRADS)
    be = pick_backend(backend, x)
    a = _conv_args(be, x, weight, index, None, stride, padding, dilation)
    g = grad_out_array(grad_out, a.out_shape, a.x.dtype, be.adopt)
    k = be.kernels
    empty_batch = a.x.shape[0] == 0
    grad_x = grad_w = grad_b = None
    if "input" in grads:
        grad_x = be.empty(a.x.shape, a.x.dtype, x)
        if not empty_batch:
            rev = cached_reverse_adjacency(a.index, a.x.shape[1])
            k.xconv2d_bwd_input(g, a.weight, a.index, rev, grad_x, a.stride, a.padding, a.dilation)
    if "weight" in grads:
        grad_w = be.empty(a.weight.shape, a.x.dtype, x)
        k.xconv2d_bwd_weight(g, a.x, a.index, grad_w, a.stride, a.padding, a.dilation)
    if "bias" in grads:
        grad_b = be.empty((a.weight.shape[0],), a.x.dtype, x)
        k.xconv2d_bwd_bias(g, grad_b)
    return grad_x, grad_w, grad_b
