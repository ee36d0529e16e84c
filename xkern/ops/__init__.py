"""The numpy-level API: validate, allocate, pick a backend.  Never imports torch."""
from .dispatch import get_backend, LOADERS as BACKENDS
from .xconv2d import PreparedXconv2d, xconv2d, xconv2d_backward
from .xlinear import xlinear, xlinear_backward

__all__ = ["xconv2d", "xconv2d_backward", "PreparedXconv2d", "xlinear", "xlinear_backward", "get_backend", "BACKENDS"]
