"""GPU check of the CUDA backend: the oracle tests on the card, then timings against cuDNN.

Run on a machine with an NVIDIA GPU, torch built with CUDA and numba-cuda:

    python benchmarks/gpu_check.py                 # tests + correctness + timings
    python benchmarks/gpu_check.py --skip-tests    # timings only
    python benchmarks/gpu_check.py --block 1 8     # random and block-8 expanders

Reference layers (batch 32, padding k//2, random expander index of degree
D = Cin / C): L1 1x1 256->256 at 14x14, L2 3x3 128->128 at 28x28, L3 3x3
256->256 at 14x14, L4 1x1 384->192 at 32x32.  Compared, all float32 on torch's
current stream, median of --reps timings of --inner back-to-back steps
(CUDA events, so host launch overhead that leaves the GPU idle counts):

- xkern: xkern.ops.xconv2d / xconv2d_backward (all three gradients) on torch
  CUDA tensors, index a torch CUDA tensor as a module buffer would be;
- grouped: cuDNN conv2d with groups=C (the same number of weights);
- masked: the paper's approach, conv2d(x, W * mask) with W dense and the
  masked weight built inside the timed step;
- dense: cuDNN conv2d on the full dense weight.

cuDNN runs with TF32 off (numba has no tensor cores: like for like); the
TF32-on timings are printed separately.  Host time per call (perf_counter over
back-to-back calls on a tiny layer, no synchronisation) is printed against the
budget of 15 us per forward and 40 us per fwd+bwd.  Targets (issue 20): fwd+bwd
at least 1.5x grouped conv's speed (geometric mean), random expanders at C >= 4 at
least as fast as masked dense, block-8 expanders at least 2x grouped conv.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

LAYERS = {  # name: (Cin, Cout, k, H=W)
    "L1": (256, 256, 1, 14),
    "L2": (128, 128, 3, 28),
    "L3": (256, 256, 3, 14),
    "L4": (384, 192, 1, 32),
}
BATCH = 32
COMPRESSIONS = (2, 4, 8)


def run_oracle_tests():
    """tests/test_cuda.py and test_cuda_staged.py on the GPU (torch, CuPy and numba arrays);
    returns pytest's exit code."""
    env = dict(os.environ, XKERN_CUDA_REAL="1", NUMBA_ENABLE_CUDASIM="0")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           os.path.join(ROOT, "tests", "test_cuda.py"),
                           os.path.join(ROOT, "tests", "test_cuda_staged.py")], env=env, cwd=ROOT).returncode


def random_index(n_out, n_in, degree, rng):
    """Each output reads degree distinct random inputs."""
    return np.stack([rng.choice(n_in, degree, replace=False) for _ in range(n_out)]).astype(np.int64)


class Layer:
    """Tensors of one reference layer at compression c, on the GPU."""

    def __init__(self, torch, name, c, block=1, seed=0):
        n_in, n_out, k, hw = LAYERS[name]
        rng = np.random.default_rng(seed)
        dev = "cuda"
        self.name, self.c, self.block, self.k, self.pad = name, c, block, k, k // 2
        self.degree = n_in // c
        if block == 1:
            self.index_host = random_index(n_out, n_in, self.degree, rng)
        else:  # runs of `block` outputs read one random index row
            from xkern.graphs import expander
            self.index_host = np.asarray(expander(n_in, n_out, self.degree, seed=seed, block=block), dtype=np.int64)
        self.index = torch.from_numpy(self.index_host).to(dev)
        scale = (self.degree * k * k) ** -0.5
        self.x = torch.randn(BATCH, n_in, hw, hw, device=dev)
        self.weight = torch.randn(n_out, self.degree, k, k, device=dev) * scale
        self.bias = torch.randn(n_out, device=dev)
        self.grad_out = torch.randn(BATCH, n_out, hw, hw, device=dev)
        rows = torch.arange(n_out, device=dev)[:, None].expand(n_out, self.degree)
        self.dense = torch.zeros(n_out, n_in, k, k, device=dev).index_put(
            (rows, self.index), self.weight, accumulate=True)
        self.mask = (self.dense != 0).float()
        self.grouped = torch.randn(n_out, n_in // c, k, k, device=dev) * scale


def check_layer(torch, ops, layer):
    """Largest error of xkern float32 (forward, grad_x, grad_w, grad_b) against torch float64,
    relative to each result's largest magnitude."""
    F = torch.nn.functional
    x = layer.x.double().requires_grad_()
    w = layer.weight.double().requires_grad_()
    b = layer.bias.double().requires_grad_()
    n_out, degree = layer.index.shape
    rows = torch.arange(n_out, device="cuda")[:, None].expand(n_out, degree)
    dense = torch.zeros(layer.dense.shape, dtype=torch.float64, device="cuda").index_put(
        (rows, layer.index), w, accumulate=True)
    out = F.conv2d(x, dense, b, 1, layer.pad)
    out.backward(layer.grad_out.double())
    got = [ops.xconv2d(layer.x, layer.weight, layer.index, layer.bias, 1, layer.pad)]
    got += ops.xconv2d_backward(layer.grad_out, layer.x, layer.weight, layer.index, 1, layer.pad)
    errors = []
    for g, want in zip(got, [out.detach(), x.grad, w.grad, b.grad]):
        assert isinstance(g, torch.Tensor) and g.is_cuda and g.dtype == torch.float32
        errors.append(float((g.double() - want).abs().max() / want.abs().max()))
    return max(errors)


def gpu_ms(torch, step, reps, inner):
    """Median milliseconds per step over reps timings of inner back-to-back steps."""
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / inner)
    return statistics.median(times)


