"""The one place where a family's compressible layers are made: dense, X or G.

Every family asks a LayerFactory for the layers the paper compresses and builds the
layers it keeps dense (the first conv, the classifier) with plain torch modules, so
"dense", "X" (expander) and "G" (grouped) versions of a network share one definition.
"""
import numpy as np
from torch import nn

from ..nn import XConv2d, XLinear
from ..nn.expander_layer import resolve_degree

KINDS = ("dense", "x", "g")


class LayerFactory:
    """Makes the compressible layers of one model, in construction order.

    kind: "dense" (nn.Conv2d / nn.Linear), "x" (XConv2d / XLinear) or "g"
    (nn.Conv2d with groups=compression; defined for convolutions only).
    compression: C for "x" and "g"; an X layer with Cin inputs gets
    XConv2d(..., compression=C), i.e. every output reads D = Cin // C inputs, so an
    expanding layer (Cin < Cout) has density 1/C like every other layer (the paper's code
    gave those fewer edges).  A call may instead fix the degree D of one X layer.
    seed: the graph seed of the i-th X layer is drawn from
    numpy.random.SeedSequence(seed, spawn_key=(i,)), so one seed always gives the same
    graphs; None draws fresh entropy once per model.
    method, block: passed to every X layer (see xkern.graphs.expander).  method None takes
    "random" for block 1 and "biregular" for block > 1: a random block graph leaves some
    inputs unread.  A block graph covers every input only when D * out / block >= in, so
    an X layer whose block cannot is refused.
    """

    def __init__(self, kind="dense", compression=None, *, seed=None, method=None, block=1):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if compression is not None and (isinstance(compression, bool) or not isinstance(compression, int)
                                        or compression < 1):
            raise ValueError(f"compression must be an integer >= 1, got {compression!r}")
        if kind == "g" and compression is None:
            raise ValueError("compression (the number of groups) is required for grouped layers")
        self.kind = kind
        self.compression = compression
        self.method = method if method is not None else "random" if block == 1 else "biregular"
        self.block = block
        self._root = np.random.SeedSequence(seed)
        self._count = 0

    def _next_seed(self):
        child = np.random.SeedSequence(self._root.entropy, spawn_key=(self._count,))
        self._count += 1
        return int(child.generate_state(1, np.uint64)[0])

    def _x_kwargs(self, n_in, n_out, degree):
        if degree is None and self.compression is None:
            raise ValueError("an X layer needs a compression (set on the factory) or a degree")
        d = resolve_degree(n_in, degree, None if degree is not None else self.compression)
        if self.block > 1 and d * (n_out // self.block) < n_in:
            raise ValueError(
                f"block={self.block} cannot cover the inputs of an X layer {n_in} -> {n_out} with degree "
                f"D={d}: its {n_out // self.block} blocks read at most {d * (n_out // self.block)} inputs; "
                f"a block graph needs D >= block * in / out (use a block of at most {max(1, d * n_out // n_in)})")
        return dict(degree=degree, compression=None if degree is not None else self.compression,
                    method=self.method, seed=self._next_seed(), block=self.block)

    def conv(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=False, *, degree=None):
        """A compressible kh x kw convolution: (B, in_channels, H, W) -> (B, out_channels, Ho, Wo)."""
        if self.kind == "x":
            return XConv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias,
                           **self._x_kwargs(in_channels, out_channels, degree))
        groups = self.compression if self.kind == "g" else 1
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"compression={groups} groups must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias, groups=groups)

    def linear(self, in_features, out_features, bias=True, *, degree=None):
        """A compressible fully connected layer: (B, in_features) -> (B, out_features)."""
        if self.kind == "x":
            return XLinear(in_features, out_features, bias, **self._x_kwargs(in_features, out_features, degree))
        if self.kind == "g":
            raise ValueError("grouped versions are defined for convolutions only, not linear layers")
        return nn.Linear(in_features, out_features, bias)


def parse_variant(pattern, name, variants):
    """For families named "<base>" (dense) and "x-<base>-<variant>" (numbered X variants):
    ("dense", None), ("x", variants[variant]), or None when name is not of the family."""
    m = pattern.fullmatch(name)
    if m is None or (m["x"] is None) != (m["variant"] is None):
        return None
    if m["x"] is None:
        return "dense", None
    variant = int(m["variant"])
    return ("x", variants[variant]) if variant in variants else None
