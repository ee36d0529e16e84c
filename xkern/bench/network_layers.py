"""The X layers of the paper's networks, each timed against torch's dense conv of its shape.

The reference layers (layers.py) are the kernels' best case: 14x14-32x32 maps, stride 1,
batch 32.  Inside a network the X layers are strided, run on maps down to 3x3, and at
batch 1 for inference; this module finds every distinct XConv2d shape of a network (by a
forward pass with hooks) and times it the way the network runs it:
    step    forward + backward (gradients w.r.t. x and the weight), at the training batch
    infer   forward under no_grad at batch 1, at the inference input size
Efficiency is as in report.py: dense ms x D / Cin / xkern ms.
"""
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .timing import measure_interleaved


class XLayer(NamedTuple):
    """One distinct X-Conv shape of a network; count: how many of its layers have it."""
    cin: int
    cout: int
    kernel: int
    stride: int
    padding: int
    degree: int
    height: int
    width: int
    count: int

    def label(self):
        return (f"{self.cin}->{self.cout} {self.kernel}x{self.kernel}"
                f"{f' s{self.stride}' if self.stride > 1 else ''} D{self.degree} {self.height}x{self.width}")


def x_layers(model, input_shape):
    """[(XLayer, index)] of model's XConv2d layers for one (C, H, W) input, in the order
    first met; index is the first such layer's graph (a (Cout, D) int64 array)."""
    from xkern.nn import XConv2d

    found = {}

    def hook(module, args, output):
        h, w = args[0].shape[2:]
        key = (module.in_channels, module.out_channels, module.kernel_size[0], module.stride[0],
               module.padding[0], module.index.shape[1], h, w)
        if key in found:
            found[key][1] += 1
        else:
            found[key] = [module.index.detach().cpu().numpy(), 1]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, XConv2d)]
    try:
        with torch.no_grad():
            model(torch.zeros((1,) + tuple(input_shape)))
    finally:
        for handle in handles:
            handle.remove()
    return [(XLayer(*key, count), index) for key, (index, count) in found.items()]


def _callables(layer, index, batch, *, train, seed):
    """(dense, xkern) callables of one layer: a step (gradients of sum(out * grad_out) w.r.t.
    x and the weight) when train, else a no_grad forward."""
    from xkern.autograd import xconv2d

    gen = torch.Generator().manual_seed(seed)
    k, s, p = layer.kernel, layer.stride, layer.padding
    scale = 1.0 / np.sqrt(layer.degree * k * k)
    x = torch.randn((batch, layer.cin, layer.height, layer.width), generator=gen)
    w_dense = torch.randn((layer.cout, layer.cin, k, k), generator=gen) * scale
    w = torch.randn((layer.cout, layer.degree, k, k), generator=gen) * scale
    idx = torch.as_tensor(index)
    if not train:
        def dense():
            with torch.no_grad():
                return F.conv2d(x, w_dense, None, s, p)

        def xk():
            with torch.no_grad():
                return xconv2d(x, w, idx, None, s, p)
        return dense, xk
    for t in (x, w_dense, w):
        t.requires_grad_()
    with torch.no_grad():
        grad_out = torch.randn(F.conv2d(x, w_dense, None, s, p).shape, generator=gen)

    def dense():
        return torch.autograd.grad(F.conv2d(x, w_dense, None, s, p), (x, w_dense), grad_out)

    def xk():
        return torch.autograd.grad(xconv2d(x, w, idx, None, s, p), (x, w), grad_out)
    return dense, xk


def time_layers(model, *, train_shape, batch, infer_shape, repeats=5, sample_time=0.05, seed=0, log=None):
    """{"step": [...], "infer": [...]}: one dict per distinct X layer of model, at training
    (train_shape, batch: forward + backward) and at inference (infer_shape, batch 1:
    forward), each with the layer (XLayer as a dict), batch, dense and xkern median seconds
    and xkern's efficiency."""
    log = log or (lambda message: None)
    out = {}
    for mode, shape, n in (("step", train_shape, batch), ("infer", infer_shape, 1)):
        rows = out[mode] = []
        for layer, index in x_layers(model, shape):
            dense, xk = _callables(layer, index, n, train=mode == "step", seed=seed)
            t_dense, t_x = measure_interleaved([dense, xk], repeats=repeats, sample_time=sample_time)
            eff = t_dense.median * layer.degree / layer.cin / t_x.median
            rows.append(dict(layer=layer._asdict(), batch=n, dense=t_dense.median, xkern=t_x.median, eff=eff))
            log(f"  {mode} {layer.label()} x{layer.count} batch {n}: dense {t_dense.median * 1e3:.2f} ms, "
                f"xkern {t_x.median * 1e3:.2f} ms, efficiency {eff:.2f}")
    return out
