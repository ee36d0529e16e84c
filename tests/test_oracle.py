"""Every host backend against the oracle (torch's float64 conv2d / linear on the dense
weight), forward and every gradient, through the numpy and the torch entry points."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import xkern
from testing import (BACKENDS, DTYPES, EXAMPLES, assert_close, conv2d_oracle, dense_weight,
                     linear_oracle, random_index, requires_torch, torch)

SIZE = 9          # largest H, W
CHANNELS = 8      # largest Cin, Cout
BATCH = 3


@st.composite
def conv_configs(draw):
    """Geometry of one X-Conv; the arrays come from `seed`.  Dilation is capped so the
    dilated kernel fits in SIZE + 2 * padding, and H, W are drawn so the output is non-empty."""
    n_in = draw(st.integers(1, CHANNELS))
    cfg = dict(batch=draw(st.integers(1, BATCH)), n_in=n_in, n_out=draw(st.integers(1, CHANNELS)),
               degree=draw(st.integers(1, n_in)), repeats=draw(st.booleans()),
               bias=draw(st.booleans()), seed=draw(st.integers(0, 2**32 - 1)))
    kernel, stride, padding, dilation, spatial = [], [], [], [], []
    for _ in range(2):
        k = draw(st.integers(1, 5))
        d = draw(st.integers(1, min(3, 8 // max(k - 1, 1))))
        p = draw(st.integers(0, 2))
        kernel.append(k)
        dilation.append(d)
        padding.append(p)
        stride.append(draw(st.integers(1, 3)))
        spatial.append(draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), SIZE)))
    cfg.update(kernel=tuple(kernel), hw=tuple(spatial))
    # torch and xkern take an int for equal pairs: exercise both spellings.
    for name, pair in (("stride", stride), ("padding", padding), ("dilation", dilation)):
        cfg[name] = pair[0] if pair[0] == pair[1] and draw(st.booleans()) else tuple(pair)
    return cfg


@st.composite
def linear_configs(draw):
    n_in = draw(st.integers(1, 2 * CHANNELS))
    return dict(batch=draw(st.integers(1, BATCH)), n_in=n_in, n_out=draw(st.integers(1, 2 * CHANNELS)),
                degree=draw(st.integers(1, n_in)), repeats=draw(st.booleans()),
                bias=draw(st.booleans()), seed=draw(st.integers(0, 2**32 - 1)))


def _out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _pairs(cfg):
    return [(v, v) if isinstance(v, int) else v for v in (cfg["stride"], cfg["padding"], cfg["dilation"])]


def conv_case(cfg):
    """float64 (x, weight, index, bias, grad_out) for a conv_configs draw."""
    rng = np.random.default_rng(cfg["seed"])
    (kh, kw), (h, w) = cfg["kernel"], cfg["hw"]
    (sh, sw), (ph, pw), (dh, dw) = _pairs(cfg)
    x = rng.uniform(-1, 1, (cfg["batch"], cfg["n_in"], h, w))
    weight = rng.standard_normal((cfg["n_out"], cfg["degree"], kh, kw))
    index = random_index(rng, cfg["n_out"], cfg["n_in"], cfg["degree"], cfg["repeats"])
    bias = rng.standard_normal(cfg["n_out"]) if cfg["bias"] else None
    out_hw = (_out_size(h, kh, sh, ph, dh), _out_size(w, kw, sw, pw, dw))
    grad_out = rng.standard_normal((cfg["batch"], cfg["n_out"]) + out_hw)
    return x, weight, index, bias, grad_out


def linear_case(cfg):
    rng = np.random.default_rng(cfg["seed"])
    x = rng.uniform(-1, 1, (cfg["batch"], cfg["n_in"]))
    weight = rng.standard_normal((cfg["n_out"], cfg["degree"]))
    index = random_index(rng, cfg["n_out"], cfg["n_in"], cfg["degree"], cfg["repeats"])
    bias = rng.standard_normal(cfg["n_out"]) if cfg["bias"] else None
    grad_out = rng.standard_normal((cfg["batch"], cfg["n_out"]))
    return x, weight, index, bias, grad_out


def _cast(dtype, *arrays):
    return [None if a is None else a.astype(dtype) for a in arrays]


def _check(results, expected, dtype):
    for what, got, want in zip(("out", "grad_x", "grad_weight", "grad_bias"), results, expected):
        assert_close(got, want, dtype, what)


def test_dense_weight_adds_repeated_entries():
    weight = np.arange(1.0, 7.0).reshape(3, 2)
    got = dense_weight(weight, np.array([[0, 2], [1, 1], [2, 0]]), 3)
    np.testing.assert_array_equal(got, [[1, 0, 2], [0, 7, 0], [6, 0, 5]])


# ---- numpy entry point -------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=EXAMPLES)
@given(cfg=conv_configs())
def test_xconv2d_numpy(backend, cfg):
    x, weight, index, bias, grad_out = conv_case(cfg)
    geometry = (cfg["stride"], cfg["padding"], cfg["dilation"])
    expected = conv2d_oracle(x, weight, index, bias, *geometry, grad_out)
    for dtype in DTYPES:
        xd, wd, bd, gd = _cast(dtype, x, weight, bias, grad_out)
        out = xkern.xconv2d(xd, wd, index, bd, *geometry, backend=backend)
        grads = xkern.xconv2d_backward(gd, xd, wd, index, *geometry, backend=backend)
        _check((out,) + tuple(grads), expected, dtype)
        prepared = xkern.ops.PreparedXconv2d(xd, wd, index, bd, *geometry, backend=backend)
        for _ in range(2):  # the second call finds the cpu backend's plan
            np.testing.assert_array_equal(prepared(xd, wd, bd), out)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=EXAMPLES)
@given(cfg=linear_configs())
def test_xlinear_numpy(backend, cfg):
    x, weight, index, bias, grad_out = linear_case(cfg)
    expected = linear_oracle(x, weight, index, bias, grad_out)
    for dtype in DTYPES:
        xd, wd, bd, gd = _cast(dtype, x, weight, bias, grad_out)
        out = xkern.xlinear(xd, wd, index, bd, backend=backend)
        grads = xkern.xlinear_backward(gd, xd, wd, index, backend=backend)
        _check((out,) + tuple(grads), expected, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("grads", [(), ("input",), ("weight",), ("bias",), ("weight", "input")])
def test_backward_computes_only_the_grads_asked(backend, grads):
    cfg = dict(batch=2, n_in=5, n_out=4, degree=3, repeats=True, bias=False, seed=7,
               kernel=(3, 2), hw=(6, 5), stride=(2, 1), padding=1, dilation=(1, 2))
    x, weight, index, _, grad_out = conv_case(cfg)
    expected = conv2d_oracle(x, weight, index, None, cfg["stride"], cfg["padding"], cfg["dilation"],
                             grad_out)[1:]
    got = xkern.xconv2d_backward(grad_out, x, weight, index, cfg["stride"], cfg["padding"],
                                 cfg["dilation"], backend=backend, grads=grads)
    for name, g, want in zip(("input", "weight", "bias"), got, expected):
        if name in grads:
            assert_close(g, want, np.float64, name)
        else:
            assert g is None, name


# ---- torch entry point -------------------------------------------------------------

def _tensors(dtype, *arrays, grad=True):
    return [None if a is None else torch.tensor(a, dtype=dtype, requires_grad=grad) for a in arrays]


def _grads_of(*tensors):
    return [None if t is None else t.grad.numpy() for t in tensors]


@requires_torch
@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=EXAMPLES)
@given(cfg=conv_configs())
def test_xconv2d_torch(backend, cfg):
    x, weight, index, bias, grad_out = conv_case(cfg)
    geometry = (cfg["stride"], cfg["padding"], cfg["dilation"])
    expected = conv2d_oracle(x, weight, index, bias, *geometry, grad_out)
    for dtype, tdtype in zip(DTYPES, (torch.float64, torch.float32)):
        xt, wt, bt = _tensors(tdtype, x, weight, bias)
        out = xkern.xconv2d(xt, wt, torch.from_numpy(index), bt, *geometry, backend=backend)
        assert isinstance(out, torch.Tensor) and out.requires_grad
        out.backward(torch.tensor(grad_out, dtype=tdtype))
        results = [out.detach().numpy()] + _grads_of(xt, wt, bt)
        for what, got, want in zip(("out", "grad_x", "grad_weight", "grad_bias"), results, expected):
            if got is not None:
                assert_close(got, want, dtype, what)


@requires_torch
@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=EXAMPLES)
@given(cfg=linear_configs())
def test_xlinear_torch(backend, cfg):
    x, weight, index, bias, grad_out = linear_case(cfg)
    expected = linear_oracle(x, weight, index, bias, grad_out)
    for dtype, tdtype in zip(DTYPES, (torch.float64, torch.float32)):
        xt, wt, bt = _tensors(tdtype, x, weight, bias)
        out = xkern.xlinear(xt, wt, torch.from_numpy(index), bt, backend=backend)
        assert isinstance(out, torch.Tensor) and out.requires_grad
        out.backward(torch.tensor(grad_out, dtype=tdtype))
        results = [out.detach().numpy()] + _grads_of(xt, wt, bt)
        for what, got, want in zip(("out", "grad_x", "grad_weight", "grad_bias"), results, expected):
            if got is not None:
                assert_close(got, want, dtype, what)


GRADCHECK_CONFIGS = [
    dict(batch=2, n_in=3, n_out=4, degree=2, repeats=False, bias=True, seed=1,
         kernel=(3, 3), hw=(5, 5), stride=1, padding=1, dilation=1),
    dict(batch=1, n_in=4, n_out=3, degree=3, repeats=True, bias=True, seed=2,
         kernel=(2, 3), hw=(6, 5), stride=(2, 1), padding=(0, 2), dilation=(1, 2)),
    dict(batch=2, n_in=2, n_out=2, degree=2, repeats=False, bias=False, seed=3,
         kernel=(1, 1), hw=(3, 4), stride=2, padding=0, dilation=1),
]


@requires_torch
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cfg", GRADCHECK_CONFIGS, ids=["3x3", "2x3-strided-dilated-repeats", "1x1-nobias"])
def test_xconv2d_gradcheck(backend, cfg):
    x, weight, index, bias, _ = conv_case(cfg)
    inputs = _tensors(torch.float64, x, weight, bias)
    idx = torch.from_numpy(index)

    def f(xt, wt, bt):
        return xkern.xconv2d(xt, wt, idx, bt, cfg["stride"], cfg["padding"], cfg["dilation"],
                             backend=backend)

    assert torch.autograd.gradcheck(f, tuple(inputs))


@requires_torch
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bias", [True, False])
def test_xlinear_gradcheck(backend, bias):
    x, weight, index, b, _ = linear_case(dict(batch=3, n_in=6, n_out=5, degree=3, repeats=True,
                                              bias=bias, seed=4))
    inputs = _tensors(torch.float64, x, weight, b)
    idx = torch.from_numpy(index)
    assert torch.autograd.gradcheck(lambda xt, wt, bt: xkern.xlinear(xt, wt, idx, bt, backend=backend),
                                    tuple(inputs))
