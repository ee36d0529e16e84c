"""Batch-1 CPU latency of xkern's runtime (the C++ engine, and the numpy executor it
replaced as the default) against torch (dense and X models) and onnxruntime, and how much
of the numpy executor's time is per-layer Python overhead.

    python benchmarks/edge_latency.py [--threads 2] [--repeats 30] [--models x-resnet-2-18 ...] [--block 8]

Each model runs as: the dense torch twin, the X model in torch, the X model's .xk file on
xkern's engine (runtime.load) and on the numpy executor (backend="cpu": numpy ops and
xkern's compiled conv kernel), and in onnxruntime the X model exported two ways (Gather +
grouped Conv; dense-equivalent weights) plus the dense twin.  Every engine gets --threads
threads (numpy's BLAS too, through threadpoolctl).  "engine / ORT dense" is the ratio
the issue's targets are stated in; those two columns come from one run that calls them in
turn, the order reversed every round (paired_median_ms; with several threads, in turns of 10
calls).
Times are medians of --repeats single calls after 3 warm-up calls; --clock cpu times CPU
time instead of wall time (on one thread the same thing on an idle machine, and far less
disturbed by other processes on a shared one).
Prints a markdown section for BENCHMARKS.md.

Overhead: a step's fixed cost is what a one-node program spends on a 1x8x1x1 input (a 1x1
X-conv, a relu), where the arithmetic is nil; the bare kernel call on the same arrays
separates the runtime's Python glue from the set-up inside the compiled backend; the
network's overhead is the sum over its steps (see overhead()).
"""
import argparse
import gc
import os
import platform
import tempfile
import time

import numpy as np

# name of the X model, dense twin, input side
MODELS = (("x-mobilenet-0.5-4", "mobilenet-0.5", 224),
          ("x-resnet-2-18", "resnet-18", 224),
          ("x-densenet-bc-2-40-24", "densenet-bc-40-24", 32))


def on_kernel(node):
    """Whether the runtime runs node on the compiled X kernel (dense 1x1 convs and linear
    layers are BLAS products there, see xkern.runtime.ops)."""
    if node.op == "conv2d":
        at = node.attrs
        return not (at["groups"] == 1 and node.arrays["weight"].shape[2:] == (1, 1)
                    and list(at["stride"]) == [1, 1] and list(at["padding"]) == [0, 0])
    return node.op in ("xconv2d", "xlinear")


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
CLOCK_WORDS = {"wall": "wall-clock latency", "cpu": "process CPU time"}


def median_ms(fn, repeats, clock="wall"):
    """Median ms of `repeats` single calls of fn after 3 warm-up calls, garbage collector off."""
    tick = CLOCKS[clock]
    for _ in range(3):
        fn()
    gc.collect()
    gc.disable()
    try:
        samples = []
        for _ in range(repeats):
            start = tick()
            fn()
            samples.append(tick() - start)
    finally:
        gc.enable()
    return float(np.median(samples)) * 1e3


