"""The torch path (xkern.autograd): the custom ops' contract, gradients only where
autograd needs them, odd tensors, and ops' errors surfacing unchanged through torch.
Values against the oracle for every config are in test_oracle.py."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import xkern  # noqa: E402
from xkern.autograd import XConv2dFunction, XLinearFunction  # noqa: E402
from xkern.autograd import custom_ops  # noqa: E402
from testing import BACKENDS, conv2d_oracle, dense_weight, linear_oracle  # noqa: E402

F64 = torch.float64
INDEX = torch.tensor([[0, 3], [1, 1], [2, 0]])  # (Cout=3, D=2) over Cin=4, one repeat


def conv_tensors(dtype=F64, batch=2, seed=0):
    """x (B, 4, 6, 5), weight (3, 2, 3, 2), bias (3,), grad_out for stride 1, padding 1."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, 6, 5, generator=g, dtype=dtype)
    weight = torch.randn(3, 2, 3, 2, generator=g, dtype=dtype)
    bias = torch.randn(3, generator=g, dtype=dtype)
    grad_out = torch.randn(batch, 3, 6, 6, generator=g, dtype=dtype)
    return x, weight, bias, grad_out


def linear_tensors(dtype=F64, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 4, generator=g, dtype=dtype), torch.randn(3, 2, generator=g, dtype=dtype),
            torch.randn(3, generator=g, dtype=dtype), torch.randn(batch, 3, generator=g, dtype=dtype))


def _numpy(*tensors):
    return [t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t for t in tensors]


def conv_expected(x, weight, bias, grad_out, geometry=(1, 1, 1)):
    """The oracle's float64 (out, grad_x, grad_weight, grad_bias) of an X-Conv over INDEX."""
    x, weight, bias, grad_out = _numpy(x, weight, bias, grad_out)
    return conv2d_oracle(x, weight, INDEX.numpy(), bias, *geometry, grad_out)


def linear_expected(x, weight, bias, grad_out):
    x, weight, bias, grad_out = _numpy(x, weight, bias, grad_out)
    return linear_oracle(x, weight, INDEX.numpy(), bias, grad_out)


def _assert_grads(tensors, expected):
    for name, t, want in zip(("x", "weight", "bias"), tensors, expected):
        if t.requires_grad:
            np.testing.assert_allclose(t.grad.numpy(), want, rtol=1e-10, atol=1e-10, err_msg=name)


# ---- the custom ops ----------------------------------------------------------------

def test_custom_ops_pass_opcheck():
    """Schema, fake (shape-only) implementation, autograd registration and AOT dispatch
    agree with the real implementation (torch.library.opcheck)."""
    x, weight, bias, grad_out = conv_tensors()
    conv = ([1, 1], [1, 1], [1, 1])
    xl, wl, bl, gl = linear_tensors()
    for leaf in (x, weight, bias, xl, wl, bl):
        leaf.requires_grad_()
    cases = [
        (custom_ops.xconv2d_fwd, (x, weight, INDEX, bias, *conv, "reference")),
        (custom_ops.xconv2d_fwd, (x.detach(), weight, INDEX, None, [2, 1], [0, 1], [1, 2], None)),
        (custom_ops.xconv2d_bwd, (grad_out, x.detach(), weight.detach(), INDEX, *conv, [True, False, True],
                                  None)),
        (custom_ops.xlinear_fwd, (xl, wl, INDEX, bl, None)),
        (custom_ops.xlinear_bwd, (gl, xl.detach(), wl.detach(), INDEX, [False, True, True], "reference")),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_autograd_registration",
                                                     "test_faketensor"))
    # Tracing with symbolic shapes (slow, so once): the fake shape arithmetic on SymInts.
    torch.library.opcheck(*cases[1], test_utils="test_aot_dispatch_dynamic")


