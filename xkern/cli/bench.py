"""`python -m xkern bench`: time xkern against torch's dense, grouped and masked-dense convolutions.

Prints one table per pass (forward; training step = forward + backward through torch
autograd) with median times, efficiencies, xkern's speedups and their geometric means,
then the peak memory of a training step and how the geometric means compare with the
performance targets.  --json / --markdown / --plot write the same results to files;
--from-json re-renders a saved run without timing anything.
"""
import json
import sys

from .args import positive_int

QUICK = dict(layers=("L1", "L2", "L3", "L4"), compressions=(2, 8), blocks=(1,), repeats=3, sample_time=0.02)
FULL = dict(layers=("L1", "L2", "L3", "L4"), compressions=(2, 4, 8), blocks=(1, 4, 8), repeats=7, sample_time=0.05)
SMOKE_LAYERS = ("T1", "T3")
IMPLS = ("dense", "grouped", "masked", "xkern")


def register(sub):
    p = sub.add_parser("bench", help="time xkern against torch dense / grouped / masked convolutions",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("--quick", action="store_true",
                   help=f"fewer configs and samples (layers {' '.join(QUICK['layers'])}, C "
                        f"{' '.join(map(str, QUICK['compressions']))}, block 1, {QUICK['repeats']} samples)")
    p.add_argument("--layers", nargs="+", metavar="NAME",
                   help="layers to run: L1-L4 (the reference layers), T1 T3 (tiny smoke-test layers)")
    p.add_argument("-C", "--compressions", nargs="+", type=positive_int("--compressions"), metavar="C",
                   help="compressions C (degree D = Cin / C); default 2 4 8")
    p.add_argument("--block", nargs="+", type=positive_int("--block"), metavar="B", dest="blocks",
                   help="expander block sizes (1: plain random expander); default 1 4 8, --quick 1; with --models "
                        "one size, the X-Nets' (default 1)")
    p.add_argument("--backend", choices=("cpu", "reference", "cuda"), default="cpu",
                   help="xkern backend; cuda runs every implementation on the GPU; reference (slow numpy) "
                        "defaults to the smoke-test layers")
    p.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS), help="implementations to time")
    p.add_argument("--threads", type=positive_int("--threads"), metavar="N",
                   help="threads for torch and xkern (torch.set_num_threads, xkern.set_num_threads)")
    p.add_argument("--batch", type=positive_int("--batch"),
                   help="batch size (default: each layer's, 32 for L1-L4)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--repeats", type=positive_int("--repeats"),
                   help="timed samples per measurement (median reported)")
    p.add_argument("--sample-time", type=float, metavar="S", help="minimum seconds per sample")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="make glibc malloc keep freed memory (as jemalloc or tcmalloc would), so that page "
                        "faults on freshly mapped temporaries do not count; torch's grouped conv takes ~6x "
                        "more of them per step than xkern")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the expander graphs")
    p.add_argument("--json", metavar="FILE", help="write the raw results and summary as JSON")
    p.add_argument("--markdown", metavar="FILE", help="write the report as markdown (for BENCHMARKS.md)")
    p.add_argument("--plot", metavar="FILE.png", help="plot efficiencies and speedups (needs matplotlib)")
    p.add_argument("--models", action="store_true",
                   help="instead of the reference layers, time X-Nets against their dense twins (training step and "
                        "batch-1 inference: x-resnet-2-18 and x-mobilenet-0.5-4 at 96x96 / 224x224, "
                        "x-densenet-bc-2-40-24 at 32x32), and each X-Net's distinct X layers against dense conv "
                        "of the same shape")
    p.add_argument("--no-layers", action="store_true", help="with --models: the end-to-end rows only")
    p.add_argument("--from-json", metavar="FILE", help="render a saved --json run instead of timing")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)


def _settings(args):
    base = QUICK if args.quick else FULL
    layers = args.layers or (SMOKE_LAYERS if args.backend == "reference" else base["layers"])
    return dict(layers=layers, compressions=args.compressions or base["compressions"],
                blocks=args.blocks or base["blocks"], repeats=args.repeats or base["repeats"],
                sample_time=base["sample_time"] if args.sample_time is None else args.sample_time)


