"""xkern's C++ inference engine (src/engine/): against torch eval mode and the numpy
executor (its oracle), through Python (xkern.runtime.load), the C API (ctypes) and a C
program built with `python -m xkern config`.  The acceptance bar is a max abs difference
of 1e-4 from torch's output (float32)."""
import ctypes
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import xkern
from xkern import models, runtime
from xkern.runtime import Graph, Node, engine as xk_engine

from edge_models import PAPER_MODELS, Functional, paper_model, randomize_batch_norms, zoo
from testing import run_python

pytestmark = pytest.mark.skipif(not xk_engine.available(), reason="the C++ engine is not built")

TOL = 1e-4


def torch_logits(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def inputs(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def side(name):
    return 64 if "alexnet" in name else 32  # AlexNet's 11x11 stride-4 stem needs more than 32


@pytest.mark.parametrize("name", models.names())
def test_every_model_matches_torch(name, tmp_path):
    torch.manual_seed(0)
    model = randomize_batch_norms(models.create(name, num_classes=10, seed=0), 0).eval()
    x = inputs((1, 3, side(name), side(name)))
    runtime.save(model, tmp_path / "m.xk", x.shape)
    net = runtime.load(tmp_path / "m.xk")
    assert isinstance(net, runtime.Engine)
    expected = torch_logits(model, x)
    assert np.abs(net.predict(x) - expected).max() <= TOL
    assert np.abs(expected).max() > 1e-2, "logits too small for the comparison to mean anything"


@pytest.mark.parametrize("which", ["zoo", "functional"] + [m[0] for m in PAPER_MODELS])
def test_engine_matches_the_numpy_executor(which, tmp_path):
    if which == "zoo":
        model, shape = zoo(), (3, 4, 13, 13)
    elif which == "functional":
        model, shape = Functional().eval(), (2, 3, 10, 9)
    else:
        name, shape, classes = next(m for m in PAPER_MODELS if m[0] == which)
        model = paper_model(name, classes)
    x = inputs(shape)
    runtime.save(model, tmp_path / "m.xk", shape)
    got = runtime.load(tmp_path / "m.xk", backend="engine").predict(x)
    oracle = runtime.load(tmp_path / "m.xk", backend="reference").predict(x)
    np.testing.assert_allclose(got, oracle, rtol=0, atol=TOL)
    np.testing.assert_allclose(got, torch_logits(model, x), rtol=0, atol=TOL)


def _conv_graph(rng, op, cin, cout, k, stride, padding, dilation, groups, degree, residual, act):
    """A one-conv network (plus an optional residual add and activation) and its input shape."""
    kh, kw = k
    if op == "conv2d":
        arrays = {"weight": rng.standard_normal((cout, cin // groups, kh, kw)).astype(np.float32)}
        attrs = dict(stride=list(stride), padding=list(padding), dilation=list(dilation), groups=groups)
    else:
        index = np.stack([rng.choice(cin, degree, replace=False) for _ in range(cout)]).astype(np.int64)
        arrays = {"weight": rng.standard_normal((cout, degree, kh, kw)).astype(np.float32), "index": index}
        attrs = dict(stride=list(stride), padding=list(padding), dilation=list(dilation), in_channels=cin)
    if rng.random() < 0.7:
        arrays["bias"] = rng.standard_normal(cout).astype(np.float32)
    nodes = [Node("conv", op, ["x"], attrs, arrays)]
    out = "conv"
    if residual:
        nodes.append(Node("add", "add", ["conv", "r"], {}, {}))
        out = "add"
    if act:
        nodes.append(Node("act", act, [out], {}, {}))
        out = "act"
    return nodes, out


def _random_conv(seed):
    """A random one-conv network (Graph) and its input shape, or None when the sizes leave no output."""
    rng = np.random.default_rng(seed)
    op = ["conv2d", "xconv2d"][seed % 2]
    cin = int(rng.choice([1, 3, 4, 8, 12, 16]))
    groups = int(rng.choice([g for g in (1, 2, 4, cin) if cin % g == 0])) if op == "conv2d" else 1
    cout = groups * int(rng.integers(1, 6))
    if groups == cin and seed % 3 == 0:
        cout = cin  # depthwise
    k = (3, int(rng.integers(1, 4))) if seed % 4 == 0 else (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
    stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4))) if seed % 3 else (1, 1)
    padding = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
    dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3))) if seed % 5 else (1, 1)
    if seed % 7 == 0:
        k, stride, padding, dilation = (1, 1), (1, 1), (0, 0), (1, 1)
    h, w = int(rng.integers(6, 40)), int(rng.integers(6, 40))
    ho = (h + 2 * padding[0] - dilation[0] * (k[0] - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (k[1] - 1) - 1) // stride[1] + 1
    if ho < 1 or wo < 1:
        return None
    residual = stride == (1, 1) and ho == h and wo == w and cout == cin and rng.random() < 0.6
    act = rng.choice([None, "relu", "relu6"])
    nodes, out = _conv_graph(rng, op, cin, cout, k, stride, padding, dilation, groups,
                             int(rng.integers(1, cin + 1)), residual, act)
    if residual:  # the residual: a relu of x, so it is a network value the conv may write over
        nodes.insert(0, Node("r", "relu", ["x"], {}, {}))
    return Graph("x", (None, cin, h, w), nodes, out)


@pytest.mark.parametrize("chunk", range(10))
def test_random_convs_match_the_numpy_executor(chunk, tmp_path):
    """Convs of every family (vec, shared-4, row tiles, depthwise, direct 1x1) at odd sizes,
    strides, paddings and dilations, fused with a residual add and an activation or not."""
    for seed in range(chunk * 50, chunk * 50 + 50):
        graph = _random_conv(seed)
        if graph is None:
            continue
        runtime.format.write(graph, tmp_path / "c.xk")
        x = inputs((1 + seed % 2,) + graph.input_shape[1:], seed)
        got = runtime.load(tmp_path / "c.xk", backend="engine").predict(x)
        oracle = runtime.load(tmp_path / "c.xk", backend="reference").predict(x)
        scale = max(1.0, float(np.abs(oracle).max()))
        np.testing.assert_allclose(got, oracle, rtol=0, atol=TOL * scale, err_msg=f"seed {seed}: {graph.summary()}")


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("width", [1, 6, 8, 9, 19, 28])
def test_row_tiles_at_every_height(width, stride, tmp_path):
    """The row-tile kernel (X-convs with three kernel rows, stride 1 or 2) takes its rows per
    tile from the output height: every count from 1 to 8 and blocks of two sizes, in strips of
    8 or 16 columns, at widths under, at and over a strip (the last strip narrower, of 8 columns
    or fewer after 16-column ones), inputs of both parities at stride 2, with a fused residual
    (stride 1) and activation.  At stride 2 the input has more channels x taps than the
    columns take (a column per input channel and tap, up to 2048)."""
    rng = np.random.default_rng(width + 100 * stride)
    wide = set()
    cin = 6 if stride == 1 else 700
    for ho in range(1, 21):
        kw, pw = [(3, 1), (2, 0), (1, 0)][ho % 3]
        wo = width
        residual = stride == 1 and kw == 3 and ho % 2 == 0
        nodes, out = _conv_graph(rng, "xconv2d", cin, 6, (3, kw), (stride, stride), (1, pw), (1, 1), 1, 4, residual,
                                 ["relu", None, "relu6"][ho % 3])
        if residual:
            nodes.insert(0, Node("r", "relu", ["x"], {}, {}))
        # the input size giving (ho, wo); at stride 2 one more row or column (which no output reads) for odd ho
        extra = (stride - 1) * (ho % 2)
        h, w = stride * (ho - 1) + 3 - 2 + extra, stride * (wo - 1) + kw - 2 * pw + extra
        graph = Graph("x", (None, cin, h, w), nodes, out)
        runtime.format.write(graph, tmp_path / "c.xk")
        x = inputs((2,) + graph.input_shape[1:], ho)
        net = runtime.load(tmp_path / "c.xk", backend="engine")
        stats = net._engine.stats([2, *graph.input_shape[1:]])
        assert stats["conv_rows3"] == 1
        wide.add(stats["conv_rows3_16"])
        got = net.predict(x)
        oracle = runtime.load(tmp_path / "c.xk", backend="reference").predict(x)
        assert got.shape == (2, 6, ho, wo)
        np.testing.assert_allclose(got, oracle, rtol=0, atol=TOL * max(1.0, float(np.abs(oracle).max())),
                                   err_msg=f"{ho}x{wo}: {graph.summary()}")
    assert wide == ({0} if width <= 8 else {0, 1}), "both strip widths at widths over 8"


def test_shared4_tiles_within_and_across_rows(tmp_path):
    """Shared-4 convs (outputs in blocks of four with one index row) on maps with padding
    columns tile within rows where rows fill their tiles, else across rows (a 7-column row
    fills 7 of 24): both tilings, at widths under, at and over a tile, with a fused residual
    and activation, match the numpy executor."""
    rng = np.random.default_rng(7)
    tilings = set()
    for width in (3, 7, 13, 24, 25, 47, 48):
        for act in (None, "relu6"):
            nodes, out = _conv_graph(rng, "conv2d", 8, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1, 8, True, act)
            nodes.insert(0, Node("r", "relu", ["x"], {}, {}))
            graph = Graph("x", (None, 8, 5 + width % 4, width), nodes, out)
            runtime.format.write(graph, tmp_path / "c.xk")
            net = runtime.load(tmp_path / "c.xk", backend="engine")
            stats = net._engine.stats([1, *graph.input_shape[1:]])
            assert stats["conv_shared4"] == 1
            tilings.add(stats["conv_shared4_rows"])
            x = inputs((1,) + graph.input_shape[1:], width)
            oracle = runtime.load(tmp_path / "c.xk", backend="reference").predict(x)
            np.testing.assert_allclose(net.predict(x), oracle, rtol=0, atol=TOL * max(1.0, float(np.abs(oracle).max())),
                                       err_msg=f"width {width}: {graph.summary()}")
    assert tilings == {0, 1}, "tiles within rows and across rows"


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", [(1, 1), (0, 0), (1, 0), (2, 1), (2, 2)])
def test_depthwise_3x3_direct(stride, padding, tmp_path):
    """The 3x3 depthwise kernels read their input unpadded (masked reads at the edges): maps
    down to 1x1, odd sizes, rows narrower than one read and wider, bands of rows cut short
    or reaching past the top and bottom, 8-column blocks cut short, several plain blocks
    between masked ones."""
    rng = np.random.default_rng(padding[0] * 3 + padding[1])
    for h, w in ((1, 1), (2, 3), (3, 2), (5, 7), (7, 7), (9, 17), (14, 14), (16, 16), (23, 40), (14, 50), (30, 70)):
        if h + 2 * padding[0] < 3 or w + 2 * padding[1] < 3:
            continue
        ho, wo = (h + 2 * padding[0] - 3) // stride + 1, (w + 2 * padding[1] - 3) // stride + 1
        residual = (ho, wo) == (h, w)
        nodes, out = _conv_graph(rng, "conv2d", 5, 5, (3, 3), (stride, stride), padding, (1, 1), 5, 1, residual,
                                 ["relu", None, "relu6"][(h + w) % 3])
        if residual:
            nodes.insert(0, Node("r", "relu", ["x"], {}, {}))
        graph = Graph("x", (None, 5, h, w), nodes, out)
        runtime.format.write(graph, tmp_path / "c.xk")
        x = inputs((2, 5, h, w), h * w)
        got = runtime.load(tmp_path / "c.xk", backend="engine").predict(x)
        oracle = runtime.load(tmp_path / "c.xk", backend="reference").predict(x)
        assert got.shape == (2, 5, ho, wo)
        np.testing.assert_allclose(got, oracle, rtol=0, atol=TOL * max(1.0, float(np.abs(oracle).max())),
                                   err_msg=f"{h}x{w}: {graph.summary()}")


@pytest.mark.parametrize("stride, padding", [(1, (1, 1)), (1, (0, 0)), (2, (1, 1)), (2, (0, 0))])
def test_depthwise_3x3_small_maps(stride, padding, tmp_path):
    """The 3x3 depthwise kernels on every map from 1x1 to 16x16 and a few wider ones, with and
    without a fused residual, ReLU or ReLU6: stride 1 with same padding runs each channel as
    one flat run of floats (masked loads in its first and last rows, a last vector overlapping
    its neighbour) on maps of 8 to 1024 floats, the row bands elsewhere."""
    rng = np.random.default_rng(stride * 10 + padding[0])
    maps = [(h, w) for h in range(1, 17) for w in range(1, 17)] + [(1, 40), (40, 1), (2, 100), (32, 32), (31, 33), (1, 600)]
    for k, (h, w) in enumerate(maps):
        if h + 2 * padding[0] < 3 or w + 2 * padding[1] < 3:
            continue
        ho, wo = (h + 2 * padding[0] - 3) // stride + 1, (w + 2 * padding[1] - 3) // stride + 1
        residual = (ho, wo) == (h, w) and k % 4 != 3
        nodes, out = _conv_graph(rng, "conv2d", 3, 3, (3, 3), (stride, stride), padding, (1, 1), 3, 1, residual,
                                 ["relu", None, "relu6"][k % 3])
        if residual:
            nodes.insert(0, Node("r", "relu", ["x"], {}, {}))
        graph = Graph("x", (None, 3, h, w), nodes, out)
        runtime.format.write(graph, tmp_path / "c.xk")
        x = inputs((2, 3, h, w), k)
        got = runtime.load(tmp_path / "c.xk", backend="engine").predict(x)
        oracle = runtime.load(tmp_path / "c.xk", backend="reference").predict(x)
        assert got.shape == (2, 3, ho, wo)
        np.testing.assert_allclose(got, oracle, rtol=0, atol=TOL * max(1.0, float(np.abs(oracle).max())),
                                   err_msg=f"{h}x{w}: {graph.summary()}")


@pytest.mark.parametrize("stride, h, c", [(1, 47, 64), (2, 47, 64), (1, 14, 160)])
def test_depthwise_3x3_threads(stride, h, c, threads, tmp_path):
    """The 3x3 depthwise kernels on 2 threads (channels split between them) give 1 thread's
    outputs bit for bit, with the residual and ReLU6 epilogue fused (14x14: the flat kernel,
    each channel's last vector overlapping its neighbour)."""
    rng = np.random.default_rng(stride)
    w = h
    ho = (h - 1) // stride + 1
    nodes, out = _conv_graph(rng, "conv2d", c, c, (3, 3), (stride, stride), (1, 1), (1, 1), c, 1, stride == 1,
                             "relu6")
    if stride == 1:
        nodes.insert(0, Node("r", "relu", ["x"], {}, {}))
    graph = Graph("x", (None, c, h, w), nodes, out)
    runtime.format.write(graph, tmp_path / "c.xk")
    net = runtime.load(tmp_path / "c.xk", backend="engine")
    got = _threads_and_oracle(net, tmp_path / "c.xk", inputs((1, c, h, w), stride), threads, f"stride {stride}, {h}x{w}")
    assert got.shape == (1, c, ho, ho)


def _x_conv_net(tmp_path, rng, cin, cout, k, stride, padding, dilation, degree, block, residual, act, h, w):
    """An X-conv network (_conv_graph) on (cin, h, w), its index rows in runs of `block` equal
    rows, the residual a ReLU of x: (graph, its engine)."""
    nodes, out = _conv_graph(rng, "xconv2d", cin, cout, k, stride, padding, dilation, 1, degree, residual, act)
    if block > 1:
        index = nodes[0].arrays["index"]
        index[:] = np.repeat(index[::block], block, axis=0)[:cout]
    if residual:
        nodes.insert(0, Node("r", "relu", ["x"], {}, {}))
    graph = Graph("x", (None, cin, h, w), nodes, out)
    runtime.format.write(graph, tmp_path / "c.xk")
    return graph, runtime.load(tmp_path / "c.xk", backend="engine")


def _threads_and_oracle(net, path, x, threads, err_msg):
    """net's outputs for x on 1 and 2 threads, equal bit for bit and within TOL of the numpy
    executor's; returns them."""
    got = {}
    for n in (1, 2):
        threads(n)
        got[n] = net.predict(x)
    oracle = runtime.load(path, backend="reference").predict(x)
    np.testing.assert_array_equal(got[1], got[2])
    np.testing.assert_allclose(got[1], oracle, rtol=0, atol=TOL * max(1.0, float(np.abs(oracle).max())),
                               err_msg=err_msg)
    return got[1]


@pytest.mark.parametrize("block", [1, 4])
def test_winograd_x_convs(block, threads, tmp_path):
    """Stride-1 3x3 X-convs with 12 or more terms run by Winograd (the training path's
    kernels): F(4x4, 3x3) where its vectors of tiles cost no more than F(2x2, 3x3)'s, else
    F(2x2, 3x3), at odd sizes, paddings 0 to 2, output counts off a multiple of four, panels
    whose tiles fill one, two or three vectors (4x4, 5x5, 7x7, 14x14 maps), index rows random
    or in runs of four (block), with a fused residual and activation; 2 threads (panels split
    between them) give 1 thread's outputs bit for bit.  Fewer terms, or tiles mostly outside a
    small map, keep the row tiles."""
    rng = np.random.default_rng(block)
    seen, fused = set(), 0
    cases = [(16, 24, 12, 30, 30, (1, 1)), (12, 12, 12, 29, 31, (1, 1)), (16, 6, 16, 17, 23, (1, 1)),
             (16, 16, 16, 17, 23, (1, 1)), (12, 8, 12, 9, 9, (0, 0)),
             (16, 12, 12, 26, 33, (2, 1)), (16, 8, 12, 11, 7, (1, 0)), (16, 8, 11, 30, 30, (1, 1)),
             (16, 8, 12, 3, 3, (1, 1)), (16, 8, 12, 4, 4, (1, 1)), (16, 16, 12, 5, 5, (1, 1)),
             (16, 8, 12, 7, 7, (1, 1)), (16, 16, 12, 14, 14, (1, 1))]
    for cin, cout, degree, h, w, padding in cases:
        cout = cout if block == 1 else -(-cout // 4) * 4
        residual = padding == (1, 1) and cout == cin
        graph, net = _x_conv_net(tmp_path, rng, cin, cout, (3, 3), (1, 1), padding, (1, 1), degree, block, residual,
                                 ["relu6", None, "relu"][h % 3], h, w)
        ho, wo = h + 2 * padding[0] - 2, w + 2 * padding[1] - 2
        vectors = lambda n: n // 24 * 3 + -(-(n % 24) // 8)  # noqa: E731 (the quads' vectors of n tiles)
        m = 4 if 36 * vectors(-(-ho // 4) * -(-wo // 4)) <= 16 * vectors(-(-ho // 2) * -(-wo // 2)) else 2
        stats = net._engine.stats([2, cin, h, w])
        expect = degree >= 12 and (m == 4 or 10 * ho * wo >= 6 * 4 * (-(-ho // 2) * -(-wo // 2)))
        assert stats["conv_winograd"] == expect, (cin, cout, degree, h, w, padding)
        seen.add(m if expect else 0)
        got = _threads_and_oracle(net, tmp_path / "c.xk", inputs((2, cin, h, w), h * w), threads,
                                  f"{h}x{w} padding {padding}: {graph.summary()}")
        assert got.shape == (2, cout, ho, wo)
        fused += residual and expect
    assert seen == {0, 2, 4} and fused == 4


@pytest.mark.parametrize("block", [1, 4])
def test_pointwise_x_convs_in_quads(block, threads, tmp_path):
    """Stride-1 1x1 X-convs on maps of 24 positions or more run in quads (the training path's
    kernel) on panels of the map: sizes that end inside a panel's first, second or third
    vector (the last panel computes only the vectors that hold positions), output counts off a multiple
    of four, index rows random or in runs of four (block), with a fused residual and
    activation; 2 threads give 1 thread's outputs bit for bit.  Smaller maps keep the vec
    tiles."""
    rng = np.random.default_rng(10 + block)
    seen = set()
    for cin, cout, degree, h, w in ((16, 16, 6, 4, 5), (16, 16, 6, 5, 7), (12, 6, 5, 7, 7), (24, 24, 9, 13, 11),
                                   (8, 10, 3, 4, 6), (16, 32, 16, 1, 30)):
        cout = cout if block == 1 else -(-cout // 4) * 4
        residual = cout == cin
        graph, net = _x_conv_net(tmp_path, rng, cin, cout, (1, 1), (1, 1), (0, 0), (1, 1), degree, block, residual,
                                 ["relu6", None, "relu"][w % 3], h, w)
        quads = net._engine.stats([2, cin, h, w])["conv_quads"]
        assert quads == (h * w >= 24), (h, w)
        seen.add(quads)
        _threads_and_oracle(net, tmp_path / "c.xk", inputs((2, cin, h, w), h * w), threads,
                            f"{h}x{w}: {graph.summary()}")
    assert seen == {0, 1}


@pytest.mark.parametrize("block", [1, 4])
def test_strided_x_convs_on_columns(block, threads, tmp_path):
    """Strided X-convs onto 24 outputs or more, with at most 2048 input channels x taps, run as
    1x1 X-convs in quads over their columns: 3x3 and 1x1 at stride 2, 5x5 at stride 3 with
    dilation 2, padding 0-2, odd sizes, output counts off a multiple of four, index rows random
    or in runs of four, with an activation; 2 threads (the columns split by input channel, the
    quads by tile) give 1 thread's outputs bit for bit.  Smaller maps keep the other kernels."""
    rng = np.random.default_rng(20 + block)
    seen = set()
    for cin, cout, k, stride, pad, dil, h, w in ((16, 24, 3, 2, 1, 1, 19, 23), (16, 10, 1, 2, 0, 1, 14, 14),
                                                 (12, 8, 5, 3, 2, 2, 31, 29), (16, 8, 3, 2, 0, 1, 9, 40),
                                                 (16, 8, 3, 2, 1, 1, 7, 7)):
        cout = cout if block == 1 else -(-cout // 4) * 4
        graph, net = _x_conv_net(tmp_path, rng, cin, cout, (k, k), (stride, stride), (pad, pad), (dil, dil), 6, block,
                                 False, ["relu6", None, "relu"][h % 3], h, w)
        ho = (h + 2 * pad - dil * (k - 1) - 1) // stride + 1
        wo = (w + 2 * pad - dil * (k - 1) - 1) // stride + 1
        columns = net._engine.stats([2, cin, h, w])["conv_columns"]
        assert columns == (ho * wo >= 24), (ho, wo)
        seen.add(columns)
        got = _threads_and_oracle(net, tmp_path / "c.xk", inputs((2, cin, h, w), h * w), threads,
                                  f"{h}x{w}: {graph.summary()}")
        assert got.shape == (2, cout, ho, wo)
    assert seen == {0, 1}


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_max_pool_3x3_stride_2(ceil_mode, tmp_path):
    """The 3x3 stride-2 max pool kernel: odd sizes down to 1x1, paddings, windows cut by
    ceil_mode, and NaN propagating from any tap as in torch."""
    # widths about 18 (one strip's reads) and 36: strips inside the row and cut at either edge
    for h, w in ((1, 1), (2, 3), (5, 7), (9, 17), (16, 16), (23, 40), (14, 50), (3, 18), (7, 19), (11, 33), (4, 36),
                 (13, 35)):
        for padding in ((0, 0), (1, 1), (1, 0), (0, 1)):
            if h + 2 * padding[0] < 3 or w + 2 * padding[1] < 3:
                continue
            node = Node("pool", "maxpool2d", ["x"], dict(kernel=[3, 3], stride=[2, 2], padding=list(padding),
                                                         dilation=[1, 1], ceil_mode=ceil_mode), {})
            graph = Graph("x", (None, 3, h, w), [node], "pool")
            runtime.format.write(graph, tmp_path / "p.xk")
            x = inputs((2, 3, h, w), h * w)
            x[0, 1].flat[(h * w) // 2] = np.nan
            x[1, 2, 0, 0] = np.nan  # in the first window whatever the padding
            got = runtime.load(tmp_path / "p.xk", backend="engine").predict(x)
            expected = torch.nn.functional.max_pool2d(torch.from_numpy(x), 3, 2, padding, ceil_mode=ceil_mode).numpy()
            np.testing.assert_array_equal(got, expected, err_msg=f"{h}x{w}, padding {padding}")
            assert np.isnan(got[1, 2, 0, 0])


@pytest.mark.parametrize("divisor", [None, 3])
def test_avg_pool_2x2_stride_2(divisor, tmp_path):
    """The 2x2 stride-2 average pool's vector path (windows inside the input): widths under,
    at and over a vector of outputs, odd sizes (the last row or column unread), against torch
    bit for bit, with and without a divisor; ceil_mode windows that leave the input take the
    general loop."""
    for h, w, ceil_mode in ((2, 2, False), (5, 17, False), (16, 16, False), (9, 33, False), (32, 40, False),
                            (7, 9, True)):
        node = Node("pool", "avgpool2d", ["x"], dict(kernel=[2, 2], stride=[2, 2], padding=[0, 0],
                                                     ceil_mode=ceil_mode, count_include_pad=True,
                                                     divisor=divisor), {})
        graph = Graph("x", (None, 3, h, w), [node], "pool")
        runtime.format.write(graph, tmp_path / "p.xk")
        x = inputs((2, 3, h, w), h * w)
        got = runtime.load(tmp_path / "p.xk", backend="engine").predict(x)
        expected = torch.nn.functional.avg_pool2d(torch.from_numpy(x), 2, 2, 0, ceil_mode, True, divisor).numpy()
        np.testing.assert_array_equal(got, expected, err_msg=f"{h}x{w}")


def test_global_average_pool(tmp_path):
    """An adaptive average pool to 1x1 (eight running sums a channel) on maps of fewer than,
    exactly and more than eight values, with a tail, against torch."""
    for h, w in ((1, 1), (2, 4), (3, 5), (7, 7), (8, 8), (16, 17)):
        node = Node("gap", "adaptive_avgpool2d", ["x"], {"output_size": [1, 1]}, {})
        graph = Graph("x", (None, 5, h, w), [node], "gap")
        runtime.format.write(graph, tmp_path / "g.xk")
        x = inputs((2, 5, h, w), h * w)
        got = runtime.load(tmp_path / "g.xk", backend="engine").predict(x)
        expected = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x).double(), 1).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6, err_msg=f"{h}x{w}")


def test_1x1_conv_after_its_average_pool(threads, tmp_path):
    """A 1x1 conv read only by an average pool runs after the pool, on the pooled input (they
    commute): DenseNet's transition (batch norm, ReLU, 1x1 X-conv, 2x2 pool), dense convs and
    overlapping 3x3 windows at stride 2, odd maps whose last row and column no window reads, a
    ReLU or residual after the pool; 1 and 2 threads bit for bit, and 8 (more than the plan made
    room for) run on those it has.  Pools that pad, round up or override the divisor, other
    convs, and a conv output read twice keep the order."""
    rng = np.random.default_rng(7)

    def pool(k, s, **kw):
        attrs = dict(kernel=[k, k], stride=[s, s], padding=[0, 0], ceil_mode=False, count_include_pad=True,
                     divisor=None)
        attrs.update(kw)
        return Node("pool", "avgpool2d", ["conv"], attrs, {})

    cases = [("xconv2d", 1, pool(2, 2), True, "relu", False, 1), ("xconv2d", 1, pool(2, 2), False, None, True, 1),
             ("conv2d", 1, pool(3, 2), True, "relu6", False, 1), ("conv2d", 1, pool(2, 2), False, None, False, 1),
             ("xconv2d", 1, pool(2, 2, padding=[1, 1]), True, None, False, 0),
             ("xconv2d", 1, pool(2, 2, ceil_mode=True), True, None, False, 0),
             ("xconv2d", 1, pool(2, 2, divisor=3), True, None, False, 0),
             ("xconv2d", 3, pool(2, 2), True, None, False, 0)]
    for op, k, pool_node, pre, act, residual, fused in cases:
        for h, w in ((8, 8), (9, 7), (16, 16), (32, 30)):
            nodes, _ = _conv_graph(rng, op, 12, 12, (k, k), (1, 1), (k // 2, k // 2), (1, 1), 1, 6, False, None)
            nodes.append(pool_node)
            out = "pool"
            if pre:
                affine = Node("bn", "affine", ["x"], {}, {"scale": rng.standard_normal(12).astype(np.float32),
                                                          "shift": rng.standard_normal(12).astype(np.float32)})
                nodes = [affine, Node("bn_act", "relu", ["bn"], {}, {})] + nodes
                nodes[2].inputs = ["bn_act"]
            if residual:  # the pooled input of a channel's own: x pooled the same way
                nodes.append(Node("skip", "avgpool2d", ["x"], pool_node.attrs, {}))
                nodes.append(Node("add", "add", ["pool", "skip"], {}, {}))
                out = "add"
            if act:
                nodes.append(Node("act", act, [out], {}, {}))
                out = "act"
            graph = Graph("x", (None, 12, h, w), nodes, out)
            runtime.format.write(graph, tmp_path / "c.xk")
            net = runtime.load(tmp_path / "c.xk", backend="engine")
            assert net._engine.stats([2, 12, h, w])["conv_after_pool"] == fused, (op, k, pool_node.attrs)
            x = inputs((2, 12, h, w), h * w)
            got = _threads_and_oracle(net, tmp_path / "c.xk", x, threads, f"{h}x{w}: {graph.summary()}")
            threads(8)  # more threads than the plan made room for: it runs on as many as it has
            np.testing.assert_array_equal(net.predict(x), got)
    # the conv's output has a second reader: the pool runs after it
    nodes, _ = _conv_graph(rng, "xconv2d", 12, 12, (1, 1), (1, 1), (0, 0), (1, 1), 1, 6, False, None)
    nodes += [pool(2, 2), Node("gap", "adaptive_avgpool2d", ["conv"], {"output_size": [2, 2]}, {}),
              Node("add", "add", ["pool", "gap"], {}, {})]
    graph = Graph("x", (None, 12, 4, 4), nodes, "add")
    runtime.format.write(graph, tmp_path / "c.xk")
    net = runtime.load(tmp_path / "c.xk", backend="engine")
    assert net._engine.stats([1, 12, 4, 4])["conv_after_pool"] == 0
    _threads_and_oracle(net, tmp_path / "c.xk", inputs((1, 12, 4, 4)), threads, graph.summary())


@pytest.mark.parametrize("act", [None, "relu", "relu6"])
def test_affine_before_a_conv_fills_its_planes(act, threads, tmp_path):
    """An affine (and activation) whose only reader is a conv runs as that conv reads its input:
    stride-1 1x1 X-convs as the quads load their panels (maps ending inside a panel, 7x13, and on
    its edge), 3x3 row tiles at strides 1 and 2, a dense conv, as they fill their planes, with
    padding that stays zero; 1 and 2 threads bit for bit.  Not before a depthwise conv or when
    the affine's output has a second reader."""
    rng = np.random.default_rng(len(str(act)))
    cases = [("xconv2d", 1, 1, 0, 1, True), ("xconv2d", 3, 1, 1, 1, True), ("xconv2d", 3, 2, 1, 1, True),
             ("conv2d", 3, 1, 1, 1, True), ("xconv2d", 1, 2, 0, 1, True), ("conv2d", 3, 1, 1, 8, False)]
    for op, k, stride, pad, groups, fused in cases:
        for h, w in ((8, 8), (7, 13), (16, 16), (6, 8)):
            nodes, out = _conv_graph(rng, op, 8, 8, (k, k), (stride, stride), (pad, pad), (1, 1), groups, 5,
                                     False, "relu")
            affine = Node("bn", "affine", ["x"], {}, {"scale": rng.standard_normal(8).astype(np.float32),
                                                      "shift": rng.standard_normal(8).astype(np.float32)})
            pre = [affine] + ([Node("bn_act", act, ["bn"], {}, {})] if act else [])
            nodes[0].inputs = [pre[-1].name]
            graph = Graph("x", (None, 8, h, w), pre + nodes, out)
            runtime.format.write(graph, tmp_path / "c.xk")
            x = inputs((2, 8, h, w), h * w)
            net = runtime.load(tmp_path / "c.xk", backend="engine")
            stats = net._engine.stats([2, 8, h, w])
            assert stats["conv_pre_affine"] == int(fused), (op, k, groups)
            assert stats["conv_quads"] == int(op == "xconv2d" and k == 1 and stride == 1), (op, k, stride)
            _threads_and_oracle(net, tmp_path / "c.xk", x, threads, f"{h}x{w}: {graph.summary()}")
    # a second reader of the affine's output: the affine stays a step of its own
    nodes, out = _conv_graph(rng, "xconv2d", 8, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1, 5, True, None)
    nodes[0].inputs = ["bn"]
    nodes[1].inputs = ["conv", "bn"]
    affine = Node("bn", "affine", ["x"], {}, {"scale": np.full(8, 0.5, np.float32), "shift": np.ones(8, np.float32)})
    graph = Graph("x", (None, 8, 9, 9), [affine] + nodes, out)
    runtime.format.write(graph, tmp_path / "c.xk")
    net = runtime.load(tmp_path / "c.xk", backend="engine")
    assert net._engine.stats([1, 8, 9, 9])["conv_pre_affine"] == 0
    x = inputs((1, 8, 9, 9))
    np.testing.assert_allclose(net.predict(x), runtime.load(tmp_path / "c.xk", backend="reference").predict(x),
                               rtol=0, atol=TOL * 10)


def _check_tiled_conv(tmp_path, op, channels, degree, k, stride, maps, kernel):
    """A conv of each map size (with a fused activation, and a residual where the shapes allow
    one) runs on the engine's `kernel` and matches the reference executor."""
    rng = np.random.default_rng(10 * k + stride)
    for h, w in maps:
        pad = k // 2
        ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        residual = (ho, wo) == (h, w)
        nodes, out = _conv_graph(rng, op, channels, channels, (k, k), (stride, stride), (pad, pad), (1, 1), 1,
                                 degree, residual, ["relu", None, "relu6"][(h + w) % 3])
        if residual:
            nodes.insert(0, Node("r", "relu", ["x"], {}, {}))
        graph = Graph("x", (None, channels, h, w), nodes, out)
        runtime.format.write(graph, tmp_path / "c.xk")
        x = inputs((2, channels, h, w), h * w)
        net = runtime.load(tmp_path / "c.xk", backend="engine")
        assert net._engine.stats([2, channels, h, w])[kernel] == 1
        got = net.predict(x)
        oracle = runtime.load(tmp_path / "c.xk", backend="reference").predict(x)
        assert got.shape == (2, channels, ho, wo)
        np.testing.assert_allclose(got, oracle, rtol=0, atol=TOL * max(1.0, float(np.abs(oracle).max())),
                                   err_msg=f"{h}x{w}: {graph.summary()}")


@pytest.mark.parametrize("k, stride", [(1, 1), (1, 2), (5, 2), (2, 1)])
def test_vec_tiles_at_every_size(k, stride, tmp_path):
    """The vec kernel (random X-convs off the row tiles) splits a map into tiles of 1-8
    vectors and a shorter last one: maps from 1x1 up, outputs contiguous (1x1, stride 1) or
    not, with a fused residual where the shapes allow one; 1x1 and strided convs onto fewer
    than the 24 outputs of the quads' panels (larger ones run in quads)."""
    maps = ((1, 1), (1, 7), (3, 3), (5, 13), (7, 7), (8, 8), (14, 14), (9, 31), (16, 20))
    if (k, stride) == (1, 1):
        maps = ((1, 1), (1, 7), (3, 3), (2, 11), (4, 5), (1, 23))
    if stride > 1:  # strided X-convs onto fewer outputs than the columns' panels
        maps = ((1, 1), (1, 7), (3, 3), (5, 13), (7, 7), (8, 8), (2, 45), (9, 7))
    _check_tiled_conv(tmp_path, "xconv2d", 10, 6, k, stride, maps, "conv_vec")


@pytest.mark.parametrize("k, stride", [(3, 1), (3, 2), (7, 2), (1, 2)])
def test_shared4_tiles_within_rows(k, stride, tmp_path):
    """Dense convs whose planes have padding columns tile each output row (24 columns a tile,
    the last cut short): rows narrower than a tile, exactly one, and longer, with a fused
    residual where the shapes allow one."""
    _check_tiled_conv(tmp_path, "conv2d", 8, 8, k, stride,
                      ((1, 1), (3, 5), (4, 24), (6, 25), (5, 48), (9, 61)), "conv_shared4")


@pytest.mark.parametrize("cin, k, stride", [(3, 1, 1), (16, 1, 1), (5, 3, 1), (5, 3, 2), (5, 7, 2), (8, 3, 2)])
def test_dense_runs(cin, k, stride, threads, tmp_path):
    """Dense convs (conv2d, groups 1) run several tiles a call (xk_dense.h): 1x1 convs over the
    flat plane (maps narrower than a tile, a last tile cut short), padded convs row by row in
    strips (rows narrower than a tile, one, two and more), with bias, a fused residual and
    ReLU or ReLU6; the planner picks them, and 2 threads give 1 thread's outputs bit for bit."""
    rng = np.random.default_rng(100 * cin + 10 * k + stride)
    pad = k // 2
    widths = {1: (1, 5, 7, 31, 16), 3: (20, 47, 24, 23, 48), 7: (45, 95, 45, 47, 95)}[k] if stride == 1 or k == 7 else (39, 47, 41, 43, 95)
    for j, w in enumerate(widths):
        h = [1, 3, 5, 9, 64][j] if k == 1 else [3, 5, 7, 4, 40][j]
        ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        cout = 8 if j % 2 else 16
        residual = (ho, wo, cout) == (h, w, cin)
        act = ["relu", "relu6", None][j % 3] if j else "relu"
        nodes, out = _conv_graph(rng, "conv2d", cin, cout, (k, k), (stride, stride), (pad, pad), (1, 1), 1, 1,
                                 residual, act)
        if residual or k == 1:  # the conv reads a network value: a 1x1 conv then reads it as its plane
            nodes.insert(0, Node("r", "relu", ["x"], {}, {}))
            nodes[1].inputs = ["r"]
        graph = Graph("x", (None, cin, h, w), nodes, out)
        runtime.format.write(graph, tmp_path / "c.xk")
        x = inputs((2, cin, h, w), h * w)
        net = runtime.load(tmp_path / "c.xk", backend="engine")
        stats = net._engine.stats([2, cin, h, w])
        assert stats["conv_shared4"] == 1 and stats["conv_dense"] == 1, f"{h}x{w}"
        got = {}
        for n in (1, 2):
            threads(n)
            got[n] = net.predict(x)
        oracle = runtime.load(tmp_path / "c.xk", backend="reference").predict(x)
        assert got[1].shape == (2, cout, ho, wo)
        np.testing.assert_array_equal(got[1], got[2])
        np.testing.assert_allclose(got[1], oracle, rtol=0, atol=TOL * max(1.0, float(np.abs(oracle).max())),
                                   err_msg=f"{h}x{w}: {graph.summary()}")


@pytest.mark.parametrize("k, stride", [(3, 2), (7, 2), (3, 1), (5, 1), (5, 2)])
def test_first_layer_convs(k, stride, threads, tmp_path):
    """Dense convs over 1-4 input channels (a first layer) run on their own kernel (xk_first.h):
    input rows padded and split into column phases in a ring, tiles of four outputs x 1-3
    vectors.  Output counts off a multiple of four and eight, maps from 1x1 up with widths off a
    multiple of 8 and rows shorter than one vector, paddings 0 to past the kernel's half, with
    bias, a fused residual or input affine, no activation, ReLU or ReLU6; 2 threads (rows split
    between them) give 1 thread's outputs bit for bit."""
    rng = np.random.default_rng(10 * k + stride)
    cases = [(3, 16, 224 // 4, 224 // 4, k // 2), (1, 5, 1, 1, k // 2), (2, 13, 9, 17, k // 2), (4, 6, 23, 5, 0),
             (3, 24, 31, 33, k // 2 + 1), (4, 4, 12, 40, (1, 0) if k > 3 else 2), (3, 3, 16, 19, k // 2)]
    for j, (cin, cout, h, w, pad) in enumerate(cases):
        pad = pad if isinstance(pad, tuple) else (pad, pad)
        if h + 2 * pad[0] < k or w + 2 * pad[1] < k:
            continue
        ho, wo = (h + 2 * pad[0] - k) // stride + 1, (w + 2 * pad[1] - k) // stride + 1
        residual = (ho, wo, cout) == (h, w, cin)
        nodes, out = _conv_graph(rng, "conv2d", cin, cout, (k, k), (stride, stride), pad, (1, 1), 1, 1, residual,
                                 ["relu", "relu6", None][j % 3])
        if residual:
            nodes.insert(0, Node("r", "relu", ["x"], {}, {}))
        elif j % 2:  # an affine (and ReLU) before the conv, applied as its rows are filled
            nodes[0].inputs = ["bn_act"]
            nodes[:0] = [Node("bn", "affine", ["x"], {}, {"scale": rng.standard_normal(cin).astype(np.float32),
                                                         "shift": rng.standard_normal(cin).astype(np.float32)}),
                         Node("bn_act", "relu", ["bn"], {}, {})]
        graph = Graph("x", (None, cin, h, w), nodes, out)
        runtime.format.write(graph, tmp_path / "c.xk")
        net = runtime.load(tmp_path / "c.xk", backend="engine")
        stats = net._engine.stats([2, cin, h, w])
        assert stats["conv_first"] == 1 and stats["conv_pre_affine"] == int(not residual and j % 2 == 1), graph.summary()
        got = _threads_and_oracle(net, tmp_path / "c.xk", inputs((2, cin, h, w), h * w), threads,
                                  f"{h}x{w} padding {pad}: {graph.summary()}")
        assert got.shape == (2, cout, ho, wo)


def test_first_layer_convs_in_the_models(tmp_path):
    """The stems of X-MobileNet (3x3 stride 2), X-ResNet (7x7 stride 2) and X-DenseNet (3x3
    stride 1) run on the first-layer kernel; 5 input channels or a 1x1 conv do not."""
    for name, side in (("x-mobilenet-0.5-4", 64), ("x-resnet-2-18", 64), ("x-densenet-bc-2-40-24", 32)):
        model = models.create(name, num_classes=10, seed=0).eval()
        runtime.save(model, tmp_path / "m.xk", (1, 3, side, side))
        assert runtime.load(tmp_path / "m.xk")._engine.stats([1, 3, side, side])["conv_first"] == 1, name
    rng = np.random.default_rng(0)
    for cin, k in ((5, 3), (3, 1)):
        nodes, out = _conv_graph(rng, "conv2d", cin, 8, (k, k), (1, 1), (k // 2, k // 2), (1, 1), 1, 1, False, None)
        runtime.format.write(Graph("x", (None, cin, 9, 9), nodes, out), tmp_path / "c.xk")
        assert runtime.load(tmp_path / "c.xk", backend="engine")._engine.stats([1, cin, 9, 9])["conv_first"] == 0


def test_generic_kernels_match_avx2(tmp_path):
    """XKERN_ENGINE_ISA=generic runs the portable kernels: the same results, within rounding."""
    name, shape, classes = PAPER_MODELS[2]
    model = paper_model(name, classes)
    x = inputs(shape)
    runtime.save(model, tmp_path / "m.xk", shape)
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np\nfrom xkern import runtime\nfrom xkern.runtime import _engine\n"
            "print(_engine.has_avx2())\n"
            "np.save(sys.argv[2], runtime.load(sys.argv[1]).predict(np.load(sys.argv[3])))\n")
    out = run_python(code, str(tmp_path / "m.xk"), str(tmp_path / "g.npy"), str(tmp_path / "x.npy"),
                     env={"XKERN_ENGINE_ISA": "generic"})
    assert out.strip() == "False"
    np.testing.assert_allclose(np.load(tmp_path / "g.npy"), runtime.load(tmp_path / "m.xk").predict(x),
                               rtol=0, atol=1e-5)


def test_fusion_and_memory_plan(tmp_path):
    """Convs absorb their residual add and ReLU, and DenseNet's pre-activation batch norms;
    DenseNet's concatenations copy nothing."""
    name, shape, classes = PAPER_MODELS[1]  # x-resnet-2-18
    runtime.save(paper_model(name, classes), tmp_path / "r.xk", shape)
    net = runtime.load(tmp_path / "r.xk")
    steps = net.steps()
    assert ("stages_0_0_conv2", "add", "stages_0_0_relu_1") in steps
    assert len(steps) < len(net.graph.nodes) - 20
    name, shape, classes = PAPER_MODELS[2]  # x-densenet
    runtime.save(paper_model(name, classes), tmp_path / "d.xk", shape)
    stats = runtime.load(tmp_path / "d.xk")._engine.stats([1, *shape[1:]])
    assert stats["concat_copies"] == 0 and stats["concat_inputs"] > 30
    assert stats["conv_pre_affine"] > 10  # each dense layer's batch norm and ReLU run in its 1x1 conv


def test_profile_names_every_node(tmp_path):
    runtime.save(zoo(), tmp_path / "m.xk", (1, 4, 13, 13))
    net = runtime.load(tmp_path / "m.xk")
    out, times = net.profile(inputs((1, 4, 13, 13)))
    assert [t[0] for t in times] == [n.name for n in net.graph.nodes]
    assert out.shape == (1, 5) and all(t >= 0 for _, t in times)


# ---------------------------------------------------------------- the C API
def _config(*flags):
    from xkern.__main__ import main
    import contextlib
    import io
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["config", *flags]) == 0
    return buffer.getvalue().split()


def c_library():
    """libxkern_runtime through ctypes, with the C API's signatures declared."""
    libdir = _config("--libdir")[0]
    lib = ctypes.CDLL(os.path.join(libdir, "libxkern_runtime.so"))
    lib.xk_load.restype = ctypes.c_void_p
    lib.xk_load.argtypes = [ctypes.c_char_p]
    lib.xk_last_error.restype = ctypes.c_char_p
    lib.xk_input_shape.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.xk_output_size.restype = ctypes.c_int64
    lib.xk_output_size.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    lib.xk_predict.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64]
    lib.xk_free.argtypes = [ctypes.c_void_p]
    lib.xk_set_num_threads.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


@pytest.fixture(scope="module")
def paper_files(tmp_path_factory):
    """{name: (file.xk, input, torch logits)} for the paper's three families."""
    folder = tmp_path_factory.mktemp("engine")
    files = {}
    for i, (name, shape, classes) in enumerate(PAPER_MODELS):
        model = paper_model(name, classes, seed=i)
        x = inputs(shape, seed=i)
        runtime.save(model, folder / f"{name}.xk", shape)
        files[name] = (folder / f"{name}.xk", x, torch_logits(model, x))
    return files


def test_c_api_through_ctypes(paper_files):
    lib = c_library()
    for name, (path, x, expected) in paper_files.items():
        m = lib.xk_load(str(path).encode())
        assert m, lib.xk_last_error()
        try:
            chw = (ctypes.c_int64 * 3)()
            assert lib.xk_input_shape(m, chw) == 0 and tuple(chw) == x.shape[1:]
            n = lib.xk_output_size(m, len(x))
            assert n == expected.size
            out = np.empty(n, np.float32)
            for threads in (1, 2):
                assert lib.xk_set_num_threads(m, threads) == 0
                assert lib.xk_predict(m, x.ctypes.data, len(x), out.ctypes.data, n) == 0, lib.xk_last_error()
                assert np.abs(out.reshape(expected.shape) - expected).max() <= TOL, name
        finally:
            lib.xk_free(m)


def test_c_api_errors(paper_files, tmp_path):
    lib = c_library()
    path, x, expected = paper_files["x-resnet-2-18"]
    assert not lib.xk_load(None) and b"NULL" in lib.xk_last_error()
    assert not lib.xk_load(str(tmp_path / "missing.xk").encode())
    assert b"cannot open" in lib.xk_last_error()
    m = lib.xk_load(str(path).encode())
    try:
        out = np.empty(expected.size, np.float32)
        chw = (ctypes.c_int64 * 3)()
        assert lib.xk_input_shape(None, chw) != 0 and b"NULL" in lib.xk_last_error()
        assert lib.xk_input_shape(m, None) != 0 and b"NULL" in lib.xk_last_error()
        assert lib.xk_output_size(None, 1) < 0 and lib.xk_output_size(m, 0) < 0
        assert lib.xk_predict(None, x.ctypes.data, 2, out.ctypes.data, out.size) != 0
        assert lib.xk_predict(m, None, 2, out.ctypes.data, out.size) != 0 and b"x is NULL" in lib.xk_last_error()
        assert lib.xk_predict(m, x.ctypes.data, 2, None, out.size) != 0 and b"out is NULL" in lib.xk_last_error()
        assert lib.xk_predict(m, x.ctypes.data, 0, out.ctypes.data, out.size) != 0
        assert lib.xk_predict(m, x.ctypes.data, 2, out.ctypes.data, out.size - 1) != 0
        assert b"output buffer" in lib.xk_last_error()
        assert lib.xk_set_num_threads(m, -1) != 0
        assert lib.xk_predict(m, x.ctypes.data, 2, out.ctypes.data, out.size) == 0
        assert lib.xk_last_error() == b""
    finally:
        lib.xk_free(m)
    lib.xk_free(None)


def test_c_api_last_error_is_per_thread():
    import threading
    lib = c_library()
    assert not lib.xk_load(b"/nonexistent/one.xk")
    seen = []
    thread = threading.Thread(target=lambda: seen.append((lib.xk_last_error(), lib.xk_load(b"/nonexistent/two.xk"),
                                                          lib.xk_last_error())))
    thread.start()
    thread.join()
    assert seen[0][0] == b"" and seen[0][2].count(b"two.xk") == 1
    assert b"one.xk" in lib.xk_last_error()


def test_unknown_input_size(tmp_path):
    """A file saved without input_shape: Python takes any size, the C API says why it cannot."""
    runtime.save(zoo(), tmp_path / "m.xk")
    x = inputs((2, 4, 13, 13))
    np.testing.assert_allclose(runtime.load(tmp_path / "m.xk").predict(x), torch_logits(zoo(), x),
                               rtol=0, atol=TOL)
    lib = c_library()
    m = lib.xk_load(str(tmp_path / "m.xk").encode())
    assert m
    try:
        assert lib.xk_input_shape(m, (ctypes.c_int64 * 3)()) != 0
        assert b"input_shape" in lib.xk_last_error()
        assert lib.xk_output_size(m, 1) < 0
    finally:
        lib.xk_free(m)


def test_c_program_built_with_config_flags(paper_files, tmp_path):
    """examples/xk_predict.c, compiled with `python -m xkern config --cflags --libs`, run with
    an environment holding PATH only, matches torch."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    exe = tmp_path / "xk_predict"
    cmd = [cc, "-std=c99", "-Wall", "-Werror", os.path.join(root, "examples", "xk_predict.c"),
           *_config("--cflags", "--libs"), "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    for name, (path, x, expected) in paper_files.items():
        x.tofile(tmp_path / "x.f32")
        proc = subprocess.run([str(exe), str(path), str(tmp_path / "x.f32"), str(tmp_path / "y.f32")],
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        got = np.fromfile(tmp_path / "y.f32", np.float32).reshape(expected.shape)
        assert np.abs(got - expected).max() <= TOL, name
        assert proc.stdout.splitlines()[0].startswith("image 0: class ")
    proc = subprocess.run([str(exe), str(tmp_path / "none.xk"), str(tmp_path / "x.f32")],
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, capture_output=True, text=True)
    assert proc.returncode == 1 and "cannot open" in proc.stderr


def test_config_command():
    cflags, libs = _config("--cflags"), _config("--libs")
    assert cflags[0].startswith("-I") and os.path.exists(os.path.join(cflags[0][2:], "xkern_runtime.h"))
    assert "-lxkern_runtime" in libs and any(w.startswith("-Wl,-rpath,") for w in libs)
    out = subprocess.run([sys.executable, "-m", "xkern", "config"], capture_output=True, text=True)
    assert out.returncode != 0 and "--cflags" in out.stderr
