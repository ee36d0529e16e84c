"""CUDA forward of xconv2d: the staged gather over output channels (see _staged), or the
channel-chunked gather (_gather) where a tile of every input channel does not fit in shared
memory."""
import numpy as np

from .. import _checks
from . import _interop, _plan, _staged
from ._gather import launch_gather


def xconv2d_fwd(x, weight, index, bias, out, stride, padding, dilation):
    """x (B, Cin, H, W), weight (Cout, D, kh, kw), index (Cout, D) host int64,
    bias (Cout,) or None, out (B, Cout, Ho, Wo) written in full."""
    out_d = _interop.device_view(out)
    _checks.check_index_array(index)
    _checks.check_conv(x.shape, weight.shape, index.shape, out_d.shape, stride, padding, dilation,
                       ("x", "weight", "out"))
    _checks.check_length("bias", bias, weight.shape[0], "Cout")
    _checks.check_dtypes("x", x, weight=weight, bias=bias, out=out_d)
    n_img, n_in = x.shape[:2]
    n_out, degree, kh, kw = weight.shape
    geom = _plan.Geometry(kh, kw, *stride, *dilation, *padding)
    w_flat = weight.reshape(weight.size)
    if _staged.gather(x, w_flat, index, None, bias, out_d, geom, _plan.graph_key(index), x.stream):
        return
    tile, groups = _plan.plan_gather(geom, n_in, tuple(out_d.shape[2:]), n_img, n_out, degree,
                                     np.dtype(x.dtype).itemsize, _interop.sm_count())
    codes, seg = _plan.forward_tables(index, n_in, tile.ch)
    w3 = weight.reshape(n_out * degree, kh, kw)
    launch_gather(x, w3, codes, seg, bias, out_d, geom, tile, groups, x.stream)
