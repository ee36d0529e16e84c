"""XLinear: an expander linear layer."""
from ..autograd import xlinear
from .expander_layer import ExpanderLayer


class XLinear(ExpanderLayer):
    """Linear layer whose output v reads only the D inputs index[v, :].

    Exactly one of degree (D) or compression (D = max(1, in_features // compression));
    the graph is xkern.graphs.expander(in_features, out_features, D, ...).  Parameters:
    weight (out_features, D), bias (out_features,); buffer index (out_features, D) int64.
    Input (*, in_features) -> output (*, out_features), as Linear.
    """

    def __init__(self, in_features, out_features, bias=True, *, degree=None, compression=None,
                 method="random", seed=None, block=1):
        super().__init__(in_features, out_features, (), bias, degree, compression, method, seed, block)
        self.in_features, self.out_features = in_features, out_features

    def _n_in(self):
        return self.in_features

    def forward(self, x):
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"XLinear expects x of shape (*, {self.in_features}), got {tuple(x.shape)}")
        out = xlinear(x.reshape(-1, self.in_features), self.weight, self.index, self.bias)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self):
        text = f"in_features={self.in_features}, out_features={self.out_features}"
        if self.bias is None:
            text += ", bias=False"
        return f"{text}, {self._graph_repr()}"
