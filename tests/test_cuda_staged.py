"""The staged CUDA kernels (every channel of a tile in shared memory) against the float64 oracle.

Forward and all three gradients of small X-Convs, random and block expanders (g = 4
and 8 outputs per index row), 1x1 and k x k, strides, padding and dilation, run in
Numba's CUDA simulator (on the GPU with XKERN_CUDA_REAL=1, as in test_cuda.py).  The
channel-chunked kernels are made to fail while these run, so every result comes from
the staged kernels (stride > 1 grad_input keeps its direct kernel).
"""
import os
import sys

REAL_GPU = os.environ.get("XKERN_CUDA_REAL", "") == "1"
if not REAL_GPU:
    if "numba" in sys.modules and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        raise RuntimeError("tests/test_cuda_staged.py needs numba's CUDA simulator, but numba was "
                           "imported before it could set NUMBA_ENABLE_CUDASIM=1")
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import importlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from numba import cuda  # noqa: E402

from testing import assert_close, conv2d_oracle, requires_torch  # noqa: E402
from xkern import ops  # noqa: E402
from xkern.backends.cuda import _interop, _plan, _staged  # noqa: E402
from xkern.graphs import expander  # noqa: E402

pytestmark = requires_torch

CASES = {
    # name: (B, Cin, H, W, Cout, D, (kh, kw), stride, padding, dilation, block, bias)
    "1x1": (2, 6, 5, 7, 5, 3, (1, 1), 1, 0, 1, 1, True),
    "1x1_tiles": (2, 5, 12, 12, 4, 2, (1, 1), 1, 0, 1, 1, False),       # 288 pixels: two tiles
    "1x1_block4": (2, 7, 4, 5, 8, 3, (1, 1), 1, 0, 1, 4, True),
    "1x1_block8": (1, 6, 3, 9, 16, 4, (1, 1), 1, 0, 1, 8, False),
    "1x1_stride2": (2, 4, 5, 6, 3, 2, (1, 1), 2, 0, 1, 1, True),        # the k x k kernels at 1x1
    "3x3": (2, 5, 6, 7, 4, 2, (3, 3), 1, 1, 1, 1, False),
    "3x3_wide": (1, 3, 5, 19, 6, 2, (3, 3), 1, 1, 1, 1, True),          # more than one tile
    "3x3_many_rows": (1, 5, 4, 4, 130, 2, (3, 3), 1, 1, 1, 1, False),   # more rows than row slots
    "3x3_block4": (2, 6, 5, 6, 8, 3, (3, 3), 1, 1, 1, 4, True),
    "3x3_block8": (1, 5, 6, 5, 16, 2, (3, 3), 1, 1, 1, 8, False),
    "3x3_stride2": (2, 4, 7, 6, 3, 2, (3, 3), 2, 1, 1, 1, True),
    "3x3_unpadded": (1, 4, 6, 7, 4, 3, (3, 3), 1, 0, 1, 1, False),
    "asym_dilated": (1, 4, 7, 9, 5, 3, (3, 2), (1, 2), (0, 1), (2, 1), 1, True),
    "5x5_pad2_dilated": (1, 3, 8, 7, 4, 2, (5, 5), 1, 2, (1, 2), 1, False),
}


def make_case(name, dtype, seed=0):
    b, cin, h, w, cout, d, (kh, kw), stride, padding, dilation, block, has_bias = CASES[name]
    rng = np.random.default_rng(seed)
    if block > 1:
        index = np.asarray(expander(cin, cout, d, method="random", seed=seed, block=block), dtype=np.int64)
    else:
        index = rng.integers(0, cin, (cout, d))
        index[0, -1] = index[0, 0]  # a repeated entry: its weights add up
    x = rng.standard_normal((b, cin, h, w)).astype(dtype)
    weight = rng.standard_normal((cout, d, kh, kw)).astype(dtype)
    bias = rng.standard_normal(cout).astype(dtype) if has_bias else None
    return x, weight, index, bias, stride, padding, dilation


@pytest.fixture
def staged_only(monkeypatch):
    """The channel-chunked kernels raise if called."""
    def refuse(*args, **kwargs):
        raise AssertionError("a channel-chunked kernel ran where a staged one should")
    # the package exports functions under these modules' names: reach the modules themselves
    module = lambda name: importlib.import_module(f"xkern.backends.cuda.{name}")  # noqa: E731
    monkeypatch.setattr(module("xconv2d_fwd"), "launch_gather", refuse)
    monkeypatch.setattr(module("xconv2d_bwd_input"), "launch_gather", refuse)
    monkeypatch.setattr(module("xconv2d_bwd_weight"), "partial_kernel", refuse)


def run_and_check(name, dtype):
    check(*make_case(name, dtype), dtype, name)


