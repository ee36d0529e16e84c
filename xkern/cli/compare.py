"""`python -m xkern compare`: dense vs X vs G twins over seeds, accuracy against MACs (Fig. 3)."""
from .train import add_data_arguments, check_extras, passive_openmp


def register(sub):
    p = sub.add_parser(
        "compare", help="train dense, X and G versions of a model over seeds; plot accuracy vs MACs",
        description="Train a dense model and its X (expander) and G (grouped) twins at the same "
                    "compression over several seeds, then print a table and plot accuracy against "
                    "MACs per image (like the paper's Fig. 3).  Runs live in OUT/<model>/seed<k>/; "
                    "rerunning the command resumes unfinished runs and reuses finished ones.")
    add_data_arguments(p)
    p.add_argument("--family", default="mobilenet-0.5",
                   help="dense model whose twins are compared (default mobilenet-0.5; "
                        "e.g. densenet-bc-40-24, resnet-18; vgg16-cifar and alexnet: use --models)")
    p.add_argument("--compression", type=int, nargs="+", default=[4], metavar="C",
                   help="compression factor(s) C of the X and G twins (default 4)")
    p.add_argument("--models", nargs="+", metavar="NAME",
                   help="explicit registry names instead of --family/--compression")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per model (default 3)")
    p.add_argument("--epochs", type=int, required=True, help="epochs per run")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for runs and the summary")
    p.set_defaults(func=run)


def run(args):
    import os
    import sys

    check_extras(args, "compare")
    passive_openmp()
    from .._extras import missing_message
    from ..training import compare, distributed
    from ..training.loop import RunConfig

    if args.seeds < 1:
        print("xkern compare: error: --seeds must be >= 1", file=sys.stderr)
        return 2
    if any(c < 2 for c in args.compression):
        print("xkern compare: error: --compression must be >= 2", file=sys.stderr)
        return 2
    if args.models:
        runs = [(name[0] if name[:2] in ("x-", "g-") else "dense", None, name)
                for name in args.models]
    else:
        try:
            runs = compare.plan(args.family, args.compression)
        except ValueError as exc:
            print(f"xkern compare: error: {exc}", file=sys.stderr)
            return 2
        missing = [f"{k}-{c}" for c in args.compression for k in ("x", "g")
                   if not any(r[0] == k and r[1] == c for r in runs)]
        if missing:
            print(f"note: xkern.models has no {', '.join(missing)} version of {args.family}; "
                  f"comparing {', '.join(r[2] for r in runs)}")
    base = RunConfig(model="", data=args.data, out=args.out, epochs=args.epochs,
                     data_dir=args.data_dir, batch_size=args.batch_size, lr=args.lr,
                     weight_decay=args.weight_decay, limit=args.limit,
                     image_size=args.image_size, workers=args.workers, progress=args.progress,
                     autocast=args.autocast, block=args.block)
    seeds = list(range(args.seeds))
    try:
        ctx = distributed.setup(args.device)
    except ValueError as exc:
        print(f"xkern compare: error: {exc}", file=sys.stderr)
        return 2
    try:
        log = print if ctx.is_main else (lambda *a, **k: None)
        results = compare.run_all(runs, base, seeds, ctx, log)
    except (FileNotFoundError, ValueError) as exc:
        print(f"xkern compare: error: {exc}", file=sys.stderr)
        return 2
    finally:
        distributed.teardown()
    if ctx.is_main:
        print(compare.table(results, args.epochs))
        png = compare.save(results, args.out, {"data": args.data, "epochs": args.epochs,
                                               "seeds": seeds, "limit": args.limit})
        print(f"summary: {os.path.join(args.out, 'compare.json')}"
              + (f", plot: {png}" if png else
                 f" (no plot: {missing_message('matplotlib', 'plotting', extra='train')})"))
    return 0