def test_forward_ops_differentiate_without_the_function():
    """A graph holding the op but not the Function (what torch.export produces) still
    backpropagates, to the same gradients."""
    x, weight, bias, grad_out = conv_tensors()
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    custom_ops.xconv2d_fwd(*leaves[:2], INDEX, leaves[2], [1, 1], [1, 1], [1, 1], None).backward(grad_out)
    _assert_grads(leaves, conv_expected(x, weight, bias, grad_out)[1:])
    xl, wl, bl, gl = (t.clone().requires_grad_(i < 3) for i, t in enumerate(linear_tensors()))
    custom_ops.xlinear_fwd(xl, wl, INDEX, bl, None).backward(gl)
    _assert_grads((xl, wl, bl), linear_expected(xl, wl, bl, gl)[1:])


# ---- autograd ----------------------------------------------------------------------

REQUIRES = [(True, True, True), (True, False, False), (False, True, False), (False, False, True),
            (False, True, True)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("requires", REQUIRES, ids=lambda r: "-".join("xwb"[i] for i in range(3) if r[i]))
def test_only_needed_gradients_are_computed(backend, requires, monkeypatch):
    calls = []

    def spy(real):
        def backward(*args, grads, **kwargs):
            calls.append(tuple(grads))
            return real(*args, grads=grads, **kwargs)
        return backward

    monkeypatch.setattr(xkern.ops, "xconv2d_backward", spy(xkern.ops.xconv2d_backward))
    monkeypatch.setattr(xkern.ops, "xlinear_backward", spy(xkern.ops.xlinear_backward))
    names = tuple(name for name, r in zip(("input", "weight", "bias"), requires) if r)

    x, weight, bias, grad_out = conv_tensors()
    for t, r in zip((x, weight, bias), requires):
        t.requires_grad_(r)
    xkern.xconv2d(x, weight, INDEX, bias, 1, 1, 1, backend=backend).backward(grad_out)
    _assert_grads((x, weight, bias), conv_expected(x, weight, bias, grad_out)[1:])
    xl, wl, bl, gl = linear_tensors()
    for t, r in zip((xl, wl, bl), requires):
        t.requires_grad_(r)
    xkern.xlinear(xl, wl, INDEX, bl, backend=backend).backward(gl)
    _assert_grads((xl, wl, bl), linear_expected(xl, wl, bl, gl)[1:])
    assert calls == [names, names]


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_with_some_inputs_constant(backend):
    x, weight, bias, _ = conv_tensors(batch=1)
    x.requires_grad_()
    bias.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, b: xkern.xconv2d(x, weight, INDEX, b, (2, 1), 1, (1, 2), backend=backend), (x, bias))
    xl, wl, _, _ = linear_tensors()
    wl.requires_grad_()
    assert torch.autograd.gradcheck(lambda w: xkern.xlinear(xl, w, INDEX, None, backend=backend), (wl,))


def test_default_backend_for_cpu_tensors_is_cpu(monkeypatch):
    chosen = []
    real = xkern.ops.dispatch.get_backend
    monkeypatch.setattr(xkern.ops.dispatch, "get_backend", lambda name: chosen.append(name) or real(name))
    x, weight, bias, grad_out = conv_tensors()
    x.requires_grad_()
    xkern.xconv2d(x, weight, INDEX, bias, padding=1).backward(grad_out)
    xl, wl, bl, _ = linear_tensors()
    xkern.xlinear(xl, wl, INDEX, bl)
    assert set(chosen) == {"cpu"} and len(chosen) == 3


def test_api_returns_a_differentiable_tensor_and_takes_a_numpy_index():
    x, weight, bias, grad_out = conv_tensors()
    weight.requires_grad_()
    out = xkern.xconv2d(x, weight, INDEX.numpy(), bias, padding=1)
    assert isinstance(out, torch.Tensor) and out.dtype == F64
    assert type(out.grad_fn).__name__ == "XConv2dFunctionBackward"
    expected = conv_expected(x, weight, bias, grad_out)
    np.testing.assert_allclose(out.detach().numpy(), expected[0], rtol=1e-12, atol=1e-12)
    xl, wl, bl, _ = linear_tensors()
    out = XLinearFunction.apply(xl, wl.requires_grad_(), INDEX, bl, None)
    assert type(out.grad_fn).__name__ == "XLinearFunctionBackward"


