"""Half precision: X layers under torch.autocast (CPU bfloat16; CUDA float16 and bfloat16) and
X layers with float16 / bfloat16 parameters, against the float64 oracle.

The kernels compute in float32.  Under autocast the layers (and the custom ops, through their
torch.library autocast rule) take half-precision inputs, compute and return float32; a
half-precision layer outside autocast returns its own dtype.  Either way the gradients come
back in each input's dtype.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from xkern.nn import XConv2d, XLinear  # noqa: E402
from testing import conv2d_oracle, linear_oracle  # noqa: E402

_GPU = torch.cuda.is_available()
_no_gpu = pytest.mark.skipif(not _GPU, reason="no CUDA GPU")
CASES = [pytest.param("cpu", torch.bfloat16, id="cpu-bfloat16"),
         pytest.param("cuda", torch.float16, id="cuda-float16", marks=_no_gpu),
         pytest.param("cuda", torch.bfloat16, id="cuda-bfloat16", marks=_no_gpu)]
# One rounding to the half type: 2^-8 relative for bfloat16, 2^-11 for float16; a few of them.
HALF_TOL = {torch.bfloat16: 2e-2, torch.float16: 4e-3}
F32_TOL = 2e-4


def _np(t):
    return t.detach().cpu().double().numpy()


def _close(actual, expected, tol, what):
    actual, expected = _np(actual), np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale, err_msg=what)


def _conv(device):
    torch.manual_seed(0)
    return XConv2d(8, 6, 3, padding=1, degree=3, seed=0).to(device)


def _linear(device):
    torch.manual_seed(0)
    return XLinear(12, 5, degree=4, seed=0).to(device)


def _oracle(layer, x, grad_out):
    """float64 (out, grad_x, grad_weight, grad_bias) of layer's float32 parameters on x's values."""
    args = (_np(x), _np(layer.weight), _np(layer.index).astype(np.int64), _np(layer.bias))
    if isinstance(layer, XConv2d):
        return conv2d_oracle(*args, layer.stride, layer.padding, layer.dilation, _np(grad_out))
    return linear_oracle(*args, _np(grad_out))


def _input(layer, device):
    shape = (3, 8, 6, 5) if isinstance(layer, XConv2d) else (7, 12)
    return torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(device)


@pytest.mark.parametrize("make", [_conv, _linear], ids=["xconv2d", "xlinear"])
@pytest.mark.parametrize("device, dtype", CASES)
def test_autocast_layer(make, device, dtype):
    """Under autocast an X layer takes a half-precision input (a previous layer's output) and
    float32 parameters, computes in float32 and returns float32; gradients in each dtype."""
    layer = make(device)
    x = _input(layer, device).to(dtype).requires_grad_()
    with torch.autocast(device, dtype=dtype):
        out = layer(x)
    assert out.dtype == torch.float32
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(device)
    out.backward(grad_out)
    assert x.grad.dtype == dtype and layer.weight.grad.dtype == torch.float32
    # Exact float32 work on the rounded input: float32 tolerance against the oracle on it ...
    expected = _oracle(layer, x, grad_out)
    for actual, exp, what in zip((out, layer.weight.grad, layer.bias.grad),
                                 (expected[0], expected[2], expected[3]),
                                 ("out", "grad_weight", "grad_bias")):
        _close(actual, exp, F32_TOL, what)
    _close(x.grad, expected[1], HALF_TOL[dtype], "grad_x")  # rounded to dtype on the way back
    # ... and the half-precision tolerance against the float32 input it was rounded from.
    _close(out, _oracle(layer, _input(layer, device), grad_out)[0], HALF_TOL[dtype], "out vs float32")


@pytest.mark.parametrize("device, dtype", CASES)
def test_autocast_ops(device, dtype):
    """The custom ops themselves: their autocast rule casts half inputs to float32, and their
    registered autograd formula (what torch.export keeps) runs on the casts."""
    layer = _conv(device)
    x = _input(layer, device).to(dtype).requires_grad_()
    weight = layer.weight.detach().to(dtype).requires_grad_()
    with torch.autocast(device, dtype=dtype):
        out = torch.ops.xkern.xconv2d_fwd(x, weight, layer.index, None, [1, 1], [1, 1], [1, 1], None)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert x.grad.dtype == dtype and weight.grad.dtype == dtype
    grad_out = torch.ones_like(out)
    expected = conv2d_oracle(_np(x), _np(weight), _np(layer.index).astype(np.int64), None,
                             (1, 1), (1, 1), (1, 1), _np(grad_out))
    _close(out, expected[0], F32_TOL, "out")
    _close(x.grad, expected[1], HALF_TOL[dtype], "grad_x")
    _close(weight.grad, expected[2], HALF_TOL[dtype], "grad_weight")


def test_ops_outside_autocast_name_the_way_out():
    layer = _conv("cpu")
    x = _input(layer, "cpu").bfloat16()
    with pytest.raises(TypeError, match="bfloat16.*autocast"):
        torch.ops.xkern.xconv2d_fwd(x, layer.weight, layer.index, None, [1, 1], [1, 1], [1, 1], None)


HALF_PARAMS = [pytest.param("cpu", torch.bfloat16, id="cpu-bfloat16"),
               pytest.param("cpu", torch.float16, id="cpu-float16")] + CASES[1:]


@pytest.mark.parametrize("make", [_conv, _linear], ids=["xconv2d", "xlinear"])
@pytest.mark.parametrize("device, dtype", HALF_PARAMS)
def test_half_precision_layer(make, device, dtype):
    """A layer converted with .to(dtype) runs on dtype data with float32 accumulation and
    returns dtype, as torch's Conv2d and Linear do."""
    layer = make(device).to(dtype)
    x = _input(layer, device).to(dtype).requires_grad_()
    out = layer(x)
    assert out.dtype == dtype
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(device, dtype)
    out.backward(grad_out)
    assert x.grad.dtype == layer.weight.grad.dtype == layer.bias.grad.dtype == dtype
    expected = _oracle(layer, x, grad_out)  # on the half-precision values, in float64
    for actual, exp, what in zip((out, x.grad, layer.weight.grad, layer.bias.grad), expected,
                                 ("out", "grad_x", "grad_weight", "grad_bias")):
        _close(actual, exp, HALF_TOL[dtype], what)


def test_autocast_training_step_matches_float32():
    """A small X-Net's step under CPU bfloat16 autocast: the loss and every gradient within
    bfloat16 tolerance of the float32 step."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        XConv2d(8, 16, 3, padding=1, compression=2, seed=0), nn.BatchNorm2d(16),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                        XLinear(64, 10, compression=4, seed=1))
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    labels = torch.arange(16) % 10
    steps = {}
    for mode in ("float32", "bfloat16"):
        net.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bfloat16"):
            loss = F.cross_entropy(net(x), labels)
        loss.backward()
        steps[mode] = [loss] + [p.grad.clone() for p in net.parameters()]
    for i, (half, full) in enumerate(zip(steps["bfloat16"], steps["float32"])):
        assert half.dtype == torch.float32
        _close(half, _np(full), 5e-2, f"tensor {i} of the step")


def test_train_cli_under_autocast(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from xkern.__main__ import main
    out = tmp_path / "run"
    assert main(["train", "--model", "x-resnet-2-18", "--data", "digits", "--image-size", "8",
                 "--limit", "64", "--device", "cpu", "--epochs", "1", "--batch-size", "16",
                 "--no-progress", "--autocast", "bfloat16", "--out", str(out)]) == 0
    assert "torch.autocast('cpu', bfloat16)" in capsys.readouterr().out
    assert (out / "model_final.pt").is_file()
