"""CUDA backend against the torch float64 oracle, on tiny shapes.

Without a GPU the kernels run in Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1,
set here before numba is imported).  With XKERN_CUDA_REAL=1 (conftest.py sets it
when torch sees a GPU) they run on the GPU, and torch CUDA tensors and CuPy arrays
are checked as well.
"""
import os
import sys

REAL_GPU = os.environ.get("XKERN_CUDA_REAL", "") == "1"
if not REAL_GPU:
    if "numba" in sys.modules and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        raise RuntimeError("tests/test_cuda.py needs numba's CUDA simulator, but numba was imported "
                           "before it could set NUMBA_ENABLE_CUDASIM=1; run it in its own process "
                           "or set XKERN_CUDA_REAL=1 on a GPU machine")
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from numba import cuda  # noqa: E402

from xkern import ops  # noqa: E402
from xkern.backends.cuda import _interop, _plan  # noqa: E402

KINDS = ["numba"]
if REAL_GPU:
    if torch.cuda.is_available():
        KINDS.append("torch")
    try:
        import cupy  # noqa: F401
        KINDS.append("cupy")
    except ImportError:
        pass


def to_kind(a, kind):
    a = np.ascontiguousarray(a)
    if kind == "numba":
        return cuda.to_device(a)
    if kind == "torch":
        return torch.from_numpy(a).cuda()
    import cupy
    return cupy.asarray(a)


def to_host(a):
    if isinstance(a, torch.Tensor):
        return a.cpu().numpy()
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return a.copy_to_host()


def check_kind(result, kind):
    expected = {"numba": "numba", "torch": "torch", "cupy": "cupy"}[kind]
    assert type(result).__module__.startswith(expected), type(result)


def dense_weight(weight, index, n_in):
    w = torch.zeros(weight.shape[0], n_in, *weight.shape[2:], dtype=torch.float64)
    for v in range(weight.shape[0]):
        for i in range(weight.shape[1]):
            w[v, index[v, i]] += torch.from_numpy(weight[v, i])
    return w


def conv_oracle(x, weight, index, bias, grad_out, stride, padding, dilation):
    """out, grad_x, grad_weight, grad_bias from torch conv2d on the dense weight (float64).

    Without a bias the oracle still differentiates through a zero one: xconv2d_backward
    returns grad_bias whenever it is asked for.
    """
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(weight, dtype=torch.float64, requires_grad=True)
    bt = torch.tensor(bias if bias is not None else np.zeros(weight.shape[0]), dtype=torch.float64,
                      requires_grad=True)
    dense = torch.zeros(weight.shape[0], x.shape[1], *weight.shape[2:], dtype=torch.float64)
    rows = torch.arange(weight.shape[0])[:, None].expand(index.shape)
    dense = dense.index_put((rows, torch.from_numpy(index)), wt, accumulate=True)
    out = F.conv2d(xt, dense, bt, stride, padding, dilation)
    out.backward(torch.tensor(grad_out, dtype=torch.float64))
    out = out.detach().numpy()
    if bias is None:
        out = out - 0.0  # the zero bias added nothing
    return out, xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


def linear_oracle(x, weight, index, bias, grad_out):
    y = conv_oracle(x[:, :, None, None], weight[:, :, None, None], index, bias,
                    grad_out[:, :, None, None], 1, 0, 1)
    return (y[0][:, :, 0, 0], y[1][:, :, 0, 0], y[2][:, :, 0, 0], y[3])


def tolerance(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)


CONV_CASES = {
    # name: (B, Cin, H, W, Cout, D, kh, kw, stride, padding, dilation, bias)
    "1x1": (2, 6, 3, 5, 4, 3, 1, 1, 1, 0, 1, True),
    "3x3_pad": (3, 5, 6, 7, 4, 2, 3, 3, 1, 1, 1, False),
    "3x3_stride2": (2, 4, 7, 6, 3, 2, 3, 3, 2, 1, 1, True),
    "asym_dilated": (1, 4, 7, 9, 5, 3, 3, 2, (1, 2), (0, 1), (2, 1), True),
    "1x1_stride2_pad": (2, 3, 5, 5, 2, 2, 1, 1, 2, 1, 1, False),
}


def make_conv(case, dtype, seed=0):
    b, cin, h, w, cout, d, kh, kw, stride, padding, dilation, has_bias = CONV_CASES[case]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, cin, h, w)).astype(dtype)
    weight = rng.standard_normal((cout, d, kh, kw)).astype(dtype)
    index = rng.integers(0, cin, (cout, d))
    index[0, :] = index[0, 0]  # repeated entries add up
    bias = rng.standard_normal(cout).astype(dtype) if has_bias else None
    return x, weight, index, bias, stride, padding, dilation