def test_strided_views_and_expanded_grad_out():
    """Views with odd strides go to ops as zero-copy numpy views; ops copies them."""
    base_x, base_w, bias, _ = conv_tensors()
    x = base_x.transpose(2, 3).contiguous().transpose(2, 3).requires_grad_()   # same values, column-major
    weight = torch.stack([base_w, 0 * base_w], dim=-1)[..., 0].requires_grad_()  # a strided slice
    assert not x.is_contiguous() and not weight.is_contiguous()
    assert torch.equal(weight, base_w)
    out = xkern.xconv2d(x, weight, INDEX, bias, 1, 1, 1)
    out.sum().backward()  # grad_out arrives as an expanded (stride-0) tensor
    grad_out = np.ones(out.shape)
    expected = conv_expected(base_x, base_w, bias, grad_out)
    np.testing.assert_allclose(out.detach().numpy(), expected[0], rtol=1e-12, atol=1e-12)
    _assert_grads((x, weight, bias), expected[1:])


def test_empty_batch():
    x, weight, bias, grad_out = conv_tensors(batch=0)
    for t in (x, weight, bias):
        t.requires_grad_()
    out = xkern.xconv2d(x, weight, INDEX, bias, 1, 1, 1)
    assert out.shape == (0, 3, 6, 6)
    out.backward(grad_out)
    assert x.grad.shape == x.shape
    assert torch.equal(weight.grad, torch.zeros_like(weight))
    assert torch.equal(bias.grad, torch.zeros_like(bias))


def test_double_backward_is_refused_clearly():
    x, weight, bias, grad_out = conv_tensors()
    weight.requires_grad_()
    out = xkern.xconv2d(x, weight, INDEX, bias, 1, 1, 1)
    (grad_w,) = torch.autograd.grad(out, weight, grad_out, create_graph=True)
    with pytest.raises(RuntimeError, match="xconv2d_bwd"):
        grad_w.sum().backward()


# ---- bad input: ops' errors, unchanged -----------------------------------------------

def _conv_call(**over):
    x, weight, bias, _ = conv_tensors(dtype=torch.float32)
    args = dict(x=x, weight=weight.requires_grad_(), index=INDEX, bias=bias, stride=1, padding=1,
                dilation=1)
    args.update(over)
    return lambda: xkern.xconv2d(**args)


def _linear_call(**over):
    x, weight, bias, _ = linear_tensors(dtype=torch.float32)
    args = dict(x=x, weight=weight.requires_grad_(), index=INDEX, bias=bias)
    args.update(over)
    return lambda: xkern.xlinear(**args)


BAD = [
    # Half precision runs in float32 for a half-precision layer or under autocast (test_autocast.py).
    ("x-float16", _conv_call(x=torch.zeros(2, 4, 6, 5, dtype=torch.float16)), TypeError, "x has dtype"),
    ("x-bfloat16", _conv_call(x=torch.zeros(2, 4, 6, 5, dtype=torch.bfloat16)), TypeError, "x has dtype"),
    ("x-int", _conv_call(x=torch.zeros(2, 4, 6, 5, dtype=torch.int32)), TypeError, "x must be float32"),
    ("x-3d", _conv_call(x=torch.zeros(2, 4, 6)), ValueError, "x must be 4-D"),
    ("weight-float64", _conv_call(weight=torch.zeros(3, 2, 3, 2, dtype=F64)), TypeError, "weight"),
    ("weight-3d", _conv_call(weight=torch.zeros(3, 2, 3)), ValueError, "weight must be 4-D"),
    ("weight-numpy", _conv_call(weight=np.zeros((3, 2, 3, 2), np.float32)), TypeError,
     "weight must be a torch"),
    ("index-out-of-range", _conv_call(index=torch.tensor([[0, 4], [1, 1], [2, 0]])), ValueError,
     "index entries"),
    ("index-float", _conv_call(index=INDEX.float()), TypeError, "index must have an integer dtype"),
    ("index-shape", _conv_call(index=INDEX[:2]), ValueError, "index must have shape"),
    ("index-None", _conv_call(index=None), TypeError, "index"),
    ("bias-shape", _conv_call(bias=torch.zeros(4)), ValueError, "bias must have shape"),
    ("bias-list", _conv_call(bias=[0.0, 0.0, 0.0]), TypeError, "bias must be a torch"),
    ("stride-0", _conv_call(stride=0), ValueError, "stride"),
    ("padding-float", _conv_call(padding=1.5), TypeError, "padding"),
    ("output-empty", _conv_call(padding=0, dilation=4), ValueError, "output would be empty"),
    ("backend-unknown", _conv_call(backend="nope"), ValueError, "backend must be one of"),
    ("backend-int", _conv_call(backend=3), ValueError, "backend must be one of"),
    ("linear-x-3d", _linear_call(x=torch.zeros(3, 4, 1)), ValueError, "x must be 2-D"),
    ("linear-index-range", _linear_call(index=INDEX + 2), ValueError, "index entries"),
    ("linear-weight-float64", _linear_call(weight=torch.zeros(3, 2, dtype=F64)), TypeError, "weight"),
    # The backward entry points take arrays (no autograd): a tensor that requires grad is refused by name.
    ("backward-x-requires-grad", lambda: xkern.xconv2d_backward(
        torch.zeros(1, 3, 6, 6), torch.zeros(1, 4, 6, 5, requires_grad=True), torch.zeros(3, 2, 3, 2),
        INDEX, 1, 1, 1), TypeError, "x must be an array"),
]


