"""CUDA X-Linear on the convolution kernels.

x (B, Cin) is transposed to (Cin, B) and read as a (1, Cin, 1, B) image, so the
batch becomes the pixel axis the conv kernels tile and coalesce along; results
come back through one more transpose.  The transposed copies live in this
stream's workspace.
"""
from .. import _checks
from . import _interop
from ._transpose import transpose
from .xconv2d_bwd_bias import launch_bias
from .xconv2d_bwd_input import xconv2d_bwd_input
from .xconv2d_bwd_weight import xconv2d_bwd_weight
from .xconv2d_fwd import xconv2d_fwd

_ONE = (1, 1)
_ZERO = (0, 0)


def _image(a):
    """(C, B) -> (1, C, 1, B)."""
    return a.reshape(1, a.shape[0], 1, a.shape[1])


def _scratch(stream, *shapes_like):
    return _interop.workspace.take(stream, "linear", [(shape, like.dtype) for shape, like in shapes_like])


def xlinear_fwd(x, weight, index, bias, out):
    """x (B, Cin), weight (Cout, D), index (Cout, D) host, bias (Cout,) or None, out (B, Cout)."""
    _checks.check_index_array(index)
    out_d = _interop.device_view(out)
    _checks.check_linear(x.shape, weight.shape, index.shape, out_d.shape, ("x", "weight", "out"))
    _checks.check_dtypes("x", x, out=out_d)
    (n_img, n_in), n_out = x.shape, weight.shape[0]
    xt, outt = _scratch(x.stream, ((n_in, n_img), x), ((n_out, n_img), x))
    transpose(x, xt, x.stream)
    xconv2d_fwd(_image(xt), weight.reshape(weight.shape + _ONE), index, bias, _image(outt),
                _ONE, _ZERO, _ONE)
    transpose(outt, out_d, x.stream)


def xlinear_bwd_input(grad_out, weight, index, rev, grad_x):
    """grad_out (B, Cout), weight (Cout, D), grad_x (B, Cin)."""
    gx = _interop.device_view(grad_x)
    _checks.check_index_array(index)
    _checks.check_linear(gx.shape, weight.shape, index.shape, grad_out.shape, ("grad_x", "weight", "grad_out"))
    _checks.check_dtypes("grad_out", grad_out, grad_x=gx)
    (n_img, n_out), n_in = grad_out.shape, gx.shape[1]
    gt, gxt = _scratch(grad_out.stream, ((n_out, n_img), grad_out), ((n_in, n_img), grad_out))
    transpose(grad_out, gt, grad_out.stream)
    xconv2d_bwd_input(_image(gt), weight.reshape(weight.shape + _ONE), index, rev, _image(gxt),
                      _ONE, _ZERO, _ONE)
    transpose(gxt, gx, grad_out.stream)


def xlinear_bwd_weight(grad_out, x, index, grad_weight):
    """grad_out (B, Cout), x (B, Cin), grad_weight (Cout, D)."""
    gw = _interop.device_view(grad_weight)
    _checks.check_index_array(index)
    _checks.check_linear(x.shape, gw.shape, index.shape, grad_out.shape, ("x", "grad_weight", "grad_out"))
    (n_img, n_out), n_in = grad_out.shape, x.shape[1]
    gt, xt = _scratch(x.stream, ((n_out, n_img), x), ((n_in, n_img), x))
    transpose(grad_out, gt, x.stream)
    transpose(x, xt, x.stream)
    xconv2d_bwd_weight(_image(gt), _image(xt), index, gw.reshape(gw.shape + _ONE), _ONE, _ZERO, _ONE)


def xlinear_bwd_bias(grad_out, grad_bias):
    """grad_out (B, Cout), grad_bias (Cout,)."""
    gb = _interop.device_view(grad_bias)
    if len(grad_out.shape) != 2:
        raise ValueError(f"grad_out must have 2 dimensions, got shape {tuple(grad_out.shape)}")
    _checks.check_length("grad_bias", gb, grad_out.shape[1], "grad_out's columns")
    _checks.check_dtypes("grad_out", grad_out, grad_bias=gb)
    launch_bias(grad_out.reshape(grad_out.shape + (1,)), gb, grad_out.stream)
