"""What XConv2d and XLinear share: the graph, the compact parameters and their checks.

An expander layer over n_in inputs and n_out outputs keeps
    index  (n_out, D) int64 buffer: output v reads inputs index[v, :]
    weight (n_out, D, *kernel)     compact weights, one kernel per edge
    bias   (n_out,) or None
The index is a buffer, so state_dict() saves the graph and load_state_dict()
restores it: a checkpoint always reloads the graph it was trained with.
"""
import math
import numbers

import torch
from torch import nn

from ..graphs import expander
from ..ops.validate import index_array


def resolve_degree(n_in, degree, compression):
    """D from exactly one of degree and compression (D = max(1, n_in // compression))."""
    if (degree is None) == (compression is None):
        raise ValueError(f"give exactly one of degree and compression, "
                         f"got degree={degree!r}, compression={compression!r}")
    if degree is not None:
        return degree  # xkern.graphs.expander checks it against n_in
    if isinstance(compression, bool) or not isinstance(compression, numbers.Real) or not compression >= 1:
        raise ValueError(f"compression must be a number >= 1, got {compression!r}")
    return max(1, int(n_in // compression))


class ExpanderLayer(nn.Module):
    """Base of XConv2d and XLinear: builds the graph and the parameters of a layer from
    n_in to n_out with kernel shape `kernel` (() for a linear layer)."""

    def __init__(self, n_in, n_out, kernel, bias, degree, compression, method, seed, block):
        super().__init__()
        degree = resolve_degree(n_in, degree, compression)
        index = expander(n_in, n_out, degree, method=method, seed=seed, block=block)
        self.degree, self.method, self.seed, self.block = int(index.shape[1]), method, seed, block
        self.register_buffer("index", torch.as_tensor(index, dtype=torch.int64))
        self.weight = nn.Parameter(torch.empty((n_out, self.degree, *kernel)))
        self.register_parameter("bias", nn.Parameter(torch.empty(n_out)) if bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        """Kaiming-uniform (a=sqrt(5), torch's Conv2d/Linear default) on the real fan-in D·kh·kw.

        torch computes fan-in from the compact weight's shape, (D, kh, kw), not from the
        dense Cin·kh·kw that a masked dense weight (the paper's code) would give: each
        output sums D·kh·kw products, so that is the fan-in that keeps activations' scale.
        """
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    def _n_in(self):
        """The number of inputs the graph reads from (in_channels / in_features)."""
        raise NotImplementedError

    def _checkpoint_problems(self, state_dict, prefix):
        """Why this layer's entries in state_dict cannot be loaded (an empty list if they can)."""
        problems = []
        for name in ("weight", "bias", "index"):
            mine, theirs = getattr(self, name), state_dict.get(prefix + name)
            if mine is not None and isinstance(theirs, torch.Tensor) and theirs.shape != mine.shape:
                problems.append(f"size mismatch for {prefix + name}: the checkpoint has shape "
                                f"{tuple(theirs.shape)}, this layer {tuple(mine.shape)} "
                                f"(degree {self.degree})")
        index = state_dict.get(prefix + "index")
        if not problems and isinstance(index, torch.Tensor):
            try:
                index_array(index.detach().cpu().numpy(), self.index.shape[0], self._n_in(), self.degree)
            except (TypeError, ValueError) as exc:
                problems.append(f"invalid graph for {prefix}index: {exc}")
        return problems

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        # All or nothing: torch would load the other tensors beside a mismatched one, leaving
        # weights that belong to another graph.  load_state_dict raises on any error_msgs.
        problems = self._checkpoint_problems(state_dict, prefix)
        if problems:
            error_msgs.extend(problems)
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    def _graph_repr(self):
        text = f"degree={self.degree}, density={self.degree / self._n_in():.3g}, method={self.method}"
        return text + (f", block={self.block}" if self.block != 1 else "")
