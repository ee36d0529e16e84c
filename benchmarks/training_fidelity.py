"""Does training through xkern's kernels match training the paper's way?

Trains one X-Net on digits from the same seeds twice: once through xkern's kernels (compact
weights, Winograd where the rule takes it), once through torch's conv2d / linear on the
dense-equivalent weight, which holds each layer's compact weights at its graph's edges and
zeros elsewhere: the paper's masked dense weight, as its own code trained it.  Both runs
start from the same weights and graphs, see the same batches and augmentation and take the
same optimiser steps, so they differ only by float32 rounding (summation order, Winograd's
transforms).  Prints each seed's validation accuracy, then the means.

    python benchmarks/training_fidelity.py            # x-resnet-2-18, 3 epochs, seeds 0-2
    python benchmarks/training_fidelity.py --seeds 0 1 2 3 4 --image-size 16
"""
import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # as the CLI does: idle threads sleep

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from xkern.nn import XConv2d, XLinear  # noqa: E402
from xkern.training import data as datasets  # noqa: E402
from xkern.training import distributed  # noqa: E402
from xkern.training.loop import RunConfig, fit  # noqa: E402
from xkern.training.recipes import recipe_for  # noqa: E402


def _dense_weight(layer):
    """(Cout, Cin, *kernel) with layer.weight at the graph's edges, zeros elsewhere;
    differentiable in layer.weight (repeated edges add up, as in the X layer)."""
    n_out, degree = layer.index.shape
    dense = layer.weight.new_zeros((n_out, layer._n_in(), *layer.weight.shape[2:]))
    rows = torch.arange(n_out, device=layer.index.device)[:, None].expand(n_out, degree)
    return dense.index_put((rows, layer.index), layer.weight, accumulate=True)


def _masked_conv(self, x):
    return F.conv2d(x, _dense_weight(self), self.bias, self.stride, self.padding, self.dilation)


def _masked_linear(self, x):
    return F.linear(x, _dense_weight(self), self.bias)


@contextlib.contextmanager
def masked_dense():
    """X layers compute by torch on their masked dense weight instead of xkern's kernels."""
    saved = XConv2d.forward, XLinear.forward
    XConv2d.forward, XLinear.forward = _masked_conv, _masked_linear
    try:
        yield
    finally:
        XConv2d.forward, XLinear.forward = saved


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="x-resnet-2-18")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, help="default: the digits recipe's (16)")
    p.add_argument("--lr", type=float, help="default: the digits recipe's (0.01)")
    args = p.parse_args(argv)
    recipe = recipe_for(args.model, "digits", args.epochs, lr=args.lr, batch_size=args.batch_size)

    splits = datasets.load("digits", image_size=args.image_size)
    ctx = distributed.setup("cpu")
    print(f"{args.model} on digits at {args.image_size}x{args.image_size}, {args.epochs} epochs, "
          f"{recipe.describe()}; torch {torch.__version__}, {torch.get_num_threads()} threads",
          flush=True)
    accuracy = {"xkern": [], "masked": []}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for impl in accuracy:
                config = RunConfig(model=args.model, data="digits", out=os.path.join(tmp, f"{impl}{seed}"),
                                   epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed,
                                   image_size=args.image_size, progress=False)
                with (masked_dense() if impl == "masked" else contextlib.nullcontext()), \
                        contextlib.redirect_stdout(open(os.devnull, "w")):
                    rows = fit(config, ctx, splits)
                accuracy[impl].append(rows[-1]["val_accuracy"])
            print(f"seed {seed}: xkern {100 * accuracy['xkern'][-1]:.2f}%, "
                  f"masked dense {100 * accuracy['masked'][-1]:.2f}%", flush=True)
    distributed.teardown()
    for impl, name in (("xkern", "xkern kernels"), ("masked", "masked dense (torch)")):
        values = [100 * a for a in accuracy[impl]]
        spread = f" +- {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        print(f"{name:22s} mean {statistics.mean(values):.2f}{spread}%  "
              f"(min {min(values):.2f}, max {max(values):.2f}, {len(values)} seeds)")
    diffs = [100 * (a - b) for a, b in zip(accuracy["xkern"], accuracy["masked"])]
    print(f"xkern - masked per seed: {', '.join(f'{d:+.2f}' for d in diffs)} points; "
          f"{time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