def paired_median_ms(fns, repeats, clock="wall", block=1):
    """Median ms of each of fns, called in turn in every round (3 warm-up rounds), so a change
    in the machine's load shifts all of them alike and their ratio stays fair; the order
    reverses every round (on this VM the first call of a round measured 10-20% slower).  Each
    turn is `block` consecutive calls (each one sample; about `repeats` samples in all): with
    several threads a runtime's workers spin on after its call and take the cores the next
    one's workers need, so single calls in turn would time that hand-over, not the runtimes."""
    tick = CLOCKS[clock]
    for _ in range(3):
        for fn in fns:
            fn()
    gc.collect()
    gc.disable()
    try:
        samples = [[] for _ in fns]
        for r in range(max(1, repeats // block)):
            turns = list(zip(fns, samples))
            for fn, out in (turns if r % 2 == 0 else turns[::-1]):
                for _ in range(block):
                    start = tick()
                    fn()
                    out.append(tick() - start)
    finally:
        gc.enable()
    return [float(np.median(s)) * 1e3 for s in samples]


def fixed_costs(repeats, threads, clock):
    """ms per call on a 1x8x1x1 input: a one-X-conv program (1x1, 8 -> 8, D = 4), the
    backend's kernel called directly on the same arrays, and a one-relu program.  On one
    thread: with more, a descheduled OpenMP thread on a shared machine costs a time slice."""
    import xkern
    from xkern.backends import cpu
    from xkern.ops.validate import index_array
    from xkern.runtime import Graph, Node, Program
    # D = 4 of 8 inputs: a dense index (every input) would send the runtime to its BLAS path
    weight, bias = np.ones((8, 4, 1, 1), np.float32), np.zeros(8, np.float32)
    index = np.array([(np.arange(4) + v) % 8 for v in range(8)])
    kernel_index = index_array(index, 8, 8, 4)  # the graph's cached copy, as the executor's steps pass it
    conv = Node("conv", "xconv2d", ["x"], dict(stride=[1, 1], padding=[0, 0], dilation=[1, 1], in_channels=8),
                {"weight": weight, "bias": bias, "index": index})
    x, out = np.ones((1, 8, 1, 1), np.float32), np.empty((1, 8, 1, 1), np.float32)
    costs = {}
    xkern.set_num_threads(1)
    for kind, node in (("conv step", conv), ("numpy step", Node("relu", "relu", ["x"]))):
        program = Program(Graph("x", (None, 8, None, None), [node], node.name))
        costs[kind] = median_ms(lambda: program.predict(x), repeats * 20, clock)
    costs["kernel call"] = median_ms(
        lambda: cpu.xconv2d_fwd(x, weight, kernel_index, bias, out, (1, 1), (0, 0), (1, 1)), repeats * 20, clock)
    xkern.set_num_threads(threads)
    return costs


def overhead(program, x, repeats, fixed, clock):
    """(T, steps, Python estimate, kernel-call set-up) in ms for one program at batch 1.

    Python estimate: each step's fixed cost less the work inside the compiled kernel, i.e.
    (conv step - bare kernel call) per kernel step and a whole numpy step otherwise (numpy
    and BLAS ops: that includes the executor loop and numpy's own call overhead, an upper
    bound).  Kernel-call
    set-up: kernel steps x the bare kernel call's fixed cost (set-up inside the backend).
    """
    total = median_ms(lambda: program.predict(x), repeats, clock)
    nodes = program.graph.nodes
    n_kernel = sum(map(on_kernel, nodes))
    glue = fixed["conv step"] - fixed["kernel call"]
    python = n_kernel * glue + (len(nodes) - n_kernel) * fixed["numpy step"]
    return total, len(nodes), python, n_kernel * fixed["kernel call"]


def run(args):
    import onnxruntime as ort
    import torch
    from threadpoolctl import threadpool_limits

    import xkern
    from xkern import models, onnx as xonnx, runtime

    torch.set_num_threads(args.threads)
    xkern.set_num_threads(args.threads)
    threadpool_limits(args.threads, user_api="blas")  # numpy's BLAS, used by the runtime
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
    fixed = fixed_costs(args.repeats, args.threads, args.clock)
    rows, notes = [], []
    folder = tempfile.mkdtemp(prefix="xkern-edge-")
    for name, dense_name, side in MODELS:
        if args.models and name not in args.models:
            continue
        shape = (1, 3, side, side)
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        xt = torch.from_numpy(x)
        torch.manual_seed(0)
        xmodel = models.create(name, seed=0, block=args.block).eval()
        dense = models.create(dense_name).eval()
        times = {}
        with torch.no_grad():
            times["torch dense"] = median_ms(lambda: dense(xt), args.repeats, args.clock)
            times["torch X"] = median_ms(lambda: xmodel(xt), args.repeats, args.clock)
        path = os.path.join(folder, f"{name}.xk")
        runtime.save(xmodel, path, shape)
        engine = runtime.load(path, backend="engine")
        program = runtime.load(path, backend="cpu")
        times["xkern engine X"] = median_ms(lambda: engine.predict(x), args.repeats, args.clock)
        times["xkern numpy executor X"] = median_ms(lambda: program.predict(x), args.repeats, args.clock)
        ort_runs = {}
        for label, model, mode in (("ORT X gather", xmodel, "gather"),
                                   ("ORT X dense-equiv.", xmodel, "dense"),
                                   ("ORT dense", dense, "gather")):
            onnx_path = os.path.join(folder, f"{name}-{mode}-{label[4]}.onnx")
            xonnx.export(model, onnx_path, shape, xconv=mode)
            ort_runs[label] = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
            times[label] = median_ms(lambda s=ort_runs[label]: s.run(None, {"x": x}), args.repeats, args.clock)
        # the ratio of the targets, from one interleaved run of the two
        dense_ort = ort_runs["ORT dense"]
        times["xkern engine X"], times["ORT dense"] = paired_median_ms(
            [lambda: engine.predict(x), lambda: dense_ort.run(None, {"x": x})], args.repeats, args.clock,
            block=1 if args.threads == 1 else 10)
        times["engine / ORT dense"] = times["xkern engine X"] / times["ORT dense"]
        with torch.no_grad():
            ref = xmodel(xt).numpy()
        err = max(np.abs(engine.predict(x) - ref).max(), np.abs(program.predict(x) - ref).max(),
                  np.abs(ort_runs["ORT X gather"].run(None, {"x": x})[0] - ref).max()) / np.abs(ref).max()
        rows.append((f"{name}{f' block {args.block}' if args.block > 1 else ''} ({side}x{side})", times, err))
        notes.append((name, overhead(program, x, args.repeats, fixed, args.clock)))
        print(f"# done {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in times.items()), flush=True)
    return rows, notes, fixed


def markdown(rows, notes, fixed, args):
    cols = list(rows[0][1])
    lines = ["## Edge inference (batch 1, CPU)", "",
             f"`python benchmarks/edge_latency.py --threads {args.threads} --repeats {args.repeats} "
             f"--clock {args.clock}{f' --block {args.block}' if args.block > 1 else ''}` on {cpu_name()}, "
             f"{args.threads} thread(s) for every engine; "
             f"median ms of single calls ({CLOCK_WORDS[args.clock]}), batch 1, float32; load average "
             f"{os.getloadavg()[0]:.1f} at the end of the run.", "",
             "| model | " + " | ".join(cols) + " | xkern / ORT max abs err over max abs logit |",
             "|---" * (len(cols) + 2) + "|"]
    for label, times, err in rows:
        lines.append(f"| {label} | " + " | ".join(f"{times[c]:.2f}" for c in cols) + f" | {err:.1e} |")
    lines += ["", "Per-layer overhead of the numpy executor at batch 1.  Fixed costs on a 1x8x1x1 input, 1 thread: "
              f"one conv step {fixed['conv step'] * 1e3:.1f} us, of which the bare kernel call "
              f"{fixed['kernel call'] * 1e3:.1f} us; one numpy step {fixed['numpy step'] * 1e3:.1f} us.", "",
              "| model | steps | predict T (ms) | Python overhead (ms) | share of T | "
              "kernel-call set-up (ms) | share of T |", "|---|---|---|---|---|---|---|"]
    for name, (total, n, python, setup) in notes:
        lines.append(f"| {name} | {n} | {total:.2f} | {python:.2f} | {python / total:.1%} | "
                     f"{setup:.2f} | {setup / total:.1%} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--models", nargs="*", help="X model names (default: all three)")
    p.add_argument("--block", type=int, default=1,
                   help="the X models' expanders in blocks of this many outputs (xkern.models.create's block)")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall: latency; cpu: process CPU time, steadier on a shared machine "
                        "(needs --threads 1: with more it adds the threads' times up)")
    args = p.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        p.error("--clock cpu needs --threads 1")
    print(markdown(*run(args), args))


if __name__ == "__main__":
    main()
