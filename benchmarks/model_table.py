"""Write docs/models.md: parameters and MACs of every xkern.models name, the dense
baselines against their published counts, and the rows of the paper's Tables 1-3.

    python benchmarks/model_table.py [--out docs/models.md]

Models are built on torch's meta device (no weights are drawn; the expander graphs are,
with seed=0) and counted by xkern.models.complexity, which runs a shape-only forward.
"""
import argparse
import pathlib
import re

import torch

from xkern.models import complexity, create, names

# Published counts of the dense baselines: (params, MACs, source, note).
KNOWN = {
    "resnet-18": (11.69e6, 1.81e9, "torchvision", ""),
    "resnet-34": (21.8e6, 3.7e9, "issue 6", "torchvision: 21.80M / 3.66G"),
    "resnet-50": (25.6e6, 4.1e9, "issue 6", "torchvision: 25.56M / 4.09G"),
    "resnet-101": (44.55e6, 7.80e9, "torchvision", ""),
    "densenet-bc-121": (8.0e6, 2.9e9, "issue 6",
                        "torchvision: 7.98M / 2.83G, as here; 2.9 G needs other ops counted too: "
                        "BatchNorm scale and shift (2 x 15.7M) and ReLU (15.7M) bring it to 2.88 G"),
    "densenet-bc-169": (14.15e6, 3.36e9, "torchvision", ""),
    "densenet-bc-201": (20.01e6, 4.29e9, "torchvision", ""),
    "densenet-bc-161": (28.68e6, 7.73e9, "torchvision", ""),
    "mobilenet-0.5": (1.3e6, 149e6, "MobileNet paper, Table 6",
                      "1.3M has two digits: 1.33M rounds to it"),
    "vgg16-cifar": (15.0e6, 313e6, "Li et al. 2017; paper Table 2", "3.13e8 mult-adds"),
    "alexnet": (61.1e6, 714e6, "torchvision", ""),
}

# The paper's rows: (source, model, quantity, paper's value, note).  Quantities:
# "flops100M" = 2 MACs / 1e8 (Table 1's unit), "macs", "params".
PAPER = [
    ("Table 1", "x-resnet-2-34", "flops100M", 35, ""),
    ("Table 1", "x-resnet-2-50", "flops100M", 40, ""),
    ("Table 1", "resnet-34", "flops100M", 70, ""),
    ("Table 1", "x-resnet-2-101", "flops100M", 80, ""),
    ("Table 1", "resnet-50", "flops100M", 80, ""),
    ("Table 1", "resnet-101", "flops100M", 160, ""),
    ("Table 1", "x-densenet-bc-2-121", "flops100M", 28, ""),
    ("Table 1", "x-densenet-bc-2-169", "flops100M", 33, ""),
    ("Table 1", "x-densenet-bc-2-201", "flops100M", 43, ""),
    ("Table 1", "x-densenet-bc-2-161", "flops100M", 55,
     "half of the paper's 110 for DenseNet-BC-161; see there"),
    ("Table 1", "densenet-bc-121", "flops100M", 55, ""),
    ("Table 1", "densenet-bc-169", "flops100M", 65, ""),
    ("Table 1", "densenet-bc-201", "flops100M", 85, ""),
    ("Table 1", "densenet-bc-161", "flops100M", 110,
     "not matched: DenseNet-BC-161 (k=48, blocks 6-12-36-24, 96-channel stem) has 7.73 GMACs "
     "(torchvision agrees); the paper does not say which configuration gave 110"),
    ("Table 2", "vgg16-cifar", "params", 15.0e6, ""),
    ("Table 2", "x-vgg16-cifar-1", "params", 1.65e6, "configuration not given; built as C = 9 (\"9x\")"),
    ("Table 2", "x-vgg16-cifar-2", "params", 1.15e6, "configuration not given; built as C = 13 (\"13x\")"),
    ("Table 3", "alexnet", "params", 61e6, ""),
    ("Table 3", "x-alexnet-1", "params", 7.6e6, "configuration not given; hidden FC layers X with D = 128"),
    ("Table 3", "x-alexnet-2", "params", 9.7e6, "configuration not given; hidden FC layers X with D = 384"),
    ("§5.1", "mobilenet-0.5", "macs", 150e6, "\"150M FLOPs\" = mult-adds"),
    ("§5.5", "densenet-bc-40-200", "macs", 19.9e9, "\"19.9B FLOPs\" = MACs"),
    ("§5.5", "x-densenet-bc-30-40-200", "macs", 0.6e9,
     "\"30x\" compression; \"0.6B FLOPs\" = MACs, one digit (19.9B / 30 = 0.66B)"),
]

