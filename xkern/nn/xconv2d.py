"""XConv2d: an expander convolution layer."""
from ..autograd import xconv2d
from ..ops.validate import pair
from .expander_layer import ExpanderLayer


class XConv2d(ExpanderLayer):
    """Conv2d whose output channel v reads only the D input channels index[v, :].

    Exactly one of degree (D) or compression (D = max(1, in_channels // compression));
    the graph is xkern.graphs.expander(in_channels, out_channels, D, method=method,
    seed=seed, block=block).  Parameters: weight (out_channels, D, kh, kw), bias
    (out_channels,); buffer index (out_channels, D) int64.
    Input (B, in_channels, H, W) -> output (B, out_channels, Ho, Wo), as Conv2d.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=True, *, degree=None, compression=None, method="random", seed=None, block=1):
        kernel_size = pair(kernel_size, "kernel_size", 1)
        stride, padding = pair(stride, "stride", 1), pair(padding, "padding", 0)
        dilation = pair(dilation, "dilation", 1)
        super().__init__(in_channels, out_channels, kernel_size, bias, degree, compression,
                         method, seed, block)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation

    def _n_in(self):
        return self.in_channels

    def forward(self, x):
        # xkern.ops checks the index against x's channels; only the module knows in_channels.
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"XConv2d expects x of shape (B, {self.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        return xconv2d(x, self.weight, self.index, self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.bias is None:
            text += ", bias=False"
        return f"{text}, {self._graph_repr()}"
