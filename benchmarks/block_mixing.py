"""Do block expanders mix channels as well as random ones?  A task that needs every input
channel at every output, learnt by stacks of X-Linear layers with each graph kind.

    python benchmarks/block_mixing.py [--width 64] [--degree 8] [--layers 4] [--seeds 0 1 2]

The teacher is a random dense map on `width` inputs: y = argmax(A x), A (classes, width),
x ~ N(0, I) (with --hidden, a two-layer one: y = argmax(A relu(B x)), B (width, width)).
Each class score depends on all the inputs, and the student has no dense layer to mix them:
it is `layers` X-Linear layers of width -> width (degree D, BatchNorm and ReLU between them)
whose first `classes` outputs are the logits. A graph that lets an input reach no logit, or
reach it through few paths, shows up as lost accuracy. Each row: the graph kind, how many of
the inputs reach every logit (through the stacked graphs), test accuracy per seed, their
mean and sample standard deviation; the dense row is the same stack with torch.nn.Linear
layers.
Prints a markdown table for BENCHMARKS.md.
"""
import argparse
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

KINDS = (("dense", None, 1), ("random", "random", 1), ("biregular", "biregular", 1),
         ("biregular, block 4", "biregular", 4), ("biregular, block 8", "biregular", 8),
         ("random, block 8", "random", 8))


def teacher_data(width, classes, n, seed, hidden=False):
    gen = torch.Generator().manual_seed(10_000 + seed)
    b = torch.randn(width, width, generator=gen) / width ** 0.5
    a = torch.randn(classes, width, generator=gen) / width ** 0.5
    x = torch.randn(n, width, generator=gen)
    return x, ((F.relu(x @ b.T) if hidden else x) @ a.T).argmax(1)


def student(kind, width, degree, n_layers, seed):
    from xkern.nn import XLinear

    _, method, block = kind
    layers = []
    for i in range(n_layers):
        if method is None:
            layers.append(nn.Linear(width, width))
        else:
            layers.append(XLinear(width, width, degree=degree, method=method, block=block,
                                  seed=1000 * seed + i))
        if i < n_layers - 1:
            layers += [nn.BatchNorm1d(width), nn.ReLU()]
    return nn.Sequential(*layers)


def reach(model, classes, width):
    """How many inputs reach every one of the first `classes` outputs through the stacked graphs."""
    from xkern.nn import XLinear

    graphs = [m.index.numpy() for m in model if isinstance(m, XLinear)]
    if not graphs:
        return width
    per_logit = []
    for logit in range(classes):
        seen = {logit}
        for index in reversed(graphs):
            seen = {int(i) for v in seen for i in index[v]}
        per_logit.append(len(seen))
    return min(per_logit)


def accuracy(kind, args, seed):
    torch.manual_seed(seed)
    x, y = teacher_data(args.width, args.classes, args.train + args.test, seed, args.hidden)
    model = student(kind, args.width, args.degree, args.layers, seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    xt, yt, xv, yv = x[:args.train], y[:args.train], x[args.train:], y[args.train:]
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(args.train)
        for i in range(0, args.train, args.batch):
            sel = order[i:i + args.batch]
            loss = F.cross_entropy(model(xt[sel])[:, :args.classes], yt[sel])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(xv)[:, :args.classes].argmax(1) == yv).float().mean().item()
    return acc, reach(model, args.classes, args.width)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--degree", type=int, default=8)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--hidden", action="store_true", help="a teacher with a hidden ReLU layer")
    p.add_argument("--train", type=int, default=20000)
    p.add_argument("--test", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    print(f"teacher: {'two-layer ReLU network' if args.hidden else 'linear'}; student: "
          f"width {args.width}, degree {args.degree}, {args.layers} layers, {args.classes} classes, "
          f"{args.train} training / {args.test} test samples, {args.epochs} epochs of Adam "
          f"(lr {args.lr}, batch {args.batch}), seeds {' '.join(map(str, args.seeds))}\n")
    print("| graph | inputs reaching every logit | test accuracy per seed, % | mean +- std, % |")
    print("|:---|---:|---:|---:|")
    for kind in KINDS:
        try:
            runs = [accuracy(kind, args, seed) for seed in args.seeds]
        except ValueError as exc:
            print(f"| {kind[0]} | refused: {exc} | | |")
            continue
        accs = np.array([a for a, _ in runs]) * 100
        reached = min(r for _, r in runs)
        print(f"| {kind[0]} | {reached} of {args.width} | {' / '.join(f'{a:.1f}' for a in accs)} | "
              f"**{accs.mean():.1f} +- {accs.std(ddof=1) if len(accs) > 1 else 0.0:.1f}** |", flush=True)
    print(f"\n({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
