"""`python -m xkern export`: a training checkpoint -> a torch-free .xk file (or ONNX)."""

FORMATS = ("xk", "onnx")


def register(sub):
    p = sub.add_parser(
        "export", help="write a trained model as a .xk file (xkern.runtime) or an ONNX model",
        description="Rebuild the model a checkpoint of `xkern train` names (its X layers' graphs "
                    "come from the checkpoint), fold its batch norms and write it for inference "
                    "without torch: `python -m xkern predict OUT INPUT` runs a .xk file.")
    p.add_argument("--checkpoint", required=True, metavar="CKPT",
                   help="checkpoint.pt or model_final.pt written by `python -m xkern train`")
    p.add_argument("--out", required=True, metavar="FILE", help="output file, e.g. model.xk")
    p.add_argument("--format", choices=FORMATS,
                   help="xk (xkern.runtime) or onnx; default: from the --out suffix, else xk")
    p.add_argument("--input-shape", type=int, nargs=3, metavar=("C", "H", "W"),
                   help="input image shape (default: the checkpoint's image_shape)")
    p.add_argument("--xconv", choices=("gather", "dense"), default="gather",
                   help="ONNX only: X layers as Gather + grouped Conv (compact, default) or as "
                        "dense-equivalent weights")
    p.set_defaults(func=run)


def _load(path):
    """(model in eval mode, checkpoint dict) of a training checkpoint; SystemExit on bad files."""
    import torch

    from .. import models
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise SystemExit(f"xkern export: cannot read {path!r}: {exc}") from None
    if not isinstance(ckpt, dict) or not {"model_name", "model"} <= set(ckpt):
        raise SystemExit(f"xkern export: {path!r} is not a checkpoint of `xkern train` "
                         "(it needs the keys 'model_name' and 'model')")
    try:
        model = models.create(ckpt["model_name"], num_classes=ckpt.get("num_classes"),
                              seed=ckpt.get("seed"), block=ckpt.get("block", 1))
        model.load_state_dict(ckpt["model"])
    except (ValueError, RuntimeError) as exc:
        raise SystemExit(f"xkern export: cannot rebuild {ckpt['model_name']!r} from {path!r}: {exc}") from None
    return model.eval(), ckpt


def run(args):
    import os

    from .._extras import require
    fmt = args.format or ("onnx" if args.out.lower().endswith(".onnx") else "xk")
    require("python -m xkern export", "torch", extra="torch")
    if fmt == "onnx":
        require("ONNX export", "onnx", extra="onnx")
    model, ckpt = _load(args.checkpoint)
    shape = args.input_shape or ckpt.get("image_shape")
    if shape is None:
        raise SystemExit("xkern export: the checkpoint records no image_shape; give --input-shape C H W")
    meta = {key: ckpt[key] for key in ("model_name", "num_classes", "classes", "normalization",
                                       "image_shape", "epoch") if key in ckpt}
    meta["source"] = os.path.basename(args.checkpoint)
    input_shape = (1, *(int(s) for s in shape))
    try:
        if fmt == "onnx":
            from .. import onnx
            onnx.export(model, args.out, input_shape, xconv=args.xconv, meta=meta)
            print(f"wrote {args.out}: ONNX opset {onnx.OPSET}, input 'x' (batch, {', '.join(map(str, shape))})")
            return 0
        from .. import runtime
        graph = runtime.save(model, args.out, input_shape, meta=meta)
    except (NotImplementedError, ValueError) as exc:
        raise SystemExit(f"xkern export: {exc}") from None
    counts = {}
    for node in graph.nodes:
        counts[node.op] = counts.get(node.op, 0) + 1
    print(f"wrote {args.out}: {meta.get('model_name', 'model')}, {len(graph.nodes)} nodes "
          f"({', '.join(f'{n} {op}' for op, n in counts.items())}), "
          f"{os.path.getsize(args.out) / 1e6:.2f} MB, input (B, {', '.join(map(str, shape))})")
    return 0
