"""The timed callables: torch dense, grouped and masked-dense convolutions, and xkern.

Every implementation runs the same config on the same data and exposes two callables:
    forward()  the layer's output, under torch.no_grad()
    step()     forward + backward through torch autograd: the gradients of
               sum(out * grad_out) w.r.t. x, weight and bias (returned, so they stay alive)
Implementations:
    dense    conv2d with a dense (Cout, Cin, k, k) weight: the unconstrained layer, the speed ceiling
    grouped  conv2d(groups=C) on a compact (Cout, D, k, k) weight: torch's cheap structured sparsity
    masked   the paper's code: the dense weight built from the compact one inside every call
             (scattered into zeros, the same work as weight * mask), then a dense conv2d
    xkern    xkern.xconv2d on the compact weight and the expander index
An unsupported combination (no GPU, backend not built) raises NotImplementedError,
which asv reads as "skip".
"""
import math
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .layers import make_index

IMPLS = ("dense", "grouped", "masked", "xkern")
DEVICES = ("cpu", "cuda")
XKERN_BACKENDS = ("cpu", "reference", "cuda")


class Problem(NamedTuple):
    """One config's data on one device: x (B, Cin, H, W), weight (Cout, D, k, k), bias (Cout,),
    index (Cout, D) int64, grad_out (B, Cout, H, W)."""
    config: object
    x: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    index: torch.Tensor
    grad_out: torch.Tensor


class Case(NamedTuple):
    impl: str
    forward: Callable
    step: Callable
    sync: Callable          # waits for queued device work (a no-op on the CPU)
    api: str                # how the implementation was called
    param_bytes: int        # weight + bias (+ index) held between steps


