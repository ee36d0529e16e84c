"""Where an X-Net's CPU training step spends its time, beside its dense twin's.

    python benchmarks/profile_step.py [--model x-densenet-bc-2-40-24] [--batch 64] [--steps 2]

torch.profiler's self CPU time per op over --steps profiled steps (after 2 warm-up steps),
summed into: conv forward, conv backward, batch norm, the rest; printed per step as a
markdown table (the X layers are the xkern:: custom ops, the dense convolutions mkldnn's).
"""
import argparse
import time

import torch

from xkern.bench.models import NUM_CLASSES, PAIRS
from xkern.models import create

GROUPS = (
    ("conv backward", ("xkern::xconv2d_bwd", "convolution_backward")),
    ("conv forward", ("xkern::xconv2d_fwd", "mkldnn_convolution", "aten::thnn_conv2d", "aten::_convolution")),
    ("batch norm fwd + bwd", ("batch_norm",)),
)


def _group(name):
    for label, keys in GROUPS:
        if any(key in name for key in keys):
            return label
    return "everything else"


def profile(name, batch, input_shape, steps):
    torch.manual_seed(0)
    model = create(name, NUM_CLASSES, seed=0)
    model.train()
    x = torch.randn((batch,) + tuple(input_shape))
    y = torch.randint(0, NUM_CLASSES, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(2):
        step()
    start = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    wall = (time.perf_counter() - start) / steps * 1e3
    totals = {}
    for event in prof.key_averages():
        label = _group(event.key)
        totals[label] = totals.get(label, 0.0) + event.self_cpu_time_total / 1e3 / steps
    return totals, wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="x-densenet-bc-2-40-24", choices=[p.x_name for p in PAIRS])
    parser.add_argument("--batch", type=int)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    pair = next(p for p in PAIRS if p.x_name == args.model)
    batch = args.batch or pair.batch
    rows = {}
    for name in (pair.x_name, pair.dense_name):
        rows[name] = profile(name, batch, pair.input_shape, args.steps)
    labels = [label for label, _ in GROUPS] + ["everything else"]
    print(f"| self CPU ms per step, batch {batch} | {pair.x_name} | {pair.dense_name} |")
    print("|---|---|---|")
    for label in labels:
        cells = []
        for name in (pair.x_name, pair.dense_name):
            totals, _ = rows[name]
            total = sum(totals.values())
            cells.append(f"{totals.get(label, 0.0):.0f} ({100 * totals.get(label, 0.0) / total:.0f}%)")
        print(f"| {label} | {cells[0]} | {cells[1]} |")
    print(f"| whole step (wall, profiled) | {rows[pair.x_name][1]:.0f} | {rows[pair.dense_name][1]:.0f} |")


if __name__ == "__main__":
    main()
