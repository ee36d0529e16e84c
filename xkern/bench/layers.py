"""The reference layers of the performance targets and the expander index of each config.

Numpy only.  A config is (layer, C, block): compression C gives the degree D = Cin / C;
block b > 1 makes outputs share index rows in blocks of b (xkern.graphs.expander's block).
"""
from typing import NamedTuple

import numpy as np


class Layer(NamedTuple):
    """A conv layer: x (batch, cin, hw, hw) -> (batch, cout, hw, hw), kernel k x k, stride 1, padding k // 2."""
    name: str
    cin: int
    cout: int
    kernel: int
    hw: int
    batch: int = 32

    @property
    def padding(self):
        return self.kernel // 2

    def describe(self):
        return f"{self.kernel}x{self.kernel} {self.cin}->{self.cout} at {self.hw}x{self.hw}, batch {self.batch}"


REFERENCE = {
    "L1": Layer("L1", 256, 256, 1, 14),
    "L2": Layer("L2", 128, 128, 3, 28),
    "L3": Layer("L3", 256, 256, 3, 14),
    "L4": Layer("L4", 384, 192, 1, 32),
}
# Tiny layers for smoke tests (CI, tests/test_bench.py): fast even on the numpy reference backend.
SMOKE = {
    "T1": Layer("T1", 16, 8, 1, 4, batch=2),
    "T3": Layer("T3", 8, 8, 3, 5, batch=2),
}
LAYERS = {**REFERENCE, **SMOKE}
COMPRESSIONS = (2, 4, 8)
BLOCKS = (4, 8)          # block expanders of the targets; block 1 is the plain random expander


class Config(NamedTuple):
    layer: Layer
    compression: int
    block: int = 1

    @property
    def degree(self):
        return self.layer.cin // self.compression

    @property
    def key(self):
        return (self.layer.name, self.compression, self.block)


def get_layer(name, batch=None):
    """The layer called name (see LAYERS), with its batch replaced when batch is given."""
    if name not in LAYERS:
        raise ValueError(f"layer must be one of {sorted(LAYERS)}, got {name!r}")
    layer = LAYERS[name]
    if batch is not None:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive int, got {batch!r}")
        layer = layer._replace(batch=batch)
    return layer


def make_config(layer, compression, block=1):
    """A Config, checked: C divides Cin and Cout (as grouped conv needs), block divides Cout."""
    for name, value in (("compression", compression), ("block", block)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if layer.cin % compression or layer.cout % compression:
        raise ValueError(f"compression {compression} must divide Cin={layer.cin} and Cout={layer.cout} "
                         f"of layer {layer.name}")
    if layer.cout % block:
        raise ValueError(f"block {block} must divide Cout={layer.cout} of layer {layer.name}")
    return Config(layer, compression, block)


def configs(layer_names, compressions, blocks=(1,), batch=None):
    """Every (layer, C, block) combination, in that nesting order."""
    return [make_config(get_layer(name, batch), c, b)
            for name in layer_names for c in compressions for b in blocks]


def make_index(config, seed=0):
    """The (Cout, D) int64 index of config: the paper's random expander (each output, or each
    block of outputs, reads D distinct inputs drawn uniformly), xkern.graphs.expander(method="random")."""
    from xkern.graphs import expander

    layer = config.layer
    return np.asarray(expander(layer.cin, layer.cout, config.degree, method="random",
                               seed=seed, block=config.block), dtype=np.int64)
