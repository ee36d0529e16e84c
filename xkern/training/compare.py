"""Dense vs X vs G twins of one network at equal sparsity, over seeds (the paper's Fig. 3).

Each (model, seed) run is an ordinary training run in OUT/<model>/seed<k>/, so an interrupted
comparison resumes where it stopped.  The summary is OUT/compare.json and OUT/compare.png
(accuracy against MACs per image).
"""
import json
import math
import os
from dataclasses import replace

from . import data as datasets
from . import loop

KINDS = ("dense", "x", "g")


def twin(dense, kind, compression):
    """Registry name of the kind ("x" or "g") version of `dense` with compression C, or None.

    The registry writes C right after the family name: x-mobilenet-0.5-4, x-resnet-4-18,
    x-densenet-bc-4-40-24.  C goes at the earliest position the registry accepts.
    """
    tokens = dense.split("-")
    for i in range(1, len(tokens) + 1):
        name = "-".join([kind] + tokens[:i] + [str(compression)] + tokens[i:])
        try:
            loop.build_model(name, 10, 0)
        except ValueError:
            continue
        return name
    return None


# Their X names end in the paper's variant number (x-vgg16-cifar-1 is C = 9), not in C.
VARIANT_FAMILIES = ("vgg16-cifar", "alexnet")


def plan(family, compressions):
    """[(kind, compression or None, model name)]: the dense model, then its X and G twins."""
    if family in VARIANT_FAMILIES:
        raise ValueError(f"family: the X versions of {family} are numbered variants, not "
                         f"compressions; list the models to compare with --models")
    runs = [("dense", None, family)]
    for c in compressions:
        runs += [(kind, c, name) for kind in ("x", "g") if (name := twin(family, kind, c))]
    return runs


def run_all(runs, base, seeds, ctx, log=print):
    """Train every (kind, C, model) of runs for each seed in seeds; returns one summary row per model.

    base: a loop.RunConfig whose model, out, seed and resume are filled in per run.  With
    base.block > 1 the X models' runs are named <model>-block<B> (their folders too); the dense
    and grouped models have no expanders and keep their names.
    """
    splits = datasets.load(base.data, base.data_dir, image_size=base.image_size, limit=base.limit)
    results = []
    for kind, compression, name in runs:
        accuracies, step_ms = [], []
        block = base.block if kind == "x" else 1
        label = f"{name}-block{block}" if block > 1 else name
        for seed in seeds:
            out = os.path.join(base.out, label, f"seed{seed}")
            config = replace(base, model=name, seed=seed, out=out, block=block,
                             resume=os.path.isfile(os.path.join(out, loop.CHECKPOINT)))
            rows = loop.fit(config, ctx, splits)
            accuracies.append(rows[-1]["val_accuracy"])
            step_ms += [r["ms_per_step"] for r in rows if "ms_per_step" in r]
        cost = loop.model_cost(loop.build_model(name, splits.num_classes, seeds[0], block),
                               splits.image_shape)
        mean = sum(accuracies) / len(accuracies)
        std = (math.sqrt(sum((a - mean) ** 2 for a in accuracies) / (len(accuracies) - 1))
               if len(accuracies) > 1 else 0.0)
        results.append({"model": label, "kind": kind, "compression": compression, "block": block,
                        "params": cost["params"], "macs": cost["macs"], "seeds": list(seeds),
                        "val_accuracy": accuracies, "mean": mean, "std": std,
                        # median over epochs and seeds: the first epoch's warm-up counts once
                        "ms_per_step": _median(step_ms)})
        log(f"compare: {name}: {100 * mean:.2f} +- {100 * std:.2f}% over {len(seeds)} seed(s)")
    return results


def _median(values):
    values = sorted(values)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def table(results, epochs):
    """Text table: model, kind, C, params, MACs, ms per training step, accuracy mean +- std (n);
    then each twin against the dense model: MACs, parameters and step time as ratios."""
    lines = [f"{'model':28s} {'kind':5s} {'C':>3s} {'params':>10s} {'MACs':>12s} {'ms/step':>8s}  "
             f"val accuracy after {epochs} epoch(s)"]
    for r in results:
        step = f"{r['ms_per_step']:8.1f}" if r.get("ms_per_step") else f"{'-':>8s}"
        lines.append(f"{r['model']:28s} {r['kind']:5s} {r['compression'] or '-':>3} "
                     f"{r['params'] / 1e6:9.3f}M {r['macs'] / 1e6:11.2f}M {step}  "
                     f"{100 * r['mean']:6.2f} +- {100 * r['std']:5.2f}%  (n={len(r['seeds'])})")
    dense = next((r for r in results if r["kind"] == "dense"), None)
    for r in results:
        if dense is None or r is dense:
            continue
        speed = (f", training step {dense['ms_per_step'] / r['ms_per_step']:.2f}x as fast"
                 if r.get("ms_per_step") and dense.get("ms_per_step") else "")
        lines.append(f"{r['model']} against {dense['model']}: {dense['macs'] / r['macs']:.2f}x fewer "
                     f"MACs, {dense['params'] / r['params']:.2f}x fewer parameters{speed}, accuracy "
                     f"{100 * (r['mean'] - dense['mean']):+.2f} points")
    return "\n".join(lines)


def save(results, out, meta):
    """OUT/compare.json (results plus meta) and OUT/compare.png; returns the PNG path or None."""
    with open(os.path.join(out, "compare.json"), "w") as f:
        json.dump({**meta, "results": results}, f, indent=2)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    styles = {"dense": ("k", "*", "dense"), "x": ("tab:blue", "o", "X (expander)"),
              "g": ("tab:orange", "s", "G (grouped)")}
    for kind in KINDS:
        rows = sorted((r for r in results if r["kind"] == kind), key=lambda r: r["macs"])
        if not rows:
            continue
        color, marker, label = styles[kind]
        ax.errorbar([r["macs"] / 1e6 for r in rows], [100 * r["mean"] for r in rows],
                    yerr=[100 * r["std"] for r in rows], color=color, marker=marker,
                    markersize=9 if kind == "dense" else 6, capsize=3, label=label,
                    linestyle="-" if len(rows) > 1 else "none")
        for r in rows:  # X labels below the point, others above: X and G twins share MACs
            ax.annotate(r["model"], (r["macs"] / 1e6, 100 * r["mean"]), fontsize=7,
                        xytext=(4, -10 if kind == "x" else 4), textcoords="offset points")
    ax.set(xlabel="MACs per image (millions)", ylabel="val accuracy (%)",
           title=f"{meta['data']}, {meta['epochs']} epoch(s), mean \u00b1 std over {len(meta['seeds'])} seed(s)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = os.path.join(out, "compare.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