CONVENTIONS = """\
Conventions.  *Params*: every parameter (BatchNorm included); an X layer counts its compact
weight (Cout, D, kh, kw) and bias, never its index buffer.  *MACs*: multiply-accumulates of
the convolutions and fully connected layers for one image (bias adds, BatchNorm, activations
and pooling not counted), at 224 x 224 for ImageNet models and 32 x 32 for CIFAR ones; an X
layer costs Cout D kh kw Ho Wo, a grouped conv Cout (Cin / groups) kh kw Ho Wo.
*FLOPs* = 2 MACs.

The paper mixes conventions: Table 1's "#FLOPs (in 100M)" are 2 x MACs (ResNet-50: 80 vs
2 x 4.09 G), while §5.1's "150M FLOPs" for MobileNet-0.5 and §5.5's "19.9B FLOPs" for
DenseNet-BC-40-200 are MACs (mult-adds).  The rows below are compared in each row's own
convention.  Table 1's values are rounded (mostly to multiples of 5), which accounts for
deviations of up to 8% there; its X-2 rows are exactly half of the dense rows, ours are
0.51-0.52 of them because the first convolution stays dense.

Model rules (see the docstrings in xkern/models/): an X model replaces every convolution
except the first by an X-Conv with D = Cin // C (ResNet's 1x1 projection shortcuts and
DenseNet's transitions included; expanding layers get density 1/C too), and keeps the
classifier dense; X-MobileNet / G-MobileNet compress only the 1x1 convs after the 8th
layer of MobileNet's Table 1 (G: groups = C).  The X-VGG16 and X-AlexNet variant numbers
are the paper's labels; their configurations are not given in the paper and were chosen
to reproduce Tables 2 and 3's parameter counts.  Figures 3, 4 and 6 give their points only
as plots, so there are no numbers in the text to compare with.
"""


def full_shape(name):
    cifar = "cifar" in name or re.search(r"-(40|58|70)-\d+$", name)
    return (3, 32, 32) if cifar else (3, 224, 224)


def dense_twin(name):
    """The dense model an X (or grouped) model compresses, or None for a dense model."""
    if not name.startswith(("x-", "g-")):
        return None
    body = re.sub(r"^(resnet|densenet-bc)-\d+-", r"\1-", name[2:])      # X-C-D(-G): drop C
    return re.sub(r"^(mobilenet-[\d.]+|vgg16-cifar|alexnet)-\d+$", r"\1", body)


def count(name, cache):
    if name not in cache:
        with torch.device("meta"):
            model = create(name, seed=0)
        cache[name] = complexity(model, full_shape(name))
    return cache[name]


def _m(x):
    return f"{x / 1e6:,.2f}M"


def _g(x):
    return f"{x / 1e9:.3f}G" if x >= 1e9 else f"{x / 1e6:,.1f}M"


def _dev(ours, ref):
    return f"{100 * (ours / ref - 1):+.1f}%"


def render(cache):
    lines = ["# Model complexity", "",
             "Generated by `python benchmarks/model_table.py`; do not edit by hand.", "",
             CONVENTIONS, "## Dense baselines against their published counts", "",
             "| model | params | published | dev. | MACs | published | dev. | source | note |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for name, (params, macs, source, note) in KNOWN.items():
        c = count(name, cache)
        lines.append(f"| {name} | {_m(c['params'])} | {_m(params)} | {_dev(c['params'], params)} "
                     f"| {_g(c['macs'])} | {_g(macs)} | {_dev(c['macs'], macs)} | {source} | {note} |")
    lines += ["", "## The paper's rows", "",
              "| source | model | quantity | paper | ours | dev. | note |",
              "|---|---|---|---:|---:|---:|---|"]
    for source, name, quantity, value, note in PAPER:
        c = count(name, cache)
        if quantity == "flops100M":
            ours, shown, label = c["flops"] / 1e8, f"{c['flops'] / 1e8:.1f}", "FLOPs (100M) = 2 MACs / 1e8"
            paper = f"{value}"
        elif quantity == "macs":
            ours, shown, label, paper = c["macs"], _g(c["macs"]), "MACs", _g(value)
        else:
            ours, shown, label, paper = c["params"], _m(c["params"]), "params", _m(value)
        lines.append(f"| {source} | {name} | {label} | {paper} | {shown} | {_dev(ours, value)} | {note} |")
    lines += ["", "## Every model in `xkern.models.names()`", "",
              "| model | input | params | MACs | GFLOPs | params / dense | MACs / dense |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for name in names():
        c, twin = count(name, cache), dense_twin(name)
        ratios = ("", "") if twin is None else tuple(
            f"{c[k] / count(twin, cache)[k]:.3f}" for k in ("params", "macs"))
        lines.append(f"| {name} | {full_shape(name)[1]}² | {_m(c['params'])} | {_g(c['macs'])} "
                     f"| {c['flops'] / 1e9:.3f} | {ratios[0]} | {ratios[1]} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = pathlib.Path(__file__).resolve().parents[1]
    parser.add_argument("--out", type=pathlib.Path, default=root / "docs" / "models.md")
    args = parser.parse_args()
    args.out.write_text(render({}))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
