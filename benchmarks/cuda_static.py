"""Static report of the CUDA kernels at the reference layers: no GPU needed.

    python benchmarks/cuda_static.py --json FILE [--layers L1 L2 L3 L4] [-C 2 4 8] [--block 1 8]

For every (layer, C, block) it takes the launches the CUDA backend would make on an
H100 (132 SMs, 227 KiB of dynamic shared memory per block; float32, batch 32):
forward, grad_input (stride 1: the gather over the reverse graph) and grad_weight
(partial sums, and their fixed-order sum).  It compiles each distinct kernel for
sm_90 with numba-cuda's NVVM (pip package nvidia-cuda-nvrtc) and assembles the PTX
with ptxas (pip package nvidia-cuda-nvcc, else ptxas on PATH), then writes one row
per kernel configuration:

- registers, spill_bytes (stores + loads), local_bytes (the stack frame: local arrays
  the compiler could not keep in registers), shared_bytes (dynamic + static): ptxas -v;
- blocks_per_sm: resident 256-thread blocks per SM allowed by registers (65,536 per SM,
  allocated per warp in units of 256) and shared memory (228 KiB per SM, 1 KiB of it
  reserved per block);
- words_per_fma: in the PTX loop whose own body (nested loops excluded) holds the most
  FMAs, the 32-bit words its ld.shared / ld.global / ld.local / generic loads read (a
  .v4.f32 load counts 4) over its FMAs.  Warp shuffles are not loads and are not counted.

Design numbers (shared/DESIGN.md, issue 20): words_per_fma <= 1.0 for random 1x1
kernels, <= 0.5 for 3x3, <= 0.3 for kernels whose edges feed 8 outputs (block 8);
no spills and no stack frame; at least one block per SM.  One exception, a floor
rather than a choice: the grad_weight of a random 1x1 conv multiplies every x word
with a grad_out word of its own edge, and only edges of one row share grad_out words
(random rows share no x words), so a thread owning k edges of a row loads (4 + 4k)
words per 4k FMAs; its row answers to 1 + 1/k (k = 32: 1.031).  Shuffles, which use
the same pipe as shared loads, are reported beside words_per_fma (shuffles_per_fma).
Rows that miss a design number have ok = false; --check makes the exit status 1 then.
"""
import argparse
import concurrent.futures
import json
import math
import os
import re
import subprocess
import sys
import tempfile

# The real numba.cuda (compile_ptx) even where the environment asks for the simulator.
os.environ["NUMBA_ENABLE_CUDASIM"] = "0"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

ARCH = "sm_90"
N_SM = 132                     # H100 SXM
REGISTERS_PER_SM = 65536
REGISTER_UNIT = 256            # registers are allocated per warp in units of 256
SHARED_PER_SM = 228 * 1024
SHARED_RESERVED = 1024         # per resident block
MAX_BLOCKS_PER_SM = 32
THREADS_PER_SM = 2048
DESIGN = {"random 1x1": 1.0, "3x3": 0.5, "block 8": 0.3}


def design_class(g, kernel_size):
    """Which design number a kernel's words_per_fma answers to (block 4 has none of its own:
    it answers to the random numbers of its kernel size)."""
    if g >= 8:
        return "block 8"
    return "3x3" if kernel_size == 3 else "random 1x1"


# ----- PTX analysis -----

_LABEL = re.compile(r"^\s*(\$L__\w+):")
_BRANCH = re.compile(r"\bbra(?:\.uni)?\s+(\$L__\w+);")
_LOAD = re.compile(r"^\s*(?:@!?%p\d+\s+)?ld\.(?:(global|shared|local|param|const)\.)?(?:nc\.)?"
                   r"(?:v(\d)\.)?[a-z]*(\d+)\s")
_FMA = re.compile(r"^\s*(?:@!?%p\d+\s+)?fma\.rn\.f(32|64)\b")
_SHFL = re.compile(r"^\s*(?:@!?%p\d+\s+)?shfl\.sync\.")


