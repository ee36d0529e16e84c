"""xkern: fast kernels for Deep Expander Networks (X-Nets).

An X-Conv's output channel v reads only D input channels, index[v, :]; xkern
computes only those products, on compact weights (Cout, D, kh, kw).
"""
from ._threads import set_num_threads
from ._version import __version__
from .api import xconv2d, xconv2d_backward, xlinear, xlinear_backward
from .info import get_num_threads

__all__ = ["xconv2d", "xconv2d_backward", "xlinear", "xlinear_backward",
           "set_num_threads", "get_num_threads", "__version__"]
