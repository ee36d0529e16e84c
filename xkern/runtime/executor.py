"""Program: a checked Graph compiled into a list of steps over numbered value slots, each a
numpy or xkern-kernel call (the reference executor; xkern.runtime.engine is the fast one)."""
import time

import numpy as np

from .graph import check
from .ops import BUILDERS, ELEMENTWISE

# Ops whose output is a view of their input: it shares memory, so nothing may write into it.
VIEW_OPS = frozenset({"flatten", "reshape"})


def _kernels(backend):
    """The kernel module of backend: "cpu" (compiled), "reference" (numpy) or None (cpu
    when it is built, else reference)."""
    from ..ops.dispatch import get_backend
    if backend is not None:
        if backend not in ("cpu", "reference"):
            raise ValueError(f"backend must be 'cpu', 'reference' or None, got {backend!r}")
        return get_backend(backend).kernels
    try:
        return get_backend("cpu").kernels
    except RuntimeError:
        return get_backend("reference").kernels


def check_input(input_shape, x):
    """x as a C-contiguous float32 batch, checked against input_shape (B, C, H, W; None: any)."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise TypeError(f"x must hold real numbers (float32 preferred), got dtype {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"x must be a batch (B, C, H, W), got shape {x.shape}")
    for axis, (want, got) in enumerate(zip(input_shape, x.shape)):
        if axis and want is not None and want != got:
            raise ValueError(f"x must have shape {tuple(input_shape)} (None: any), got {x.shape}")
    if 0 in x.shape:
        raise ValueError(f"x must not be empty, got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


class GraphFacts:
    """What a runtime (Program, engine.Engine) tells of the checked Graph it runs, self.graph."""

    @property
    def input_shape(self):
        """(B, C, H, W) the network expects; None where any size goes."""
        return self.graph.input_shape

    @property
    def meta(self):
        """What the file records about the model: name, classes, input normalisation."""
        return self.graph.meta

    def layers(self):
        """The layer list: (name, op, input names) per node, in execution order."""
        return [(n.name, n.op, tuple(n.inputs)) for n in self.graph.nodes]


class Program(GraphFacts):
    """A network ready to run: predict(x) maps a float32 batch (B, C, H, W) to its output
    (the logits, (B, classes), for a classifier).  Made by xkern.runtime.load."""

    def __init__(self, graph, backend=None):
        self.graph = check(graph)
        kernels = _kernels(backend)
        consumers = graph.consumers()
        producer = {n.name: n.op for n in graph.nodes}
        slot = {graph.input: 0, **{n.name: i + 1 for i, n in enumerate(graph.nodes)}}
        last_read = {}
        for step, node in enumerate(graph.nodes):
            for name in node.inputs:
                last_read[name] = step
        self._steps = []
        for step, node in enumerate(graph.nodes):
            first = node.inputs[0]
            # Writing into the first input is safe when this node is its only reader and the
            # buffer belongs to the network (not the caller's x, not a view of another value).
            inplace = (node.op in ELEMENTWISE and consumers[first] == 1 and first in producer
                       and producer[first] not in VIEW_OPS)
            release = tuple(sorted({slot[n] for n in node.inputs
                                    if last_read[n] == step and n != graph.output}))
            self._steps.append((node.name, BUILDERS[node.op](node, kernels, inplace),
                                tuple(slot[n] for n in node.inputs), slot[node.name], release))
        self._n_slots = len(graph.nodes) + 1
        self._output = slot[graph.output]

    def _input(self, x):
        return check_input(self.graph.input_shape, x)

    def _run(self, x, times=None, clock=time.perf_counter):
        values = [None] * self._n_slots
        values[0] = self._input(x)
        for name, fn, reads, write, release in self._steps:
            if times is None:
                values[write] = fn(*[values[i] for i in reads])
            else:
                args = [values[i] for i in reads]
                start = clock()
                values[write] = fn(*args)
                times.append((name, clock() - start))
            for i in release:
                values[i] = None
        return values[self._output]

    def predict(self, x):
        """Output of the network for the batch x (B, C, H, W), as float32 numpy."""
        return self._run(x)

    def profile(self, x, clock=time.perf_counter):
        """(output, [(node name, seconds)]): one run timed node by node with clock
        (time.process_time gives CPU time, steadier on a shared machine at 1 thread)."""
        times = []
        out = self._run(x, times, clock)
        return out, times
