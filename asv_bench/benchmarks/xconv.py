"""asv benchmarks: xkern's regression benchmark, and X-Conv against torch's convolutions.

XConv        xkern's CPU kernels over every layer at every compression, one number per commit
             (not parameterised, so `asv continuous -b "XConv.time_forward$" main HEAD` compares
             exactly one forward time)
Compare      X-Conv against torch's dense, grouped (groups=C) and masked-dense conv2d, side by side
             for each (layer, C, implementation, device)
BlockXConv   xkern on block expanders, for each (layer, C, block, device)

Layers, data and the timed callables come from xkern.bench, which `python -m xkern bench`
also uses.  A combination that cannot run here (CUDA without a GPU, an xkern backend
that is not built) raises NotImplementedError in setup, which asv reports as skipped.
setup runs one forward and one step first, so JIT compilation (numba) and first-touch
allocation stay out of the timings.

XKERN_ASV_LAYERS (comma-separated names from xkern.bench.layers.LAYERS, default the
reference layers L1-L4) picks the layers of all three; CI's smoke run uses the tiny T1,T3.
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


def _step_peak_mb(case, device):
    # Memory added by one step alone (see xkern.bench.memory); NaN (asv: n/a) off Linux.
    peak = memory.peak_bytes(case.step, device=device, sync=case.sync)
    return float("nan") if peak is None else peak / 2**20


class XConv:
    """xkern's regression benchmark: the CPU kernels on every layer at every compression.

    One forward (time_forward) or one training step (time_forward_backward) of each config in
    turn, timed together: a single number per commit, which `asv continuous` compares.  The sum
    weighs the large layers most; Compare times each config alone.
    """
    timeout = 300
    device = "cpu"

    def setup(self):
        configs = layers.configs(LAYER_NAMES, layers.COMPRESSIONS)
        self.cases = [_warm_case("xkern", config, self.device) for config in configs]

    def time_forward(self):
        for case in self.cases:
            case.forward()
            case.sync()

    def time_forward_backward(self):
        for case in self.cases:
            case.step()
            case.sync()

    def peakmem_step(self):
        # asv's peakmem is the whole process's maximum RSS (torch, setup included).
        for case in self.cases:
            case.step()

    def track_step_peak_mb(self):
        # The most memory one config's step adds.
        return max(_step_peak_mb(case, self.device) for case in self.cases)

    track_step_peak_mb.unit = "MB"


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
        return _step_peak_mb(self.case, self.device)

    track_step_peak_mb.unit = "MB"


class Compare(_Timed):
    """The layers at every compression, every implementation side by side."""
    params = (LAYER_NAMES, list(layers.COMPRESSIONS), list(baselines.IMPLS), list(baselines.DEVICES))
    param_names = ("layer", "C", "impl", "device")

    def setup(self, layer, C, impl, device):
        self.device = device
        self.case = _warm_case(impl, layers.make_config(layers.get_layer(layer), C), device)


class BlockXConv(_Timed):
    """xkern on block expanders (outputs share index rows in blocks of `block`)."""
    params = (LAYER_NAMES, list(layers.COMPRESSIONS), list(layers.BLOCKS), list(baselines.DEVICES))
    param_names = ("layer", "C", "block", "device")

    def setup(self, layer, C, block, device):
        self.device = device
        self.case = _warm_case("xkern", layers.make_config(layers.get_layer(layer), C, block), device)
