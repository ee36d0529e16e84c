"""torch integration: differentiable xconv2d / xlinear (autograd.Function over
torch.library custom ops).  Importing this imports torch."""
from .functions import XConv2dFunction, XLinearFunction, xconv2d, xlinear

__all__ = ["xconv2d", "xlinear", "XConv2dFunction", "XLinearFunction"]
