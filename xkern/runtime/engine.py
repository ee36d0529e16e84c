"""Engine: a .xk network on xkern's C++ inference engine (src/engine/, through the
pybind11 module xkern.runtime._engine).

The engine plans the network once per input shape: batch norms folded, each conv fused
with the residual add and ReLU after it (and with a batch norm and ReLU before it that
only it reads, applied as it copies its input), weights packed for its kernel family, every
value placed in one arena (DenseNet's concatenations written in place), then runs it
with no Python between layers.  The numpy executor (Program) computes the same thing
op by op and is the engine's test oracle.  The same engine is the C library behind
xkern_runtime.h (see `python -m xkern config`).
"""
from .._threads import requested_threads
from .executor import GraphFacts, check_input

try:
    from . import _engine
except ImportError:  # built without pybind11, or an MSVC build
    _engine = None


def available():
    """Whether the C++ engine is built into this install."""
    return _engine is not None


class Engine(GraphFacts):
    """A network ready to run on the C++ engine: predict(x) maps a float32 batch (B, C, H, W)
    to its output.  Same interface as Program; made by xkern.runtime.load."""

    def __init__(self, graph, data):
        """graph: the checked Graph of the .xk file whose bytes are data."""
        if _engine is None:
            raise RuntimeError("xkern's C++ engine is not built in this install "
                               "(pybind11 was missing at build time); use backend='cpu' or 'reference'")
        self.graph = graph
        self._engine = _engine.Engine(data)

    def steps(self):
        """The node names each engine step runs (a conv with its fused add and ReLU is one)."""
        names = [n.name for n in self.graph.nodes]
        return [tuple(names[k] for k in step) for step in self._engine.steps()]

    def predict(self, x):
        """Output of the network for the batch x (B, C, H, W), as float32 numpy.  Threads:
        xkern.set_num_threads(n), else OpenMP's default."""
        out, _ = self._engine.run(check_input(self.input_shape, x), requested_threads())
        return out

    def profile(self, x, clock=None):
        """(output, [(node name, seconds)]): one run timed step by step (wall clock, inside
        the engine).  A fused step's time goes to its first node, 0 to the nodes it absorbed."""
        out, times = self._engine.run(check_input(self.input_shape, x), requested_threads(), True)
        seconds = [0.0] * len(self.graph.nodes)
        for first, t in times:
            seconds[first] = t
        return out, [(n.name, t) for n, t in zip(self.graph.nodes, seconds)]
