"""asv benchmarks: X-Conv against torch's dense, grouped (groups=C) and masked-dense conv2d.

Layers, data and the timed callables come from xkern.bench, which `python -m xkern bench`
also uses.  A combination that cannot run here (CUDA without a GPU, an xkern backend
that is not built) raises NotImplementedError in setup, which asv reports as skipped.
setup runs one forward and one step first, so JIT compilation (numba) and first-touch
allocation stay out of the timings.

XKERN_ASV_LAYERS (comma-separated names from xkern.bench.layers.LAYERS, default the
reference layers L1-L4) picks the layers; CI's smoke run uses the tiny T1,T3.
"""
import os

# First calls import these lazily (torch.library custom ops: torch._dynamo; torch.autograd.grad:
# torch.fx.experimental.symbolic_shapes), seconds each.  Imported here, they load once in asv's
# forkserver instead of in every forked benchmark's setup.  (Only imports: an OpenMP pool
# started before fork would not survive into the children.)
import torch._dynamo  # noqa: F401
import torch.fx.experimental.symbolic_shapes  # noqa: F401

from xkern.bench import baselines, layers, memory

LAYER_NAMES = [name.strip() for name in os.environ.get("XKERN_ASV_LAYERS", ",".join(layers.REFERENCE)).split(",")]
for _name in LAYER_NAMES:
    layers.get_layer(_name)  # a ValueError here names the valid layers


def _warm_case(impl, config, device):
    problem = baselines.make_problem(config, device=device)
    case = baselines.build_case(impl, problem)
    case.forward()
    case.step()
    case.sync()
    return case


class _Timed:
    """time_ / peakmem_ / track_ methods over self.case (built by the subclass's setup)."""
    timeout = 300

    def time_forward(self, *params):
        self.case.forward()
        self.case.sync()

    def time_forward_backward(self, *params):
        self.case.step()
        self.case.sync()

    def peakmem_step(self, *params):
        # asv's peakmem is the whole process's maximum RSS (torch, setup included).
        self.case.step()

    def track_step_peak_mb(self, *params):
        # Memory added by one step alone (see xkern.bench.memory); NaN (asv: n/a) off Linux.
        peak = memory.peak_bytes(self.case.step, device=self.device, sync=self.case.sync)
        return float("nan") if peak is None else peak / 2**20

    track_step_peak_mb.unit = "MB"


class XConv(_Timed):
    """The reference layers at every compression, every implementation side by side."""
    params = (LAYER_NAMES, list(layers.COMPRESSIONS), list(baselines.IMPLS), list(baselines.DEVICES))
    param_names = ("layer", "C", "backend", "device")

    def setup(self, layer, C, backend, device):
        self.device = device
        self.case = _warm_case(backend, layers.make_config(layers.get_layer(layer), C), device)


class BlockXConv(_Timed):
    """xkern on block expanders (outputs share index rows in blocks of `block`)."""
    params = (LAYER_NAMES, list(layers.COMPRESSIONS), list(layers.BLOCKS), list(baselines.DEVICES))
    param_names = ("layer", "C", "block", "device")

    def setup(self, layer, C, block, device):
        self.device = device
        self.case = _warm_case("xkern", layers.make_config(layers.get_layer(layer), C, block), device)