@pytest.mark.parametrize("call, exc, text", [pytest.param(*case[1:], id=case[0]) for case in BAD])
def test_bad_input_raises_the_ops_error(call, exc, text):
    with pytest.raises(exc, match=text):
        call()


# ---- CUDA tensors --------------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on a GPU machine)")
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_cuda_tensors_go_to_the_cuda_backend(dtype, monkeypatch):
    """CUDA tensors, strided ones and an expanded grad_out included, give the oracle's
    values through the cuda backend, and come back as CUDA tensors."""
    chosen = []
    real = xkern.ops.dispatch.get_backend
    monkeypatch.setattr(xkern.ops.dispatch, "get_backend", lambda name: chosen.append(name) or real(name))
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == F64 else dict(rtol=2e-4, atol=2e-4)
    x, weight, bias, _ = conv_tensors(dtype=F64)
    xc = x.cuda().to(dtype).transpose(2, 3).contiguous().transpose(2, 3).requires_grad_()
    wc, bc = (t.cuda().to(dtype).requires_grad_() for t in (weight, bias))
    out = xkern.xconv2d(xc, wc, INDEX.cuda(), bc, 1, 1, 1)
    assert out.is_cuda and out.dtype == dtype
    out.sum().backward()
    expected = conv_expected(x, weight, bias, np.ones(out.shape))
    for what, got, want in zip(("out", "grad_x", "grad_weight", "grad_bias"),
                               _numpy(out, xc.grad, wc.grad, bc.grad), expected):
        np.testing.assert_allclose(got, want, err_msg=what, **tol)
    xl, wl, bl, gl = linear_tensors(dtype=F64)
    xlc, wlc = xl.cuda().to(dtype).requires_grad_(), wl.cuda().to(dtype).requires_grad_()
    out = xkern.xlinear(xlc, wlc, INDEX, bl.cuda().to(dtype))
    out.backward(gl.cuda().to(dtype))
    expected = linear_expected(xl, wl, bl, gl)
    for what, got, want in zip(("out", "grad_x", "grad_weight"), _numpy(out, xlc.grad, wlc.grad), expected):
        np.testing.assert_allclose(got, want, err_msg=what, **tol)
    assert set(chosen) == {"cuda"}


