"""xlinear and its backward: validate, allocate, pick a backend, call its kernels."""
from .adjacency import cached_reverse_adjacency
from .dispatch import pick_backend
from .validate import LinearArgs, grad_names, grad_out_array
from .xconv2d import GRADS


def _linear_args(backend, x, weight, index, bias):
    return LinearArgs(x, weight, backend.host_index(index) if index is not None else None,
                      bias, adopt=backend.adopt)


def xlinear(x, weight, index, bias=None, *, backend=None):
    """Expander linear layer.

    x (B, Cin); weight (Cout, D); index (Cout, D) integers in [0, Cin); bias (Cout,)
    or None.  Returns (B, Cout): out[b, v] = bias[v] + sum_i weight[v, i] * x[b, index[v, i]].
    """
    be = pick_backend(backend, x)
    a = _linear_args(be, x, weight, index, bias)
    out = be.empty(a.out_shape, a.x.dtype, x)
    if a.x.shape[0]:
        be.kernels.xlinear_fwd(a.x, a.weight, a.index, a.bias, out)
    return out


def xlinear_backward(grad_out, x, weight, index, *, backend=None, grads=GRADS):
    """Gradients of xlinear: (grad_x, grad_weight, grad_bias); see xconv2d_backward for grads."""
    grads = grad_names(grads, GRADS)
    be = pick_backend(backend, x)
    a = _linear_args(be, x, weight, index, None)
    g = grad_out_array(grad_out, a.out_shape, a.x.dtype, be.adopt)
    k = be.kernels
    grad_x = grad_w = grad_b = None
    if "input" in grads:
        grad_x = be.empty(a.x.shape, a.x.dtype, x)
        if a.x.shape[0]:
            rev = cached_reverse_adjacency(a.index, a.x.shape[1])
            k.xlinear_bwd_input(g, a.weight, a.index, rev, grad_x)
    if "weight" in grads:
        grad_w = be.empty(a.weight.shape, a.x.dtype, x)
        k.xlinear_bwd_weight(g, a.x, a.index, grad_w)
    if "bias" in grads:
        grad_b = be.empty((a.weight.shape[0],), a.x.dtype, x)
        k.xlinear_bwd_bias(g, grad_b)
    return grad_x, grad_w, grad_b