def run_conv(x, weight, index, bias, stride, padding, dilation, kind, grad_out):
    dev = lambda a: None if a is None else to_kind(a, kind)  # noqa: E731
    xd, wd, bd = dev(x), dev(weight), dev(bias)
    out = ops.xconv2d(xd, wd, index, bd, stride, padding, dilation)
    check_kind(out, kind)
    grads = ops.xconv2d_backward(dev(grad_out), xd, wd, index, stride, padding, dilation)
    return out, grads


# Every case in float64; float32 (the same kernels with another element type) on two.
@pytest.mark.parametrize("case, dtype", [(case, np.float64) for case in sorted(CONV_CASES)]
                         + [("3x3_pad", np.float32), ("3x3_stride2", np.float32)])
def test_conv_matches_oracle(case, dtype):
    x, weight, index, bias, stride, padding, dilation = make_conv(case, dtype)
    shape = F.conv2d(torch.zeros(x.shape), torch.zeros(weight.shape[0], x.shape[1], *weight.shape[2:]),
                     None, stride, padding, dilation).shape
    grad_out = np.random.default_rng(1).standard_normal(tuple(shape)).astype(dtype)
    want = conv_oracle(x, weight, index, bias, grad_out, stride, padding, dilation)
    for kind in KINDS:
        out, grads = run_conv(x, weight, index, bias, stride, padding, dilation, kind, grad_out)
        np.testing.assert_allclose(to_host(out), want[0], **tolerance(dtype))
        for got, expected in zip(grads, want[1:]):
            check_kind(got, kind)
            assert to_host(got).dtype == dtype
            np.testing.assert_allclose(to_host(got), expected, **tolerance(dtype))