# ---- calls that need no autograd record run without the Function ------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_inference_calls_match_the_function_and_record_nothing(dtype, monkeypatch):
    """Under no_grad, or with no input requiring grad, xconv2d / xlinear run the ops' bodies
    without XConv2dFunction / XLinearFunction (whose apply costs as much as a small layer's
    kernel): the same bits as through the Function, no grad_fn; half precision as there."""
    x, weight, bias, _ = conv_tensors(dtype=dtype)
    lx, lw, lb, _ = linear_tensors(dtype=dtype)
    through = (XConv2dFunction.apply(x, weight, INDEX, bias, [1, 1], [1, 1], [1, 1], None),
               XLinearFunction.apply(lx, lw, INDEX, lb, None))
    applied = []
    for fn in (XConv2dFunction, XLinearFunction):
        monkeypatch.setattr(fn, "apply", lambda *args, fn=fn: applied.append(fn))
    for context in (torch.no_grad, torch.enable_grad):  # enable_grad: nothing requires grad
        with context():
            got = (xkern.xconv2d(x, weight, INDEX, bias, 1, 1, 1), xkern.xlinear(lx, lw, INDEX, lb))
        for g, t in zip(got, through):
            assert g.grad_fn is None and g.dtype == t.dtype == dtype
            assert torch.equal(g, t)
    assert applied == []
    weight.requires_grad_()
    xkern.xconv2d(x, weight, INDEX, bias, 1, 1, 1)
    assert applied == [XConv2dFunction]


def test_inference_follows_the_index_and_the_geometry():
    """Inference on CPU tensors reuses a prepared call per index tensor and geometry: an index
    changed in place through torch (copy_, load_state_dict), another index tensor, and
    other shapes of x and the parameters each give the oracle's result."""
    from xkern.autograd import functions

    x, weight, bias, _ = conv_tensors()
    index = INDEX.clone()
    other = torch.tensor([[3, 3], [0, 2], [1, 0]])
    with torch.no_grad():
        for idx, change in ((index, None), (index, lambda: index.copy_(other)), (other.clone(), None)):
            if change:
                change()
            for xs, w, b, geometry in ((x, weight, bias, (1, 1, 1)), (x[:1], weight, None, (2, 1, 1)),
                                       (x, weight[:, :, :1, :1], bias, (1, 0, 1))):
                out = xkern.xconv2d(xs, w, idx, b, *geometry)
                dense = torch.from_numpy(dense_weight(w.numpy(), idx.numpy(), xs.shape[1]))
                want = torch.nn.functional.conv2d(xs, dense, b, *geometry)
                torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    assert all(key[0] == id(entry[0]()) for key, entry in functions._prepared.items())
    n = len(functions._prepared)
    del index, idx
    assert len(functions._prepared) < n  # an index tensor's entries go with it


def test_inference_follows_the_parameters_memory():
    """Inference keeps a numpy view of the last weight and bias per prepared call: changes in
    place (through torch or .data), a new tensor, .data assigned or restrided, all reach the
    result."""
    x, weight, bias, _ = conv_tensors()
    weight, bias = torch.nn.Parameter(weight.clone()), torch.nn.Parameter(bias.clone())
    index = INDEX.clone()

    def check():
        with torch.no_grad():
            out = xkern.xconv2d(x, weight, index, bias, 1, 1, 1)
        dense = torch.from_numpy(dense_weight(weight.detach().numpy(), index.numpy(), x.shape[1]))
        torch.testing.assert_close(out, torch.nn.functional.conv2d(x, dense, bias.detach(), 1, 1),
                                   rtol=1e-12, atol=1e-12)

    check()
    with torch.no_grad():
        weight.mul_(2)
    check()
    weight.data.add_(1)
    bias.data.mul_(-1)
    check()
    weight.data = torch.randn_like(weight)
    bias.data = torch.randn_like(bias)
    check()
    weight.data = torch.randn(weight.shape[::-1], dtype=weight.dtype).permute(3, 2, 1, 0)  # not contiguous
    check()
    weight = torch.nn.Parameter(torch.randn_like(weight))
    check()


def test_inference_keeps_a_bounded_number_of_prepared_calls(monkeypatch):
    from xkern.autograd import functions

    monkeypatch.setattr(functions, "PREPARED_SIZE", 2)
    monkeypatch.setattr(functions, "_prepared", {})
    x, weight, bias, _ = conv_tensors()
    for batch in (1, 2, 1, 2):
        xkern.xconv2d(x[:batch], weight, INDEX, bias, 1, 1, 1)
    for batch in (3, 4, 5):
        xkern.xconv2d(torch.cat([x] * 3)[:batch], weight, INDEX, bias, 1, 1, 1)
        assert len(functions._prepared) <= 2
