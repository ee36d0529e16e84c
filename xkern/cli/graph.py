"""`python -m xkern graph`: an expander against the grouped pattern of the same density.

Both stacks have `depth` layers: n_in -> n_out, then n_out -> n_out.  The table
describes the first layer's graph (sigma2 against the bipartite Ramanujan bound,
the gap, mixing) and the whole stack (sensitivity depth); a second table gives the
fraction of connected input-output pairs after each depth, which --plot draws.
"""


def register(sub):
    from ..graphs import METHODS
    p = sub.add_parser("graph", help="compare an expander graph with a grouped convolution's")
    p.add_argument("--n-in", type=int, default=256, help="input channels (default 256)")
    p.add_argument("--n-out", type=int, default=None, help="output channels (default: --n-in)")
    p.add_argument("--degree", type=int, default=16, help="inputs per output, D (default 16)")
    p.add_argument("--depth", type=int, default=6, help="layers in the stack (default 6)")
    p.add_argument("--method", choices=METHODS, default="random", help="expander construction")
    p.add_argument("--block", type=int, default=1, help="outputs per shared neighbour set")
    p.add_argument("--seed", type=int, default=0, help="seed of the expander layers (default 0)")
    p.add_argument("--plot", metavar="FILE.png", help="draw connected pairs against depth (needs matplotlib)")
    p.set_defaults(func=run)


def _stacks(args, n_out):
    """(expander layers, grouped layers, groups of the first layer), or SystemExit saying why not."""
    import numpy as np
    from ..graphs import expander, grouped
    if args.depth < 1:
        raise SystemExit(f"xkern graph: --depth must be >= 1, got {args.depth}")
    sizes = [(args.n_in, n_out)] + [(n_out, n_out)] * (args.depth - 1)
    rng = np.random.default_rng(args.seed)
    try:
        xs = [expander(a, b, args.degree, method=args.method, seed=rng, block=args.block) for a, b in sizes]
    except ValueError as exc:
        raise SystemExit(f"xkern graph: {exc}") from None
    for a, b in sizes[:2]:
        if a % args.degree or b % (a // args.degree):
            raise SystemExit(f"xkern graph: no grouped pattern of the same density for {a} -> {b} "
                             f"channels: --degree must divide {a}, and {a} / degree divide {b}")
    gs = [grouped(a, b, a // args.degree) for a, b in sizes]
    return xs, gs, args.n_in // args.degree


def _plot(path, depths, x_frac, g_frac, x_label, g_label, title):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    ax.plot(depths, x_frac, "o-", label=x_label)
    ax.plot(depths, g_frac, "s--", label=g_label)
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("input-output pairs connected")
    ax.set_ylim(0, 1.05)
    ax.set_xticks(depths)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run(args):
    import math

    from .._extras import require
    from ..graphs import connectivity, mixing, sensitivity_depth, spectral_gap
    if args.plot:
        require("--plot", "matplotlib", extra="graphs")
    n_out = args.n_in if args.n_out is None else args.n_out
    xs, gs, groups = _stacks(args, n_out)
    block = f", block {args.block}" if args.block > 1 else ""
    x_label = f"X {args.method}{block}"
    g_label = f"G groups={groups}"
    title = f"{args.n_in} -> {n_out} channels, D={args.degree}"
    print(f"{title}, depth {args.depth}, seed {args.seed}")
    print(f"{'pattern':24s} {'sigma1':>7s} {'sigma2':>7s} {'bound':>7s} {'gap':>7s} "
          f"{'sens. depth':>11s} {'mixing':>7s}")
    fractions = []
    for label, stack in ((x_label, xs), (g_label, gs)):
        sg = spectral_gap(stack[0], args.n_in)
        depth = sensitivity_depth(stack, args.n_in)
        mix = mixing(stack[0], args.n_in, seed=args.seed)
        print(f"{label:24s} {sg.sigma1:7.2f} {sg.sigma2:7.2f} {sg.bound:7.2f} {sg.gap:7.2f} "
              f"{'never' if depth is None else depth:>11} {mix:7.2f}")
        fractions.append(connectivity(stack, args.n_in))
    print("bound: sqrt(D - 1) + sqrt(dR - 1), dR = n_out * D / n_in the average input degree\n"
          "mixing: largest |e(S,T) - mu| / mu found, mu = D|S||T|/n_in, S and T half of each side")
    print()
    depths = list(range(1, args.depth + 1))
    print(f"{'connected pairs':24s} " + " ".join(f"{'depth ' + str(d):>8s}" for d in depths))
    for label, frac in zip((x_label, g_label), fractions):
        # floor, so that a stack one pair short of full never prints 100.0%
        print(f"{label:24s} " + " ".join(f"{math.floor(f * 1000) / 10:7.1f}%" for f in frac))
    if args.plot:
        _plot(args.plot, depths, fractions[0], fractions[1], x_label, g_label, title)
        print(f"\nplot written to {args.plot}")
    return 0
