# ---------------------------------------------------------------- X-Linear: the 1x1 conv of (B, C, 1, 1)

def _as_map(a):
    """(B, C) -> (B, C, 1, 1) view; the conv kernels take the strides as they are."""
    return a[:, :, None, None]


def _as_kernel(weight):
    """(Cout, D) -> C-contiguous (Cout, D, 1, 1)."""
    return np.ascontiguousarray(weight).reshape(weight.shape + (1, 1))


def xlinear_fwd(x, weight, index, bias, out, int num_threads):
    """out (B, Cout) = X-Linear of x (B, Cin); weight (Cout, D)."""
    xconv2d_fwd(_as_map(x), _as_kernel(weight), index, bias, _as_map(out), (1, 1), (0, 0), (1, 1), num_threads)


def xlinear_bwd_input(grad_out, weight, index, rev, grad_x, int num_threads):
    """grad_x (B, Cin) from grad_out (B, Cout)."""
    xconv2d_bwd_input(_as_map(grad_out), _as_kernel(weight), index, rev, _as_map(grad_x),
                      (1, 1), (0, 0), (1, 1), num_threads)


def xlinear_bwd_weight(grad_out, x, index, grad_weight, int num_threads):
    """grad_weight (Cout, D) from grad_out (B, Cout) and x (B, Cin)."""
    xconv2d_bwd_weight(_as_map(grad_out), _as_map(x), index, grad_weight.reshape(grad_weight.shape + (1, 1)),
                       (1, 1), (0, 0), (1, 1), num_threads)


def xlinear_bwd_bias(grad_out, grad_bias, int num_threads):
    """grad_bias (Cout,) = grad_out (B, Cout) summed over B."""
    xconv2d_bwd_bias(_as_map(grad_out), grad_bias, num_threads)