def hottest_loop(ptx):
    """(fmas, words, shuffles) per iteration of the loop whose own body holds the most FMAs,
    or of the whole kernel when it has no loop with FMAs."""
    lines = ptx.splitlines()
    labels = {}
    for n, line in enumerate(lines):
        m = _LABEL.match(line)
        if m:
            labels[m.group(1)] = n
    loops = []
    for n, line in enumerate(lines):
        m = _BRANCH.search(line)
        if m and labels.get(m.group(1), n + 1) <= n:
            loops.append((labels[m.group(1)], n))

    def count(rng):
        fmas = words = shuffles = 0
        for n in rng:
            line = lines[n]
            if _FMA.match(line):
                fmas += 1
                continue
            if _SHFL.match(line):
                shuffles += 1
                continue
            m = _LOAD.match(line)
            if m and m.group(1) in (None, "global", "shared", "local"):
                words += int(m.group(2) or 1) * max(1, int(m.group(3)) // 32)
        return fmas, words, shuffles

    best = None
    for lo, hi in loops:
        inner = [(a, b) for a, b in loops if lo <= a and b <= hi and (a, b) != (lo, hi)]
        own = [n for n in range(lo, hi + 1) if not any(a <= n <= b for a, b in inner)]
        counts = count(own)
        if counts[0] and (best is None or counts[0] > best[0]):
            best = counts
    return best or count(range(len(lines)))


_USED = re.compile(r"Used (\d+) registers")
_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_STACK = re.compile(r"(\d+) bytes stack frame")
_SMEM = re.compile(r"(\d+) bytes smem")


def assemble(ptx, ptxas):
    """(registers, spill bytes, stack frame bytes, static shared bytes) from ptxas -v."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        run = subprocess.run([ptxas, f"-arch={ARCH}", "-v", path, "-o", path + ".cubin"],
                             capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"ptxas failed:\n{run.stderr[-3000:]}")
    log = run.stderr
    spills = sum(int(a) + int(b) for a, b in _SPILL.findall(log))
    stack = sum(int(a) for a in _STACK.findall(log))
    smem = _SMEM.search(log)
    return int(_USED.search(log).group(1)), spills, stack, int(smem.group(1)) if smem else 0


def blocks_per_sm(registers, shared, threads):
    warps = math.ceil(threads / 32)
    regs_per_warp = math.ceil(max(registers, 1) * 32 / REGISTER_UNIT) * REGISTER_UNIT
    by_regs = REGISTERS_PER_SM // (regs_per_warp * warps)
    by_shared = SHARED_PER_SM // (shared + SHARED_RESERVED)
    return min(by_regs, by_shared, MAX_BLOCKS_PER_SM, THREADS_PER_SM // threads)


# ----- the kernels of each configuration -----

def launches(config):
    """[(kernel name, outputs per index row g of the graph it walks, Launch or a (source,
    signature) pair, dynamic shared bytes, threads of the sum kernel)] of config."""
    from xkern.backends.cuda import _plan, _staged
    from xkern.backends.cuda.xconv2d_bwd_weight import REDUCE_THREADS, sum_signature, sum_source
    from xkern.bench.layers import make_index

    layer = config.layer
    index = make_index(config)
    g = _plan.outputs_per_row(index)
    k, p = layer.kernel, layer.padding
    geom = _plan.Geometry(k, k, 1, 1, 1, 1, p, p)
    x_shape = (layer.batch, layer.cin, layer.hw, layer.hw)
    out_shape = (layer.batch, layer.cout, layer.hw, layer.hw)
    limit, item = _plan.SHARED_OPTIN_SM90, 4
    degree = config.degree
    fwd = _staged.gather_plan(geom, x_shape, out_shape, g, degree, degree, True, item, N_SM, limit)
    gin = _staged.gather_plan(_staged.grad_input_geometry(geom), out_shape, x_shape, 1, degree,
                              math.ceil(layer.cout * degree / layer.cin), False, item, N_SM, limit)
    wgt = _staged.wgrad_plan(geom, x_shape, out_shape, g, degree, item, N_SM, limit)
    rows = []
    # grad_input runs over the reverse graph, whose rows share no index row (g = 1)
    for name, launch, graph_g in (("forward", fwd, g), ("grad_input", gin, 1), ("grad_weight", wgt, g)):
        if launch is None:
            raise RuntimeError(f"{name} of {config.key} has no staged plan (channels do not fit)")
        rows.append((f"{name}_{launch.kind.replace('_wgrad', '')}", graph_g, launch, launch.shared, REDUCE_THREADS))
    f32 = np.dtype(np.float32)
    rows.append(("grad_weight_sum", g, (sum_source(f32), sum_signature(f32)), 0, REDUCE_THREADS))
    return rows


def _describe(launch):
    """A hashable description of the kernel a launch compiles (its factory's arguments)."""
    return (launch.kind,) + tuple(launch.params)


def compile_one(spec):
    """Child-process entry: spec = (key, launch or None); returns (key, registers, spills,
    static shared, fmas, words)."""
    key, launch = spec
    from numba import cuda
    from xkern.backends.cuda._launch import compile_ptx, find_ptxas, numba_types
    from xkern.backends.cuda.xconv2d_bwd_weight import sum_signature, sum_source
    f32 = np.dtype(np.float32)
    if launch is None:
        ptx, _ = cuda.compile_ptx(sum_source(f32), sum_signature(f32), cc=(9, 0))
    else:
        func, kinds = launch.source(f32)
        ptx, _ = compile_ptx(func, numba_types(kinds, f32), (9, 0))
    registers, spills, stack, static = assemble(ptx, find_ptxas())
    fmas, words, shuffles = hottest_loop(ptx)
    return key, registers, spills, stack, static, fmas, words, shuffles


def report(layer_names, compressions, blocks, jobs):
    from xkern.backends.cuda._plan import THREADS
    from xkern.bench.layers import configs
    entries, specs = [], {}
    for config in configs(layer_names, compressions, blocks):
        for name, g, launch, shared, reduce_threads in launches(config):
            is_sum = not hasattr(launch, "kind")
            key = ("sum",) if is_sum else _describe(launch)
            specs[key] = None if is_sum else launch
            threads = reduce_threads if is_sum else THREADS
            entries.append((config, name, g, key, shared, threads, None if is_sum else launch))
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        compiled = {r[0]: r[1:] for r in pool.map(compile_one, specs.items())}
    rows = []
    for config, name, g, key, shared, threads, launch in entries:
        registers, spills, stack, static, fmas, words, shuffles = compiled[key]
        total_shared = shared + static
        per_sm = blocks_per_sm(registers, total_shared, threads)
        wpf = round(words / fmas, 4) if fmas else None
        cls = design_class(g, config.layer.kernel)
        limit = None
        if fmas:
            limit = DESIGN[cls]
            if name == "grad_weight_pointwise" and g == 1:
                cls, limit = "random 1x1 grad_weight floor", round(1 + 1 / launch.params[1], 4)
        ok = spills == 0 and stack == 0 and per_sm >= 1 and (limit is None or wpf <= limit)
        rows.append(dict(
            kernel=name, layer=config.layer.name, C=config.compression, block=config.block,
            kernel_size=config.layer.kernel, registers=registers, spill_bytes=spills, local_bytes=stack,
            shared_bytes=total_shared, blocks_per_sm=per_sm, words_per_fma=wpf,
            outputs_per_row=g, kernel_outputs=None if launch is None else launch.g,
            fmas_per_iteration=fmas, words_per_iteration=words,
            shuffles_per_fma=round(shuffles / fmas, 4) if fmas else None,
            tile=None if launch is None else repr(launch.params[1] if launch.kind == "window" or
                                                   launch.kind == "window_wgrad" else launch.params),
            grid=None if launch is None else list(launch.grid),
            design=cls if fmas else None, design_words_per_fma=limit, ok=ok))
    return rows


def markdown(rows):
    head = ("| kernel | layer | C | block | k | regs | spill B | local B | shared B | blocks/SM | words/FMA "
            "| shfl/FMA | design | ok |")
    out = [head, "|" + "---|" * 14]
    for r in rows:
        wpf = "-" if r["words_per_fma"] is None else f"{r['words_per_fma']:.3f}"
        limit = "-" if r["design_words_per_fma"] is None else f"<= {r['design_words_per_fma']}"
        spf = "-" if r["shuffles_per_fma"] is None else f"{r['shuffles_per_fma']:.3f}"
        out.append(f"| {r['kernel']} | {r['layer']} | {r['C']} | {r['block']} | {r['kernel_size']} | "
                   f"{r['registers']} | {r['spill_bytes']} | {r['local_bytes']} | {r['shared_bytes']} | "
                   f"{r['blocks_per_sm']} | {wpf} | {spf} | {limit} | {'yes' if r['ok'] else 'NO'} |")
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", required=True, help="write the rows here")
    parser.add_argument("--layers", nargs="+", default=["L1", "L2", "L3", "L4"])
    parser.add_argument("-C", "--compressions", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--block", nargs="+", type=int, default=[1, 8], dest="blocks")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiler processes")
    parser.add_argument("--check", action="store_true", help="exit 1 when a row misses a design number")
    args = parser.parse_args(argv)
    from xkern.backends.cuda._launch import find_ptxas
    ptxas = find_ptxas()
    if ptxas is None:
        parser.exit(2, "ptxas not found: pip install nvidia-cuda-nvcc (or put the CUDA toolkit on PATH)\n")
    rows = report(args.layers, args.compressions, args.blocks, args.jobs)
    with open(args.json, "w") as f:
        json.dump(dict(arch=ARCH, ptxas=ptxas, rows=rows), f, indent=1)
    print(markdown(rows))
    missed = [r for r in rows if not r["ok"]]
    print(f"\n{len(rows)} rows, {len(missed)} missing a design number")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
