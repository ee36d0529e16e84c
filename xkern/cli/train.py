"""`python -m xkern train`: train a registry model on local data, on CPU, GPU or under torchrun."""
from .args import positive_int


def register(sub):
    p = sub.add_parser(
        "train", help="train a model (dense, X or G) on digits, CIFAR or an image folder",
        description="Train a model from xkern.models with the paper's recipe (printed at start). "
                    "Launch with `torchrun --nproc_per_node=N -m xkern train ...` to train on "
                    "N processes with DistributedDataParallel (nccl on GPUs, gloo on CPUs).")
    p.add_argument("--model", required=True,
                   help="registry name, e.g. x-resnet-2-18 (all names: xkern.models.names())")
    add_data_arguments(p)
    p.add_argument("--epochs", type=int, required=True, help="total epochs (with --resume: up to)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for checkpoint.pt, metrics.jsonl, curves.png, model_final.pt")
    p.add_argument("--resume", action="store_true",
                   help="continue from DIR/checkpoint.pt at the next epoch")
    p.add_argument("--seed", type=int, default=0, help="seeds weights, graphs, data order (0)")
    p.set_defaults(func=run)


def add_data_arguments(p):
    """Options shared by train and compare: data, recipe overrides, device."""
    p.add_argument("--data", required=True, choices=("digits", "cifar10", "cifar100", "imagefolder"),
                   help="digits: scikit-learn's bundled 8x8 digits upsampled (no files needed); "
                        "cifar10/cifar100: the python-pickle folder; imagefolder: DIR/{train,val}/<class>/")
    p.add_argument("--data-dir", metavar="DIR", help="dataset folder (cifar*, imagefolder)")
    p.add_argument("--batch-size", type=int, help="per process (default: the recipe's)")
    p.add_argument("--lr", type=float, help="initial learning rate (default: the recipe's)")
    p.add_argument("--weight-decay", type=float, help="default: the recipe's")
    p.add_argument("--device", choices=("cpu", "cuda"),
                   help="default: cuda when torch sees a GPU, else cpu")
    p.add_argument("--image-size", type=int,
                   help="side of the square input (digits: 32, imagefolder: 224; CIFAR is 32)")
    p.add_argument("--limit", type=int, metavar="N",
                   help="use only N train and N val images, a fixed subset (quick checks)")
    p.add_argument("--workers", type=int,
                   help="data-loader worker processes per training process "
                        "(default: 0 for digits and CIFAR, up to 8 for imagefolder)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no tqdm progress bars")
    p.add_argument("--block", type=positive_int("--block"), default=1, metavar="B",
                   help="X models: expanders whose outputs come in blocks of B sharing one index row "
                        "(method biregular); 8 runs fastest on AVX2 CPUs (default 1: the paper's random "
                        "expanders)")
    p.add_argument("--autocast", choices=("bfloat16", "float16"),
                   help="mixed precision: forward passes under torch.autocast with this dtype "
                        "(float16 adds a gradient scaler); X layers compute in float32")


def check_extras(args, command):
    """Raise MissingExtra, before any data is read, if a package train / compare needs is missing.

    tqdm and matplotlib are optional: without them a run has no progress bars or plots, and
    says so before training.
    """
    from .._extras import require
    require(f"python -m xkern {command}", "torch", extra="train")
    if args.data == "digits":
        require("--data digits", "sklearn", extra="train")
    elif args.data == "imagefolder":
        require("--data imagefolder", "PIL", extra="train")
    if args.device == "cuda" or (args.device is None and _torch_sees_gpu()):
        # X layers on CUDA tensors run on xkern's numba kernels.
        require("training on the GPU", "numba", extra="cuda")


def _torch_sees_gpu():
    import torch
    return torch.cuda.is_available()


def passive_openmp():
    """Let idle OpenMP threads sleep instead of spin (unless OMP_WAIT_POLICY is set).

    Must run before torch loads libgomp.  On a busy 2-core machine, spinning threads made a
    digits epoch of x-resnet-2-18 take 249 s instead of 75 s (measured with both settings).
    """
    import os
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")


def run(args):
    import sys

    check_extras(args, "train")
    passive_openmp()
    from ..training import distributed
    from ..training.loop import RunConfig, fit

    config = RunConfig(model=args.model, data=args.data, out=args.out, epochs=args.epochs,
                       data_dir=args.data_dir, batch_size=args.batch_size, lr=args.lr,
                       weight_decay=args.weight_decay, seed=args.seed, resume=args.resume,
                       limit=args.limit, image_size=args.image_size, workers=args.workers,
                       progress=args.progress, autocast=args.autocast, block=args.block)
    try:
        ctx = distributed.setup(args.device)
    except ValueError as exc:
        print(f"xkern train: error: {exc}", file=sys.stderr)
        return 2
    try:
        rows = fit(config, ctx)
    except (FileNotFoundError, ValueError) as exc:
        # Missing data (the message says which layout is expected), an unknown model name,
        # a checkpoint of another model: the message says it all, a traceback adds nothing.
        print(f"xkern train: error: {exc}", file=sys.stderr)
        return 2
    finally:
        distributed.teardown()
    if ctx.is_main and rows:
        last = rows[-1]
        print(f"done: val accuracy {100 * last['val_accuracy']:.2f}% after epoch {last['epoch']}; "
              f"model in {args.out}")
    return 0
