"""`python -m xkern predict`: run a .xk file on a .npy batch or a .png image, without torch."""


def register(sub):
    p = sub.add_parser(
        "predict", help="classify a .npy batch or a .png image with a .xk model (no torch needed)",
        description="INPUT.npy: a float batch (B, C, H, W) or one image (C, H, W) / (H, W, C) is "
                    "fed as it is; a uint8 array is scaled to [0, 1] and normalised like a "
                    "training batch.  INPUT.png: read with matplotlib, scaled to [0, 1], resized "
                    "(nearest pixel) to the model's input size and normalised.")
    p.add_argument("model", metavar="MODEL.xk", help="file written by `python -m xkern export`")
    p.add_argument("input", metavar="INPUT", help=".npy array or .png image")
    p.add_argument("--top", type=int, default=5, metavar="K", help="classes to print per sample (5)")
    p.add_argument("--threads", type=int, help="CPU threads (default: OMP_NUM_THREADS or all)")
    p.set_defaults(func=run)


def _channels_first(a, channels):
    """One image (C, H, W), (H, W, C) or (H, W) as (C, H, W)."""
    import numpy as np
    if a.ndim == 2:
        a = a[None]
    elif a.ndim == 3 and channels is not None and a.shape[0] != channels and a.shape[-1] == channels:
        a = np.moveaxis(a, -1, 0)
    if a.ndim != 3:
        raise SystemExit(f"xkern predict: expected a batch (B, C, H, W) or one image, got shape {a.shape}")
    return a


def _read_png(path, channels):
    """(C, H, W) float32 in [0, 1] from a PNG, alpha dropped, grey and colour matched to channels."""
    import numpy as np
    from matplotlib import image
    try:
        img = image.imread(path)
    except (OSError, ValueError, SyntaxError) as exc:
        raise SystemExit(f"xkern predict: cannot read {path!r}: {exc}") from None
    if img.dtype == np.uint8:
        img = img / 255.0
    img = np.asarray(img, np.float32)
    if img.ndim == 3:
        img = np.moveaxis(img[..., :3] if img.shape[-1] == 4 else img, -1, 0)
    else:
        img = img[None]
    if channels == 1 and img.shape[0] == 3:
        img = img.mean(axis=0, keepdims=True)
    elif channels == 3 and img.shape[0] == 1:
        img = np.repeat(img, 3, axis=0)
    return img


def _resize(img, size):
    """Nearest-pixel resize of (C, H, W) to (C, *size)."""
    import numpy as np
    rows = (np.arange(size[0]) * img.shape[1]) // size[0]
    cols = (np.arange(size[1]) * img.shape[2]) // size[1]
    return img[:, rows][:, :, cols]


def _batch(path, program):
    """The model input for INPUT: (B, C, H, W) float32."""
    import numpy as np
    _, channels, height, width = program.input_shape
    norm = program.meta.get("normalization")
    lower = path.lower()
    if lower.endswith(".npy"):
        try:
            a = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"xkern predict: cannot read {path!r}: {exc}") from None
        raw = a.dtype == np.uint8
        if a.ndim != 4:
            a = _channels_first(a, channels)[None]
        x = a / np.float32(255) if raw else a
    elif lower.endswith(".png"):
        img = _read_png(path, channels)
        if height is not None and width is not None and img.shape[1:] != (height, width):
            img = _resize(img, (height, width))
        x, raw = img[None], True
    else:
        raise SystemExit(f"xkern predict: INPUT must be a .npy or .png file, got {path!r}")
    x = np.asarray(x, np.float32)
    if raw and norm:
        mean = np.asarray(norm["mean"], np.float32)[:, None, None]
        std = np.asarray(norm["std"], np.float32)[:, None, None]
        x = (x - mean) / std
    return x


def run(args):
    import os

    import numpy as np

    import xkern
    from .. import runtime
    from .._extras import require
    if args.input.lower().endswith(".png"):
        require("reading a .png image (a .npy array needs nothing more)", "matplotlib", extra="graphs")
    if args.top < 1:
        raise SystemExit(f"xkern predict: --top must be >= 1, got {args.top}")
    if args.threads is not None:
        try:
            xkern.set_num_threads(args.threads)
        except ValueError as exc:
            raise SystemExit(f"xkern predict: --threads: {exc}") from None
    if not os.path.isfile(args.model):
        raise SystemExit(f"xkern predict: no such file {args.model!r}")
    try:
        program = runtime.load(args.model)
    except ValueError as exc:
        raise SystemExit(f"xkern predict: {exc}") from None
    x = _batch(args.input, program)
    try:
        logits = program.predict(x)
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"xkern predict: {exc}") from None
    logits = logits.reshape(len(logits), -1).astype(np.float64)
    classes = program.meta.get("classes")
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    k = min(args.top, logits.shape[1])
    for b in range(len(logits)):
        order = np.argsort(-logits[b], kind="stable")[:k]
        print(f"sample {b}:" if len(logits) > 1 else f"{args.input}:")
        for rank, c in enumerate(order, 1):
            label = classes[c] if classes and c < len(classes) else str(c)
            print(f"  {rank}. {label:<20s} p={probs[b, c]:.4f}  logit={logits[b, c]:.4f}")
    return 0