def torch_steps(torch, layer):
    """{name: (forward step, forward+backward step)} for the cuDNN baselines."""
    F = torch.nn.functional
    x = layer.x.detach().requires_grad_()
    dense = layer.dense.detach().requires_grad_()
    grouped = layer.grouped.detach().requires_grad_()
    bias = layer.bias.detach().requires_grad_()
    g, pad, c = layer.grad_out, layer.pad, layer.c

    def fwd_bwd(make):
        def step():
            make().backward(g)
        return step

    with_grad = {
        "dense": lambda: F.conv2d(x, dense, bias, 1, pad),
        "grouped": lambda: F.conv2d(x, grouped, bias, 1, pad, 1, c),
        "masked": lambda: F.conv2d(x, dense * layer.mask, bias, 1, pad),
    }

    def no_grad(make):
        def step():
            with torch.no_grad():
                make()
        return step

    return {name: (no_grad(make), fwd_bwd(make)) for name, make in with_grad.items()}


def xkern_steps(ops, layer):
    x, w, idx, b, g, pad = layer.x, layer.weight, layer.index, layer.bias, layer.grad_out, layer.pad
    return {
        "fwd": lambda: ops.xconv2d(x, w, idx, b, 1, pad),
        "bwd_input": lambda: ops.xconv2d_backward(g, x, w, idx, 1, pad, grads=("input",)),
        "bwd_weight": lambda: ops.xconv2d_backward(g, x, w, idx, 1, pad, grads=("weight",)),
        "fwd_bwd": lambda: (ops.xconv2d(x, w, idx, b, 1, pad), ops.xconv2d_backward(g, x, w, idx, 1, pad)),
    }


def host_us(torch, step, calls=200):
    """Microseconds of host time per call over back-to-back calls (no synchronisation)."""
    for _ in range(10):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        step()
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize()
    return elapsed / calls * 1e6