def check(x, weight, index, bias, stride, padding, dilation, dtype, name):
    xd, wd = cuda.to_device(x), cuda.to_device(weight)
    bd = None if bias is None else cuda.to_device(bias)
    out = ops.xconv2d(xd, wd, index, bd, stride, padding, dilation).copy_to_host()
    grad_out = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    grads = ops.xconv2d_backward(cuda.to_device(grad_out), xd, wd, index, stride, padding, dilation)
    want = conv2d_oracle(x, weight, index, bias, stride, padding, dilation, grad_out)
    assert_close(out, want[0], dtype, f"{name} out")
    for what, got, expected in zip(("grad_x", "grad_weight", "grad_bias"), grads, want[1:]):
        assert_close(got.copy_to_host(), expected, dtype, f"{name} {what}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_staged_conv_matches_oracle(name, staged_only):
    run_and_check(name, np.float64)


@pytest.mark.parametrize("name", ["1x1_block8", "3x3", "3x3_block4"])
def test_staged_conv_float32(name, staged_only):
    run_and_check(name, np.float32)


@pytest.mark.parametrize("name", ["1x1", "3x3_block4"])
def test_chunked_kernels_where_channels_do_not_fit(name, monkeypatch):
    """With less shared memory than one tile of every channel needs, the channel-chunked
    kernels run, and agree with the oracle too."""
    monkeypatch.setattr(_plan, "shared_limit", lambda: 16)
    x, weight, index, bias, stride, padding, dilation = make_case(name, np.float64)
    assert _staged.gather_plan(_plan.Geometry(*weight.shape[2:], 1, 1, 1, 1, padding, padding), x.shape,
                               (x.shape[0], weight.shape[0]) + x.shape[2:], 1, weight.shape[1],
                               weight.shape[1], False, 8, 1, 16) is None
    run_and_check(name, np.float64)


def test_outputs_per_row():
    index = np.asarray(expander(8, 16, 3, seed=0, block=8))
    assert _plan.outputs_per_row(index) == 8
    assert _plan.window_outputs(8) == 4  # the k x k kernels keep 4 of them in registers
    index[12:] = (index[12] + 1) % 8     # the second block of 8 splits into two of 4
    assert _plan.outputs_per_row(index) == 4
    index[13] = (index[12] + 1) % 8
    assert _plan.outputs_per_row(index) == 1


def test_reverse_rows_longest_first():
    """grad_input hands input channels to row slots in order of decreasing in-degree."""
    from xkern.ops.adjacency import reverse_adjacency
    index = np.array([[0, 1], [1, 2], [1, 3], [2, 1]])
    rev = reverse_adjacency(index, 4)
    offs, wrow, seg, rows = (t.copy_to_host() for t in
                             _plan.staged_reverse_tables(index, rev, 4, 10, _plan.graph_key(index)))
    counts = np.diff(seg)
    assert list(counts[rows]) == sorted(counts, reverse=True)
    assert rows[0] == 1  # read by all four outputs
    np.testing.assert_array_equal(offs, wrow // 2 * 10)


@pytest.mark.parametrize("name, split_rows, split_pixels", [("1x1", True, False), ("1x1_tiles", True, True),
                                                            ("3x3", False, True), ("3x3_many_rows", True, False)])
def test_rows_split_over_blocks(name, split_rows, split_pixels, staged_only, monkeypatch):
    """On a GPU with many SMs the planners split rows over blocks (forward, grad_input) and
    pixels over slices (grad_weight); the results do not change."""
    monkeypatch.setattr(_interop, "sm_count", lambda: 64)
    x, weight, index, bias, stride, padding, dilation = make_case(name, np.float64)
    geom = _plan.Geometry(*weight.shape[2:], 1, 1, 1, 1, padding, padding)
    out_shape = (x.shape[0], weight.shape[0]) + x.shape[2:]
    g = _plan.outputs_per_row(index)
    fwd = _staged.gather_plan(geom, x.shape, out_shape, g, weight.shape[1], weight.shape[1], bias is not None,
                              8, 64, _plan.shared_limit())
    wgt = _staged.wgrad_plan(geom, x.shape, out_shape, g, weight.shape[1], 8, 64, _plan.shared_limit())
    assert (fwd.grid[-1] > 1) == split_rows and (wgt.slices > 1) == split_pixels
    run_and_check(name, np.float64)


@st.composite
def configs(draw):
    """Small random X-Convs whose output is not empty: random or block expanders."""
    block = draw(st.sampled_from([1, 4, 8]))
    cin = draw(st.integers(1, 6))
    cout = block * draw(st.integers(1 if block == 1 else 2, 3))
    degree = draw(st.integers(1, cin))
    kh, kw = draw(st.sampled_from([(1, 1), (3, 3), (1, 3), (2, 2)]))
    stride = draw(st.sampled_from([(1, 1), (2, 1), (2, 2)]))
    dilation = draw(st.sampled_from([(1, 1), (2, 1)]))
    padding = (draw(st.integers(0, kh)), draw(st.integers(0, kw)))
    h = draw(st.integers(max(1, (kh - 1) * dilation[0] + 1 - 2 * padding[0]), 7))
    w = draw(st.integers(max(1, (kw - 1) * dilation[1] + 1 - 2 * padding[1]), 7))
    seed = draw(st.integers(0, 2 ** 16))
    return draw(st.integers(1, 2)), cin, h, w, cout, degree, (kh, kw), stride, padding, dilation, block, seed


@settings(max_examples=12, suppress_health_check=[HealthCheck.function_scoped_fixture])  # it only patches
@given(cfg=configs())
def test_random_configs_match_oracle(cfg, staged_only):
    b, cin, h, w, cout, degree, (kh, kw), stride, padding, dilation, block, seed = cfg
    rng = np.random.default_rng(seed)
    if block > 1:
        index = np.repeat(rng.integers(0, cin, (cout // block, degree)), block, axis=0)
    else:
        index = rng.integers(0, cin, (cout, degree))
    x = rng.standard_normal((b, cin, h, w))
    weight = rng.standard_normal((cout, degree, kh, kw))
    bias = rng.standard_normal(cout) if seed % 2 else None
    check(x, weight, index, bias, stride, padding, dilation, np.float64, repr(cfg))
