"""Bad input is refused before any kernel runs, with a ValueError or TypeError whose message
names the argument and says what it got; awkward but valid input gives the right answer."""
import numpy as np
import pytest

import xkern
from testing import BACKENDS, assert_close, conv2d_oracle, linear_oracle

B, CIN, H, W, COUT, D, K = 2, 4, 6, 6, 3, 2, 3


def conv_inputs(dtype=np.float64, seed=0):
    """Valid xconv2d keyword arguments and a matching grad_out (stride 1, padding 1)."""
    rng = np.random.default_rng(seed)
    args = dict(x=rng.uniform(-1, 1, (B, CIN, H, W)).astype(dtype),
                weight=rng.standard_normal((COUT, D, K, K)).astype(dtype),
                index=np.array([[0, 3], [1, 1], [2, 0]]),
                bias=rng.standard_normal(COUT).astype(dtype),
                stride=1, padding=1, dilation=1)
    return args, rng.standard_normal((B, COUT, H, W)).astype(dtype)


def linear_inputs(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    args = dict(x=rng.uniform(-1, 1, (B, CIN)).astype(dtype),
                weight=rng.standard_normal((COUT, D)).astype(dtype),
                index=np.array([[0, 3], [1, 1], [2, 0]]),
                bias=rng.standard_normal(COUT).astype(dtype))
    return args, rng.standard_normal((B, COUT)).astype(dtype)


def _zeros(*shape, dtype=np.float64):
    return np.zeros(shape, dtype=dtype)


# (id, argument overrides, exception, text the message must contain).  Each is run
# through the forward op and, unless it concerns bias, through the backward op.
BAD_CONV = [
    ("x-3d", dict(x=_zeros(B, CIN, H)), ValueError, "x"),
    ("x-5d", dict(x=_zeros(B, CIN, H, W, 1)), ValueError, "x"),
    ("x-scalar", dict(x=1.0), ValueError, "x"),
    ("x-int", dict(x=np.ones((B, CIN, H, W), dtype=np.int64)), TypeError, "x"),
    ("x-float16", dict(x=_zeros(B, CIN, H, W, dtype=np.float16)), TypeError, "x"),
    ("x-complex", dict(x=_zeros(B, CIN, H, W, dtype=np.complex128)), TypeError, "x"),
    ("x-bool", dict(x=np.ones((B, CIN, H, W), dtype=bool)), TypeError, "x"),
    ("x-None", dict(x=None), TypeError, "x"),
    ("x-str", dict(x="abc"), TypeError, "x"),
    ("x-ragged-list", dict(x=[[[[1.0]]], [[[1.0, 2.0]]]]), TypeError, "x"),
    ("x-no-channels", dict(x=_zeros(B, 0, H, W)), ValueError, "x"),
    ("weight-3d", dict(weight=_zeros(COUT, D, K)), ValueError, "weight"),
    ("weight-int", dict(weight=np.ones((COUT, D, K, K), dtype=np.int32)), TypeError, "weight"),
    ("weight-other-float", dict(weight=_zeros(COUT, D, K, K, dtype=np.float32)), TypeError, "weight"),
    ("weight-degree-0", dict(weight=_zeros(COUT, 0, K, K), index=np.zeros((COUT, 0), dtype=np.int64)),
     ValueError, "weight"),
    ("weight-kernel-0", dict(weight=_zeros(COUT, D, 0, K)), ValueError, "weight"),
    ("index-Cout-mismatch", dict(index=np.array([[0, 1], [1, 2]])), ValueError, "index"),
    ("index-D-mismatch", dict(index=np.array([[0], [1], [2]])), ValueError, "index"),
    ("index-1d", dict(index=np.array([0, 1, 2])), ValueError, "index"),
    ("index-too-large", dict(index=np.array([[0, 3], [1, CIN], [2, 0]])), ValueError, "index"),
    ("index-negative", dict(index=np.array([[0, 3], [1, -1], [2, 0]])), ValueError, "index"),
    ("index-uint64-huge", dict(index=np.array([[0, 3], [1, 2**64 - 1], [2, 0]], dtype=np.uint64)),
     ValueError, "index"),
    ("index-float", dict(index=np.array([[0.0, 3.0], [1.0, 1.0], [2.0, 0.0]])), TypeError, "index"),
    ("index-bool", dict(index=np.ones((COUT, D), dtype=bool)), TypeError, "index"),
    ("index-None", dict(index=None), TypeError, "index"),
    ("index-beyond-int64", dict(index=[[0, 3], [1, 2**70], [2, 0]]), TypeError, "index"),
    ("index-ragged-list", dict(index=[[0, 3], [1], [2, 0]]), TypeError, "index"),
    ("bias-shape", dict(bias=_zeros(COUT + 1)), ValueError, "bias"),
    ("bias-2d", dict(bias=_zeros(COUT, 1)), ValueError, "bias"),
    ("bias-other-float", dict(bias=_zeros(COUT, dtype=np.float32)), TypeError, "bias"),
    ("bias-int", dict(bias=np.ones(COUT, dtype=np.int64)), TypeError, "bias"),
    ("stride-0", dict(stride=0), ValueError, "stride"),
    ("stride-negative-in-pair", dict(stride=(1, -1)), ValueError, "stride"),
    ("stride-float", dict(stride=1.5), TypeError, "stride"),
    ("stride-bool", dict(stride=True), TypeError, "stride"),
    ("stride-triple", dict(stride=(1, 1, 1)), TypeError, "stride"),
    ("stride-None", dict(stride=None), TypeError, "stride"),
    ("stride-str", dict(stride="2"), TypeError, "stride"),
    ("dilation-0", dict(dilation=0), ValueError, "dilation"),
    ("dilation-0-in-pair", dict(dilation=(2, 0)), ValueError, "dilation"),
    ("padding-negative", dict(padding=-1), ValueError, "padding"),
    ("padding-float-pair", dict(padding=(1.0, 1)), TypeError, "padding"),
    ("output-empty-kernel", dict(weight=_zeros(COUT, D, H + 1, 1), padding=0), ValueError, "empty"),
    ("output-empty-dilation", dict(dilation=3, padding=0), ValueError, "empty"),
    ("backend-unknown", dict(backend="nope"), ValueError, "backend"),
    ("backend-not-a-name", dict(backend=3), ValueError, "backend"),
]

BAD_CONV_BACKWARD = [
    ("grad_out-shape", dict(grad_out=_zeros(B, COUT, H, W + 1)), ValueError, "grad_out"),
    ("grad_out-3d", dict(grad_out=_zeros(B, COUT, H)), ValueError, "grad_out"),
    ("grad_out-other-float", dict(grad_out=_zeros(B, COUT, H, W, dtype=np.float32)), TypeError, "grad_out"),
    ("grad_out-None", dict(grad_out=None), TypeError, "grad_out"),
    ("grads-unknown", dict(grads=("input", "hessian")), ValueError, "grads"),
    ("grads-None", dict(grads=None), TypeError, "grads"),
    ("grads-str", dict(grads="weight"), TypeError, "grads"),
]

BAD_LINEAR = [
    ("x-4d", dict(x=_zeros(B, CIN, 1, 1)), ValueError, "x"),
    ("x-int", dict(x=np.ones((B, CIN), dtype=np.int64)), TypeError, "x"),
    ("x-no-features", dict(x=_zeros(B, 0)), ValueError, "x"),
    ("weight-4d", dict(weight=_zeros(COUT, D, 1, 1)), ValueError, "weight"),
    ("weight-other-float", dict(weight=_zeros(COUT, D, dtype=np.float32)), TypeError, "weight"),
    ("index-D-mismatch", dict(index=np.array([[0], [1], [2]])), ValueError, "index"),
    ("index-too-large", dict(index=np.array([[0, 3], [1, CIN], [2, 0]])), ValueError, "index"),
    ("index-float", dict(index=np.zeros((COUT, D))), TypeError, "index"),
    ("bias-shape", dict(bias=_zeros(COUT - 1)), ValueError, "bias"),
    ("backend-unknown", dict(backend="nope"), ValueError, "backend"),
]

BAD_LINEAR_BACKWARD = [
    ("grad_out-shape", dict(grad_out=_zeros(B, COUT + 1)), ValueError, "grad_out"),
    ("grad_out-other-float", dict(grad_out=_zeros(B, COUT, dtype=np.float32)), TypeError, "grad_out"),
    ("grads-unknown", dict(grads=("bias", "x")), ValueError, "grads"),
]


def _params(cases):
    return [pytest.param(over, exc, text, id=case_id) for case_id, over, exc, text in cases]


def _no_bias(cases):
    return [case for case in cases if "bias" not in case[1]]


def _expect_refusal(call, exc, text):
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    assert text in message, message
    assert "got" in message or "gives" in message, message  # says what it was given


def _call_args(args, backend, over, grad_out=None):
    """Keyword arguments for the op: the valid args on backend with over applied; for
    the backward op (grad_out given) without bias."""
    args = dict(args, backend=backend)
    if grad_out is not None:
        del args["bias"]
        args["grad_out"] = grad_out
    args.update(over)
    return args


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("over, exc, text", _params(BAD_CONV))
def test_xconv2d_refuses(backend, over, exc, text):
    args, _ = conv_inputs()
    _expect_refusal(lambda: xkern.xconv2d(**_call_args(args, backend, over)), exc, text)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("over, exc, text", _params(_no_bias(BAD_CONV) + BAD_CONV_BACKWARD))
def test_xconv2d_backward_refuses(backend, over, exc, text):
    args, grad_out = conv_inputs()
    _expect_refusal(lambda: xkern.xconv2d_backward(**_call_args(args, backend, over, grad_out)), exc, text)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("over, exc, text", _params(BAD_LINEAR))
def test_xlinear_refuses(backend, over, exc, text):
    args, _ = linear_inputs()
    _expect_refusal(lambda: xkern.xlinear(**_call_args(args, backend, over)), exc, text)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("over, exc, text", _params(_no_bias(BAD_LINEAR) + BAD_LINEAR_BACKWARD))
def test_xlinear_backward_refuses(backend, over, exc, text):
    args, grad_out = linear_inputs()
    _expect_refusal(lambda: xkern.xlinear_backward(**_call_args(args, backend, over, grad_out)), exc, text)


def test_unknown_backend_lists_the_backends():
    args, _ = conv_inputs()
    with pytest.raises(ValueError) as info:
        xkern.xconv2d(**args, backend="nope")
    for name in ("reference", "cpu", "cuda", "'nope'"):
        assert name in str(info.value)


# ---- valid but awkward input -------------------------------------------------------

def _run_conv(backend, args, grad_out):
    """xconv2d and xconv2d_backward on args, checked against the oracle."""
    geometry = (args["stride"], args["padding"], args["dilation"])
    out = xkern.xconv2d(args["x"], args["weight"], args["index"], args["bias"], *geometry,
                        backend=backend)
    grads = xkern.xconv2d_backward(grad_out, args["x"], args["weight"], args["index"], *geometry,
                                   backend=backend)
    pairs = [tuple(int(v) for v in np.broadcast_to(a, 2)) for a in geometry]
    expected = conv2d_oracle(args["x"], args["weight"], args["index"], args["bias"], *pairs, grad_out)
    dtype = np.asarray(args["x"]).dtype
    for what, got, want in zip(("out", "grad_x", "grad_weight", "grad_bias"), (out,) + grads, expected):
        assert_close(got, want, dtype, what)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_non_contiguous_inputs(backend, dtype):
    args, grad_out = conv_inputs(dtype)
    rng = np.random.default_rng(1)
    big_x = rng.uniform(-1, 1, (B, 2 * CIN, H, 2 * W)).astype(dtype)
    args["x"] = big_x[:, ::2, :, 1::2]
    args["weight"] = np.ascontiguousarray(args["weight"].transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    args["index"] = np.ascontiguousarray(args["index"].T).T
    args["bias"] = np.repeat(args["bias"], 2)[::2]
    grad_out = np.ascontiguousarray(grad_out[..., ::-1])[..., ::-1]
    for a in (args["x"], args["weight"], args["index"], args["bias"], grad_out):
        assert not a.flags.c_contiguous
    _run_conv(backend, args, grad_out)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fortran_ordered_inputs(backend):
    args, grad_out = conv_inputs()
    for name in ("x", "weight", "index"):
        args[name] = np.asfortranarray(args[name])
        assert not args[name].flags.c_contiguous
    _run_conv(backend, args, np.asfortranarray(grad_out))


@pytest.mark.parametrize("backend", BACKENDS)
def test_read_only_inputs_are_read_and_left_unchanged(backend):
    args, grad_out = conv_inputs()
    before = {name: np.array(a, copy=True) for name, a in args.items() if isinstance(a, np.ndarray)}
    for a in [args[name] for name in before] + [grad_out]:
        a.setflags(write=False)
    _run_conv(backend, args, grad_out)
    for name, copy in before.items():
        np.testing.assert_array_equal(args[name], copy)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("index", [
    pytest.param(np.array([[0, 3], [1, 1], [2, 0]], dtype=np.int32), id="int32"),
    pytest.param(np.array([[0, 3], [1, 1], [2, 0]], dtype=np.uint8), id="uint8"),
    pytest.param(np.array([[0, 3], [1, 1], [2, 0]], dtype=np.int16), id="int16"),
    pytest.param([[0, 3], [1, 1], [2, 0]], id="list"),
    pytest.param(((0, 3), (1, 1), (2, 0)), id="tuple"),
])
def test_index_of_any_integer_kind(backend, index):
    args, grad_out = conv_inputs()
    args["index"] = index
    _run_conv(backend, args, grad_out)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stride, padding, dilation", [
    ((2, 1), (1, 0), (1, 2)),
    ([1, 2], [0, 2], [2, 1]),
    (np.int64(2), np.int32(1), np.int8(1)),
    (np.array([1, 2]), (0, 1), 1),
], ids=["tuples", "lists", "numpy-ints", "numpy-array"])
def test_geometry_spellings(backend, stride, padding, dilation):
    args, _ = conv_inputs()
    args.update(stride=stride, padding=padding, dilation=dilation)
    pairs = [tuple(int(v) for v in np.broadcast_to(a, 2)) for a in (stride, padding, dilation)]
    out_hw = [(n + 2 * p - d * (K - 1) - 1) // s + 1 for n, s, p, d in zip((H, W), *pairs)]
    grad_out = np.random.default_rng(2).standard_normal((B, COUT, *out_hw))
    _run_conv(backend, args, grad_out)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nested_lists_for_arrays(backend):
    args, grad_out = conv_inputs()
    args = dict(args, x=args["x"].tolist(), weight=args["weight"].tolist(), bias=args["bias"].tolist())
    _run_conv(backend, args, grad_out.tolist())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_empty_batch(backend, dtype):
    args, _ = conv_inputs(dtype)
    x = args["x"][:0]
    out = xkern.xconv2d(x, args["weight"], args["index"], args["bias"], 1, 1, 1, backend=backend)
    assert out.shape == (0, COUT, H, W) and out.dtype == dtype
    gx, gw, gb = xkern.xconv2d_backward(np.zeros(out.shape, dtype), x, args["weight"], args["index"],
                                        1, 1, 1, backend=backend)
    assert gx.shape == x.shape and gx.dtype == dtype
    np.testing.assert_array_equal(gw, np.zeros((COUT, D, K, K), dtype))
    np.testing.assert_array_equal(gb, np.zeros(COUT, dtype))

    largs, _ = linear_inputs(dtype)
    x = largs["x"][:0]
    out = xkern.xlinear(x, largs["weight"], largs["index"], largs["bias"], backend=backend)
    assert out.shape == (0, COUT) and out.dtype == dtype
    gx, gw, gb = xkern.xlinear_backward(np.zeros((0, COUT), dtype), x, largs["weight"], largs["index"],
                                        backend=backend)
    assert gx.shape == (0, CIN)
    np.testing.assert_array_equal(gw, np.zeros((COUT, D), dtype))
    np.testing.assert_array_equal(gb, np.zeros(COUT, dtype))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("stride", [(1, 2), (1, 1)])
def test_nan_in_x_reaches_exactly_the_outputs_that_read_it(backend, dtype, stride):
    args, grad_out = conv_inputs(dtype)
    args["x"][1, 3, 2, 4] = np.nan  # channel 3 is read by output 0 only
    args["stride"] = stride
    grad_out = grad_out[..., ::stride[1]].copy()
    geometry = (args["stride"], args["padding"], args["dilation"])
    out = xkern.xconv2d(args["x"], args["weight"], args["index"], args["bias"], *geometry, backend=backend)
    gx, gw, gb = xkern.xconv2d_backward(grad_out, args["x"], args["weight"], args["index"], *geometry,
                                        backend=backend)
    # Which outputs and weight taps touch the NaN pixel: the same X-Conv on its indicator,
    # with positive weights and gradients, is non-zero exactly there.
    hit = np.isnan(args["x"]).astype(np.float64)
    ones_out, _, ones_gw, _ = conv2d_oracle(hit, np.ones(args["weight"].shape), args["index"], None,
                                            *geometry, np.ones(grad_out.shape))
    np.testing.assert_array_equal(np.isnan(out), ones_out > 0)
    np.testing.assert_array_equal(np.isnan(gw), ones_gw > 0)
    assert np.isnan(out).any() and not np.isnan(out[:, 1:]).any()
    # grad_x does not depend on x; grad_bias reads grad_out only.
    assert np.isfinite(gx).all() and np.isfinite(gb).all()
    clean = conv2d_oracle(np.nan_to_num(args["x"], nan=0.0), args["weight"], args["index"], args["bias"],
                          *geometry, grad_out)
    finite = ~np.isnan(out)
    assert_close(out[finite], clean[0][finite], dtype, "out")
    assert_close(gx, clean[1], dtype, "grad_x")
    assert_close(gw[~np.isnan(gw)], clean[2][~np.isnan(gw)], dtype, "grad_weight")


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_in_weight_reaches_its_output_channel(backend):
    args, _ = conv_inputs()
    args["weight"][1, 0, 2, 1] = np.nan
    out = xkern.xconv2d(args["x"], args["weight"], args["index"], args["bias"], 1, 0, 1, backend=backend)
    assert np.isnan(out[:, 1]).all()
    assert np.isfinite(out[:, [0, 2]]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_xlinear_awkward_inputs(backend):
    args, grad_out = linear_inputs(np.float32)
    x = np.asfortranarray(args["x"])
    weight = args["weight"][:, ::-1].copy()[:, ::-1]
    index = args["index"].astype(np.int32).tolist()
    x.setflags(write=False)
    out = xkern.xlinear(x, weight, index, args["bias"], backend=backend)
    grads = xkern.xlinear_backward(np.asfortranarray(grad_out), x, weight, index, backend=backend)
    expected = linear_oracle(x, weight, index, args["bias"], grad_out)
    for what, got, want in zip(("out", "grad_x", "grad_weight", "grad_bias"), (out,) + grads, expected):
        assert_close(got, want, np.float32, what)

