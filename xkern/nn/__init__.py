"""torch modules for X-Nets: XConv2d, XLinear, and expanderize to convert dense models.
Importing this imports torch."""
from .expanderize import expanderize
from .xconv2d import XConv2d
from .xlinear import XLinear

__all__ = ["XConv2d", "XLinear", "expanderize"]