def _measure(args):
    import torch

    import xkern
    from ..bench import allocator, layers, models, suite

    if args.threads:
        torch.set_num_threads(args.threads)
        xkern.set_num_threads(args.threads)
    try:
        allocator_note = allocator.keep_freed() if args.keep_freed_memory else allocator.DEFAULT
    except RuntimeError as exc:
        raise ValueError(str(exc)) from None
    s = _settings(args)
    log = None if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    if args.models:
        pairs = [p._replace(batch=args.batch, quick_batch=args.batch) if args.batch else p for p in models.PAIRS]
        if args.blocks and len(args.blocks) > 1:
            raise ValueError(f"--block: --models takes one block size, got {' '.join(map(str, args.blocks))}")
        result = suite.run_models(pairs, quick=args.quick, device="cuda" if args.backend == "cuda" else "cpu",
                                  dtype=getattr(torch, args.dtype), repeats=s["repeats"],
                                  sample_time=s["sample_time"], with_memory=not args.no_memory,
                                  with_layers=not args.no_layers, seed=args.seed,
                                  block=args.blocks[0] if args.blocks else 1,
                                  log=log, command=_command(args, s))
    else:
        configs = layers.configs(s["layers"], s["compressions"], s["blocks"], batch=args.batch)
        result = suite.run(configs, impls=args.impls, device="cuda" if args.backend == "cuda" else "cpu",
                           xkern_backend=args.backend, dtype=getattr(torch, args.dtype), repeats=s["repeats"],
                           sample_time=s["sample_time"], with_memory=not args.no_memory, seed=args.seed, log=log,
                           command=_command(args, s))
    if args.backend != "cuda":
        result["meta"]["allocator"] = allocator_note
    return result


def _command(args, s):
    """The explicit command line that repeats this run (every default spelled out)."""
    words = ["python -m xkern bench"]
    if args.models:
        words += ["--models"] + (["--quick"] if args.quick else []) + (["--no-layers"] if args.no_layers else [])
        if args.blocks and args.blocks[0] > 1:
            words += ["--block", str(args.blocks[0])]
    else:
        words += ["--layers", *s["layers"], "-C", *map(str, s["compressions"]), "--block", *map(str, s["blocks"]),
                  "--impls", *args.impls]
    words += ["--backend", args.backend, "--dtype", args.dtype, "--repeats", str(s["repeats"]),
              "--sample-time", str(s["sample_time"]), "--seed", str(args.seed)]
    for flag, value in (("--threads", args.threads), ("--batch", args.batch)):
        if value:
            words += [flag, str(value)]
    if args.no_memory:
        words.append("--no-memory")
    if args.keep_freed_memory:
        words.append("--keep-freed-memory")
    return " ".join(words)


def check_extras(args):
    """Raise MissingExtra before timing anything if a package this run needs is missing."""
    from .._extras import require
    if not args.from_json:
        require("python -m xkern bench", "torch", extra="torch")
        if args.backend == "cuda":
            require("--backend cuda", "numba", extra="cuda")
    if args.plot:
        require("--plot", "matplotlib", extra="bench")


def run(args):
    check_extras(args)
    from ..bench import report

    try:
        if args.from_json:
            with open(args.from_json) as f:
                result = json.load(f)
            result.pop("summary", None)
            result.pop("networks", None)
        else:
            result = _measure(args)
    except (ValueError, NotImplementedError) as exc:
        print(f"xkern bench: {exc}", file=sys.stderr)
        return 2
    print(report.text(result), end="")
    for path, render in ((args.json, report.to_json), (args.markdown, report.markdown)):
        if path:
            with open(path, "w") as f:
                f.write(render(result))
    if args.plot:
        if result["results"]:
            report.plot(result, args.plot)
        else:
            print("xkern bench: --plot draws the layer results; this run has none", file=sys.stderr)
    return 0