def geomean(values):
    return float(np.exp(np.mean(np.log(values)))) if values else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-tests", action="store_true", help="do not run tests/test_cuda.py first")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--inner", type=int, default=10)
    parser.add_argument("--layers", default=",".join(LAYERS))
    parser.add_argument("--block", nargs="+", type=int, default=[1], dest="blocks",
                        help="expander blocks: 1 random, 8 runs of 8 outputs sharing an index row")
    args = parser.parse_args()

    import torch
    from xkern import ops
    from xkern.backends import cuda as backend

    if not torch.cuda.is_available():
        sys.exit("gpu_check: torch sees no CUDA GPU")
    backend.require()
    card = torch.cuda.get_device_name()
    print(f"# card: {card}; torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}; "
          f"numba sees {backend.device_name()}", flush=True)
    if not args.skip_tests:
        code = run_oracle_tests()
        print(f"# oracle tests on the GPU: {'passed' if code == 0 else f'FAILED (exit {code})'}", flush=True)

    tiny = torch.randn(1, 16, 4, 4, device="cuda"), torch.randn(16, 4, 1, 1, device="cuda")
    tiny_index = torch.from_numpy(random_index(16, 16, 4, np.random.default_rng(0))).cuda()
    overhead = gpu_ms(torch, lambda: ops.xconv2d(*tiny, tiny_index), args.reps, args.inner)
    print(f"# xkern forward of a tiny layer (host and launch overhead): {overhead:.3f} ms", flush=True)
    tiny_g = torch.randn(1, 16, 4, 4, device="cuda")
    fwd_us = host_us(torch, lambda: ops.xconv2d(*tiny, tiny_index))
    step_us = host_us(torch, lambda: (ops.xconv2d(*tiny, tiny_index),
                                      ops.xconv2d_backward(tiny_g, *tiny, tiny_index)))
    print(f"# host time per call: forward {fwd_us:.1f} us (budget 15), fwd+bwd {step_us:.1f} us (budget 40)",
          flush=True)
    rows = []
    for name, c, block in [(n, c, b) for n in args.layers.split(",") for b in args.blocks for c in COMPRESSIONS]:
        layer = Layer(torch, name, c, block)
        err = check_layer(torch, ops, layer)
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        ms = {f"xkern_{k}": gpu_ms(torch, s, args.reps, args.inner) for k, s in xkern_steps(ops, layer).items()}
        for base, (fwd, fwd_bwd) in torch_steps(torch, layer).items():
            ms[f"{base}_fwd"] = gpu_ms(torch, fwd, args.reps, args.inner)
            ms[f"{base}_fwd_bwd"] = gpu_ms(torch, fwd_bwd, args.reps, args.inner)
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.matmul.allow_tf32 = True
        for base, (fwd, fwd_bwd) in torch_steps(torch, layer).items():
            ms[f"{base}_fwd_tf32"] = gpu_ms(torch, fwd, args.reps, args.inner)
            ms[f"{base}_fwd_bwd_tf32"] = gpu_ms(torch, fwd_bwd, args.reps, args.inner)
        torch.backends.cudnn.allow_tf32 = False
        rows.append((f"{name} b{block}" if block > 1 else name, c, err, ms))
        print(f"# {name} C={c} block={block}: max rel err {err:.1e}; " +
              ", ".join(f"{k} {v:.3f}" for k, v in ms.items()), flush=True)

    print("\nFP32, TF32 off (ms per step, median):\n")
    print("| layer | C | xkern fwd | xkern fwd+bwd | grouped fwd | grouped fwd+bwd | masked fwd | "
          "masked fwd+bwd | dense fwd | dense fwd+bwd | fwd+bwd vs grouped | fwd+bwd speedup vs masked "
          "(target 0.5*C) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, c, _, ms in rows:
        vs_grouped = ms["grouped_fwd_bwd"] / ms["xkern_fwd_bwd"]
        vs_masked = ms["masked_fwd_bwd"] / ms["xkern_fwd_bwd"]
        print(f"| {name} | {c} | {ms['xkern_fwd']:.3f} | {ms['xkern_fwd_bwd']:.3f} | {ms['grouped_fwd']:.3f} | "
              f"{ms['grouped_fwd_bwd']:.3f} | {ms['masked_fwd']:.3f} | {ms['masked_fwd_bwd']:.3f} | "
              f"{ms['dense_fwd']:.3f} | {ms['dense_fwd_bwd']:.3f} | {vs_grouped:.2f}x "
              f"{'ok' if vs_grouped >= 1 else 'MISSED'} | {vs_masked:.2f}x "
              f"{'ok' if vs_masked >= 0.5 * c else 'MISSED'} |")
    print("\nxkern parts, FP32 (ms): forward, grad_input alone, grad_weight alone; max relative error "
          "of all four results against torch float64:\n")
    print("| layer | C | fwd | bwd_input | bwd_weight | max rel err |")
    print("|---|---|---|---|---|---|")
    for name, c, err, ms in rows:
        print(f"| {name} | {c} | {ms['xkern_fwd']:.3f} | {ms['xkern_bwd_input']:.3f} | "
              f"{ms['xkern_bwd_weight']:.3f} | {err:.1e} |")
    vs_grouped = [ms["grouped_fwd_bwd"] / ms["xkern_fwd_bwd"] for _, _, _, ms in rows]
    print(f"\nfwd+bwd vs grouped, geometric mean: {geomean(vs_grouped):.2f}x (target 1.5x)")
    random_c4 = [ms["masked_fwd_bwd"] / ms["xkern_fwd_bwd"] for n, c, _, ms in rows if " b" not in n and c >= 4]
    if random_c4:
        print(f"random expanders at C >= 4 vs masked dense: min {min(random_c4):.2f}x (target 1x)")
    block8 = [ms["grouped_fwd_bwd"] / ms["xkern_fwd_bwd"] for n, _, _, ms in rows if n.endswith(" b8")]
    if block8:
        print(f"block-8 expanders vs grouped: min {min(block8):.2f}x, geometric mean {geomean(block8):.2f}x "
              f"(target 2x)")
    print("\ncuDNN with TF32 on (ms):\n")
    print("| layer | C | grouped fwd | grouped fwd+bwd | masked fwd | masked fwd+bwd | dense fwd | dense fwd+bwd |")
    print("|---|---|---|---|---|---|---|---|")
    for name, c, _, ms in rows:
        print(f"| {name} | {c} | {ms['grouped_fwd_tf32']:.3f} | {ms['grouped_fwd_bwd_tf32']:.3f} | "
              f"{ms['masked_fwd_tf32']:.3f} | {ms['masked_fwd_bwd_tf32']:.3f} | {ms['dense_fwd_tf32']:.3f} | "
              f"{ms['dense_fwd_bwd_tf32']:.3f} |")


if __name__ == "__main__":
    main()