def check_device(device):
    """Raise NotImplementedError when device cannot run here."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise NotImplementedError("no CUDA device")


def make_problem(config, *, device="cpu", dtype=torch.float32, seed=0):
    """Random data for config; weights scaled by 1/sqrt(D k^2) so outputs stay O(1) (no denormals)."""
    check_device(device)
    if device == "cuda":
        # cuDNN would otherwise use TF32 tensor cores, which the fp32 xkern kernels cannot.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    layer, d = config.layer, config.degree
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(device, dtype)

    x = randn(layer.batch, layer.cin, layer.hw, layer.hw)
    weight = randn(layer.cout, d, layer.kernel, layer.kernel, scale=1 / math.sqrt(d * layer.kernel ** 2))
    bias = randn(layer.cout, scale=0.1)
    grad_out = randn(layer.batch, layer.cout, layer.hw, layer.hw)
    index = torch.from_numpy(make_index(config, seed)).to(device)
    return Problem(config, x, weight, bias, index, grad_out)


def dense_from_compact(weight, index, n_in):
    """W_dense (Cout, Cin, kh, kw) with W_dense[v, index[v, i]] += weight[v, i]; differentiable in weight.

    index: (Cout, D, kh, kw) int64, the (Cout, D) index broadcast over the taps.
    """
    cout, _, kh, kw = weight.shape
    return weight.new_zeros(cout, n_in, kh, kw).scatter_add(1, index, weight)


def _leaf(t):
    return t.detach().clone().requires_grad_(True)


def _torch_case(impl, conv, params, problem, param_bytes, api):
    """A Case from conv(x, *params) on torch tensors; step differentiates w.r.t. x and params."""
    x = problem.x
    leaves = (_leaf(x),) + tuple(_leaf(p) for p in params)

    def forward():
        with torch.no_grad():
            return conv(x, *params)

    def step():
        out = conv(*leaves)
        return torch.autograd.grad(out, leaves, problem.grad_out)

    sync = torch.cuda.synchronize if x.is_cuda else no_sync
    return Case(impl, forward, step, sync, api, param_bytes)


def no_sync():
    """The sync of host computations: nothing to wait for."""


def _nbytes(*tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


def _dense(problem):
    layer = problem.config.layer
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(layer.cout, layer.cin, layer.kernel, layer.kernel, generator=gen, dtype=torch.float64)
    w = (w / math.sqrt(layer.cin * layer.kernel ** 2)).to(problem.x.device, problem.x.dtype)

    def conv(x, weight, bias):
        return F.conv2d(x, weight, bias, padding=layer.padding)

    return _torch_case("dense", conv, (w, problem.bias), problem, _nbytes(w, problem.bias), "torch conv2d")


def _grouped(problem):
    config = problem.config

    def conv(x, weight, bias):
        return F.conv2d(x, weight, bias, padding=config.layer.padding, groups=config.compression)

    return _torch_case("grouped", conv, (problem.weight, problem.bias), problem,
                       _nbytes(problem.weight, problem.bias), "torch conv2d(groups=C)")


def _masked(problem):
    layer = problem.config.layer
    k = layer.kernel
    taps_index = problem.index[:, :, None, None].expand(-1, -1, k, k).contiguous()

    def conv(x, weight, bias):
        return F.conv2d(x, dense_from_compact(weight, taps_index, layer.cin), bias, padding=layer.padding)

    return _torch_case("masked", conv, (problem.weight, problem.bias), problem,
                       _nbytes(problem.weight, problem.bias, taps_index), "torch scatter + conv2d")


def has_xkern_autograd():
    """True when xkern.xconv2d accepts torch tensors (xkern.autograd defines xconv2d)."""
    try:
        from xkern.autograd import xconv2d  # noqa: F401
    except ImportError:
        return False
    return True


def _xkern(problem, backend):
    import xkern
    from xkern.ops import get_backend

    if backend is None:
        backend = "cuda" if problem.x.is_cuda else "cpu"
    if backend not in XKERN_BACKENDS:
        raise ValueError(f"xkern backend must be one of {XKERN_BACKENDS}, got {backend!r}")
    if (backend == "cuda") != problem.x.is_cuda:
        raise NotImplementedError(f"xkern backend {backend!r} cannot run on a {problem.x.device.type} tensor")
    try:
        get_backend(backend)
    except RuntimeError as exc:
        raise NotImplementedError(str(exc)) from None
    pad = problem.config.layer.padding
    param_bytes = _nbytes(problem.weight, problem.bias, problem.index)
    if has_xkern_autograd():
        index = problem.index

        def conv(x, weight, bias):
            return xkern.xconv2d(x, weight, index, bias, 1, pad, 1, backend=backend)

        return _torch_case("xkern", conv, (problem.weight, problem.bias), problem, param_bytes,
                           f"xkern {backend} via torch autograd")
    return _xkern_numpy(problem, backend, pad, param_bytes)


def _xkern_numpy(problem, backend, pad, param_bytes):
    """xkern's numpy API, while xkern.autograd is absent: step = xconv2d + xconv2d_backward."""
    import xkern

    if problem.x.is_cuda:
        raise NotImplementedError("xkern on CUDA tensors needs xkern.autograd")
    x, w, b, g = (np.ascontiguousarray(t.numpy()) for t in
                  (problem.x, problem.weight, problem.bias, problem.grad_out))
    index = problem.index.numpy()

    def forward():
        return xkern.xconv2d(x, w, index, b, 1, pad, 1, backend=backend)

    def step():
        out = xkern.xconv2d(x, w, index, b, 1, pad, 1, backend=backend)
        return out, xkern.xconv2d_backward(g, x, w, index, 1, pad, 1, backend=backend)

    return Case("xkern", forward, step, no_sync, f"xkern {backend} via numpy API (no xkern.autograd)",
                param_bytes)


def build_case(impl, problem, *, xkern_backend=None):
    """The Case of implementation impl (see IMPLS) on problem.

    xkern_backend: None picks "cuda" for CUDA data, else "cpu"; "reference" is the slow numpy twin.
    """
    if impl == "dense":
        return _dense(problem)
    if impl == "grouped":
        return _grouped(problem)
    if impl == "masked":
        return _masked(problem)
    if impl == "xkern":
        return _xkern(problem, xkern_backend)
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