def test_conv_channel_chunks(monkeypatch):
    """Inputs that do not fit the shared tile at once are staged in chunks (and summed in order)."""
    monkeypatch.setattr(_plan, "SMEM_BYTES", 4 * 8 * 8 * 8)  # 4 channels of one 8x8 float64 halo
    monkeypatch.setattr(_plan, "shared_limit", lambda: 4 * 8 * 8 * 8)  # and no staged tile fits
    _plan.plan_gather.cache_clear()
    try:
        rng = np.random.default_rng(3)
        x = rng.standard_normal((2, 11, 5, 6))
        weight = rng.standard_normal((6, 5, 3, 3))
        index = rng.integers(0, 11, (6, 5))
        bias = rng.standard_normal(6)
        grad_out = rng.standard_normal((2, 6, 5, 6))
        tile, _ = _plan.plan_gather(_plan.Geometry(3, 3, 1, 1, 1, 1, 1, 1), 11, (5, 6), 2, 6, 5, 8, 4)
        assert tile.ch < 11
        want = conv_oracle(x, weight, index, bias, grad_out, 1, 1, 1)
        out, grads = run_conv(x, weight, index, bias, 1, 1, 1, "numba", grad_out)
        np.testing.assert_allclose(to_host(out), want[0], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(to_host(grads[0]), want[1], rtol=1e-10, atol=1e-10)
    finally:
        _plan.plan_gather.cache_clear()


@pytest.mark.parametrize("shape", [(3, 3, 4, 33, 4), (1, 2, 3, 3, 40)], ids=["tiles", "row_groups"])
def test_conv_several_tiles_and_row_groups(shape):
    """An image wider than one tile; output channels split over blocks."""
    b, cin, h, w, cout = shape
    rng = np.random.default_rng(4)
    x = rng.standard_normal((b, cin, h, w))
    weight = rng.standard_normal((cout, 2, 3, 3))
    index = rng.integers(0, cin, (cout, 2))
    grad_out = rng.standard_normal((b, cout, h, w))
    tile, groups = _plan.plan_gather(_plan.Geometry(3, 3, 1, 1, 1, 1, 1, 1), cin, (h, w), b, cout, 2, 8,
                                     _interop.sm_count())
    assert groups > 1 or w > tile.tw
    want = conv_oracle(x, weight, index, None, grad_out, 1, 1, 1)
    xd, wd = cuda.to_device(x), cuda.to_device(weight)
    np.testing.assert_allclose(to_host(ops.xconv2d(xd, wd, index, None, 1, 1)), want[0],
                               rtol=1e-10, atol=1e-10)
    grad_x = ops.xconv2d_backward(cuda.to_device(grad_out), xd, wd, index, 1, 1, grads=("input",))[0]
    np.testing.assert_allclose(to_host(grad_x), want[1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float64])
def test_linear_matches_oracle(dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((37, 9)).astype(dtype)
    weight = rng.standard_normal((7, 4)).astype(dtype)
    index = rng.integers(0, 9, (7, 4))
    index[2, 1] = index[2, 0]
    bias = rng.standard_normal(7).astype(dtype)
    grad_out = rng.standard_normal((37, 7)).astype(dtype)
    want = linear_oracle(x, weight, index, bias, grad_out)
    for kind in KINDS:
        xd, wd = to_kind(x, kind), to_kind(weight, kind)
        out = ops.xlinear(xd, wd, index, to_kind(bias, kind))
        check_kind(out, kind)
        np.testing.assert_allclose(to_host(out), want[0], **tolerance(dtype))
        grads = ops.xlinear_backward(to_kind(grad_out, kind), xd, wd, index)
        for got, expected in zip(grads, want[1:]):
            check_kind(got, kind)
            np.testing.assert_allclose(to_host(got), expected, **tolerance(dtype))


def test_backward_is_bitwise_reproducible():
    x, weight, index, bias, stride, padding, dilation = make_conv("3x3_pad", np.float32, seed=7)
    grad_out = np.random.default_rng(8).standard_normal((3, 4, 6, 7)).astype(np.float32)
    first = run_conv(x, weight, index, bias, stride, padding, dilation, "numba", grad_out)[1]
    second = run_conv(x, weight, index, bias, stride, padding, dilation, "numba", grad_out)[1]
    for a, b in zip(first, second):
        assert np.array_equal(to_host(a), to_host(b))


def test_empty_batch_gives_zero_weight_and_bias_grads():
    rng = np.random.default_rng(9)
    x = np.zeros((0, 3, 4, 4))
    weight = rng.standard_normal((2, 2, 3, 3))
    index = rng.integers(0, 3, (2, 2))
    out, (gx, gw, gb) = run_conv(x, weight, index, np.ones(2), 1, 1, 1, "numba", np.zeros((0, 2, 4, 4)))
    assert to_host(out).shape == (0, 2, 4, 4) and to_host(gx).shape == (0, 3, 4, 4)
    assert np.array_equal(to_host(gw), np.zeros((2, 2, 3, 3)))
    assert np.array_equal(to_host(gb), np.zeros(2))


def test_index_on_device_and_backend_picked_by_input():
    x, weight, index, bias, stride, padding, dilation = make_conv("1x1", np.float64)
    out = ops.xconv2d(cuda.to_device(x), cuda.to_device(weight), cuda.to_device(index),
                      cuda.to_device(bias), stride, padding, dilation, backend="cuda")
    want = ops.xconv2d(x, weight, index, bias, stride, padding, dilation, backend="reference")
    np.testing.assert_allclose(to_host(out), want, rtol=1e-12, atol=1e-12)


def test_host_argument_with_device_x_is_rejected():
    x, weight, index, bias, stride, padding, dilation = make_conv("1x1", np.float64)
    with pytest.raises(TypeError, match="weight must be a CUDA array like x"):
        ops.xconv2d(cuda.to_device(x), weight, index)
    with pytest.raises(TypeError, match="bias must be a CUDA array like x"):
        ops.xconv2d(cuda.to_device(x), cuda.to_device(weight), index, bias)


def test_non_contiguous_device_array_is_rejected():
    x, weight, index, *_ = make_conv("1x1", np.float64)
    strided = cuda.to_device(np.zeros((x.shape[0], x.shape[1], x.shape[2], 2 * x.shape[3])))[:, :, :, :x.shape[3]]
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        ops.xconv2d(strided, cuda.to_device(weight), index)


def test_host_x_with_cuda_backend_is_rejected():
    x, weight, index, *_ = make_conv("1x1", np.float64)
    with pytest.raises(ValueError, match="backend='cuda' cannot run on x"):
        ops.xconv2d(x, weight, index, backend="cuda")


def test_device_name_and_require():
    from xkern.backends import cuda as backend
    backend.require()
    assert backend.device_name()


def test_raw_kernels_reject_arrays_that_do_not_fit():
    """The backend functions (no validation in front of them here) raise ValueError naming
    the argument where the arrays would make a kernel read or write out of bounds on the device."""
    from xkern.backends import cuda as backend
    from xkern.ops.adjacency import reverse_adjacency
    x, weight, index, bias, *_ = make_conv("3x3_pad", np.float64)  # stride 1, padding 1: out is x's size
    n_in, n_out = x.shape[1], weight.shape[0]
    grad_out = np.random.default_rng(3).standard_normal((x.shape[0], n_out) + x.shape[2:])
    geometry = ((1, 1), (1, 1), (1, 1))
    rev = reverse_adjacency(index, n_in)
    dev = cuda.to_device

    def fwd(x=x, weight=weight, index=index, bias=bias, out=np.empty_like(grad_out), geometry=geometry):
        backend.xconv2d_fwd(dev(x), dev(weight), index, None if bias is None else dev(bias), dev(out), *geometry)

    def gin(index=index, rev=rev, grad_x=np.empty_like(x), geometry=geometry):
        backend.xconv2d_bwd_input(dev(grad_out), dev(weight), index, rev, dev(grad_x), *geometry)

    def gwt(index=index, grad_weight=np.empty_like(weight), x=x):
        backend.xconv2d_bwd_weight(dev(grad_out), dev(x), index, dev(grad_weight), *geometry)

    fwd(), gin(), gwt(), gin(geometry=((2, 2), (1, 1), (1, 1)), grad_x=np.empty((x.shape[0], n_in, 11, 13)))
    too_big = index.copy()
    too_big[-1, -1] = n_in
    negative = index.copy()
    negative[0, 1] = -1
    other = index.copy()  # another graph: its reverse adjacency does not fit index
    other[0, 1] = (index[0, 1] + 1) % n_in
    lin_x, lin_w, lin_g = x[:, :, 0, 0].copy(), weight[:, :, 0, 0].copy(), grad_out[:, :, 0, 0].copy()
    cases = [
        (lambda: fwd(index=np.ascontiguousarray(index[1:])), "index has shape"),
        (lambda: fwd(index=too_big), rf"index entries must lie in \[0, {n_in}\)"),
        (lambda: fwd(index=negative), "entry 1 is -1"),
        (lambda: fwd(index=index.astype(np.int32)), "index must be a 2-D int64 numpy array"),
        (lambda: fwd(out=grad_out[:, 1:].copy()), "out has shape"),
        (lambda: fwd(out=grad_out[:1].copy()), "out has shape"),
        (lambda: fwd(bias=np.zeros(n_out + 1)), "bias has shape"),
        (lambda: fwd(weight=weight.astype(np.float32)), r"weight has dtype float32, expected float64 \(x.s\)"),
        (lambda: fwd(geometry=((0, 1), (1, 1), (1, 1))), "stride must be >= 1"),
        (lambda: fwd(geometry=((1, 1), (-1, 1), (1, 1))), "padding must be >= 0"),
        (lambda: fwd(geometry=((1, 1), (1,), (1, 1))), "padding must be a pair of ints"),
        (lambda: fwd(geometry=((1, 1), (0, 0), (9, 1))), "does not fit x's 6x7"),
        (lambda: gin(index=too_big), "index entries"),
        (lambda: gin(grad_x=np.empty(x.shape, np.float32)), r"grad_x has dtype float32, expected float64 \(grad_out.s\)"),
        (lambda: gin(rev=reverse_adjacency(other, n_in)), "rev is not the reverse adjacency"),
        (lambda: gin(rev=rev._replace(ptr=rev.ptr[:-1])), f"rev must hold ptr of length {n_in + 1}"),
        (lambda: gin(grad_x=np.empty(x.shape[:2] + (x.shape[2] - 1, x.shape[3]))), "grad_out has shape"),
        (lambda: gin(grad_x=np.empty((x.shape[0], n_in + 1) + x.shape[2:])), "rev must hold ptr"),
        (lambda: gwt(index=too_big), "index entries"),
        (lambda: gwt(x=x[:, :2].copy()), r"index entries must lie in \[0, 2\)"),
        (lambda: gwt(grad_weight=np.empty((n_out + 1,) + weight.shape[1:])), "index has shape"),
        (lambda: backend.xconv2d_bwd_bias(dev(grad_out), dev(np.empty(n_out - 1))), "grad_bias has shape"),
        (lambda: backend.xlinear_fwd(dev(lin_x), dev(lin_w), index, None, dev(np.empty((x.shape[0], n_out + 1)))),
         "out has shape"),
        (lambda: backend.xlinear_fwd(dev(lin_x), dev(lin_w), too_big, None, dev(lin_g)), "index entries"),
        (lambda: backend.xlinear_bwd_input(dev(lin_g), dev(lin_w), index, rev, dev(np.empty((x.shape[0], n_in - 1)))),
         "rev must hold ptr|index entries"),
        (lambda: backend.xlinear_bwd_weight(dev(lin_g), dev(lin_x), index, dev(np.empty((n_out, 1)))),
         "index has shape"),
        (lambda: backend.xlinear_bwd_bias(dev(lin_g), dev(np.empty(n_out + 2))), "grad_bias has shape"),
    ]
    for call, message in cases:
        # index and rev are checked when a graph's tables are built; a graph whose tables
        # are cached does not read rev again
        _plan._tables.clear()
        with pytest.raises(ValueError, match=message):
            call()
    fwd(), gin(), gwt()  # and the good arrays still work afterwards
