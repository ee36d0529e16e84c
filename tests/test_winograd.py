"""The CPU backend's Winograd F(2x2, 3x3) path (stride-1 3x3 forward, grad_input, grad_weight) against
the float64 oracle, forced on for every stride-1 3x3 conv ("always") over random
configurations, plus what it promises besides: the same bits at any thread count, no
reach of values nothing reads, strided arrays, and the rule that picks it ("auto")."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import xkern
from testing import DTYPES, EXAMPLES, assert_close, conv2d_oracle, random_index

pytest.importorskip("xkern.backends.cpu", reason="the compiled CPU backend is not built")
from xkern.backends import _cpu  # noqa: E402  (after the skip: needs the extension)


class _Winograd:
    """Sets _cpu.WINOGRAD (and _cpu.WINO_TILE: 0, the rule's tile; 2 or 4, F(2x2, 3x3) or
    F(4x4, 3x3)) for a block and counts the calls that run by Winograd (calls["forward"],
    calls["grad_input"]: those that transform weights; calls["grad_weight"]: those its rule
    admits), with the tiles they took in calls["tiles"]."""

    def __init__(self, mode, tile=0):
        self.mode, self.tile = mode, tile
        self.calls = {"forward": 0, "grad_input": 0, "grad_weight": 0, "tiles": set()}

    def __enter__(self):
        self.saved = _cpu.WINOGRAD, _cpu.WINO_TILE, _cpu._wino_weights, _cpu._winograd_wgrad
        make, rule = _cpu._wino_weights, _cpu._winograd_wgrad

        def counted(weight, edges, flip, m, n_chunks):
            self.calls["grad_input" if flip else "forward"] += 1
            self.calls["tiles"].add(m)
            return make(weight, edges, flip, m, n_chunks)

        def counted_rule(*args):
            taken = rule(*args)
            if taken[0]:
                self.calls["grad_weight"] += 1
                self.calls["tiles"].add(taken[0])
            return taken
        _cpu.WINOGRAD, _cpu.WINO_TILE, _cpu._wino_weights, _cpu._winograd_wgrad = (self.mode, self.tile, counted,
                                                                                   counted_rule)
        return self.calls

    def __exit__(self, *exc):
        _cpu.WINOGRAD, _cpu.WINO_TILE, _cpu._wino_weights, _cpu._winograd_wgrad = self.saved


TILES = (2, 4)


def _case(batch, n_in, n_out, degree, hw, padding, repeats=False, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (batch, n_in) + tuple(hw))
    weight = rng.standard_normal((n_out, degree, 3, 3))
    index = random_index(rng, n_out, n_in, degree, repeats)
    b = rng.standard_normal(n_out) if bias else None
    out_hw = tuple(n + 2 * p - 2 for n, p in zip(hw, padding))
    grad_out = rng.standard_normal((batch, n_out) + out_hw)
    return x, weight, index, b, grad_out


def _cast(dtype, *arrays):
    return [None if a is None else a.astype(dtype) for a in arrays]


def _run(x, weight, index, bias, grad_out, padding):
    out = xkern.xconv2d(x, weight, index, bias, 1, padding, 1, backend="cpu")
    return (out,) + tuple(xkern.xconv2d_backward(grad_out, x, weight, index, 1, padding, 1, backend="cpu"))


def _check(results, expected, dtype, what=""):
    for name, got, want in zip(("out", "grad_x", "grad_weight", "grad_bias"), results, expected):
        if want is not None:
            assert_close(got, want, dtype, f"{what} {name}")


@st.composite
def wino_configs(draw):
    """A stride-1 3x3 X-Conv of any size the oracle can take: images from 1x1 (padding 1 or
    more) to 11x13, so tiles are cut at odd sizes, panels straddle images and the last panel
    runs past the batch; padding 0-3 (grad_input's padding 2 - p down to -1)."""
    n_in = draw(st.integers(1, 12))
    padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    hw = tuple(draw(st.integers(max(1, 3 - 2 * p), 13 - 2 * i)) for i, p in enumerate(padding))
    return dict(batch=draw(st.integers(1, 4)), n_in=n_in, n_out=draw(st.integers(1, 11)),
                degree=draw(st.integers(1, n_in)), hw=hw, padding=padding, repeats=draw(st.booleans()),
                bias=draw(st.booleans()), seed=draw(st.integers(0, 2**32 - 1)))


@pytest.mark.parametrize("tile", TILES)
@settings(max_examples=EXAMPLES, deadline=None)
@given(cfg=wino_configs())
def test_winograd_against_the_oracle(tile, cfg):
    x, weight, index, bias, grad_out = _case(**cfg)
    expected = conv2d_oracle(x, weight, index, bias, 1, cfg["padding"], 1, grad_out)
    with _Winograd("always", tile) as calls:
        for dtype in DTYPES:
            _check(_run(*_cast(dtype, x, weight), index, *_cast(dtype, bias, grad_out), cfg["padding"]),
                   expected, dtype, str(cfg))
    assert calls == {"forward": 2, "grad_input": 2, "grad_weight": 2, "tiles": {tile}}


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("batch, hw", [(5, (13, 11)), (1, (5, 6))])  # many panels; one panel, quads split
def test_winograd_same_bits_at_any_thread_count(batch, hw, n_threads, tile):
    x, weight, index, _, grad_out = _case(batch, 9, 14, 5, hw, (1, 1), bias=False)
    x, weight, grad_out = _cast(np.float32, x, weight, grad_out)
    with _Winograd("always", tile):
        try:
            xkern.set_num_threads(1)
            want = _run(x, weight, index, None, grad_out, 1)
            xkern.set_num_threads(n_threads)
            got = _run(x, weight, index, None, grad_out, 1)
        finally:
            xkern.set_num_threads(None)
    for name, a, b in zip(("out", "grad_x", "grad_weight"), got, want):
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("tile", TILES)
def test_winograd_ignores_values_nothing_reads(tile):
    """A forward quad's padding slots read channel 0 with weight 0, grad_input's padding terms a
    row of zeros: Inf in a channel no output reads, or in an output no input gathers, must
    not reach any result."""
    x, weight, _, _, grad_out = _case(2, 6, 5, 2, (6, 7), (1, 1))
    index = np.array([[1, 2], [3, 4], [5, 1], [2, 3], [4, 5]])  # nobody reads channel 0
    unread = x.copy()
    unread[:, 0] = 0
    expected = conv2d_oracle(unread, weight, index, None, 1, 1, 1, grad_out)
    x[:, 0] = np.inf
    grad_inf = grad_out.copy()
    grad_inf[:, 0] = np.inf  # output 0 reads inputs 1 and 2 only
    with _Winograd("always", tile) as calls:
        for dtype in DTYPES:
            out = xkern.xconv2d(*_cast(dtype, x, weight), index, None, 1, 1, 1, backend="cpu")
            assert np.isfinite(out).all()
            assert_close(out, expected[0], dtype, "Inf in an unread channel")
            grad_w = xkern.xconv2d_backward(*_cast(dtype, grad_out, x, weight), index, 1, 1, 1, backend="cpu",
                                            grads=("weight",))[1]
            assert np.isfinite(grad_w).all()
            assert_close(grad_w, expected[2], dtype, "grad_weight, Inf in an unread channel")
            grad_x = xkern.xconv2d_backward(*_cast(dtype, grad_inf, x, weight), index, 1, 1, 1, backend="cpu",
                                            grads=("input",))[0]
            assert np.isfinite(grad_x[:, [0, 3, 4, 5]]).all()
            assert_close(grad_x[:, [0, 3, 4, 5]], expected[1][:, [0, 3, 4, 5]], dtype, "grad_x, Inf in output 0")
    assert calls["grad_weight"] == 2 and calls["tiles"] == {tile}


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_winograd_strided_arrays(dtype, tile):
    """The raw kernels on views with any strides: x and grad_out in NHWC or reversed memory
    (columns not contiguous: every patch row is copied into the stage), out and grad_x
    written through transposed views."""
    x, weight, index, bias, grad_out = _case(3, 7, 6, 4, (9, 8), (1, 1))
    expected = conv2d_oracle(x, weight, index, bias, 1, 1, 1, grad_out)
    x_t = np.ascontiguousarray(x.astype(dtype).transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)  # NHWC memory
    g_t = np.ascontiguousarray(grad_out.astype(dtype)[:, :, ::-1, ::-1])[:, :, ::-1, ::-1]
    out = np.full(expected[0].shape[::-1], np.nan, dtype).transpose(3, 2, 1, 0)
    grad_x = np.full(x.shape[::-1], np.nan, dtype).transpose(3, 2, 1, 0)
    from xkern.backends import cpu
    from xkern.ops.adjacency import reverse_adjacency
    grad_w = np.full(weight.shape, np.nan, dtype)
    with _Winograd("always", tile) as calls:
        cpu.xconv2d_fwd(x_t, weight.astype(dtype), index, bias.astype(dtype), out, (1, 1), (1, 1), (1, 1))
        cpu.xconv2d_bwd_input(g_t, weight.astype(dtype), index, reverse_adjacency(index, x.shape[1]), grad_x,
                              (1, 1), (1, 1), (1, 1))
        cpu.xconv2d_bwd_weight(g_t, x_t, index, grad_w, (1, 1), (1, 1), (1, 1))
    assert calls == {"forward": 1, "grad_input": 1, "grad_weight": 1, "tiles": {tile}}
    assert_close(out, expected[0], dtype, "out")
    assert_close(grad_x, expected[1], dtype, "grad_x")
    assert_close(grad_w, expected[2], dtype, "grad_weight")


def test_winograd_auto_rule():
    """"auto" takes Winograd for stride-1 3x3 convs with 12+ edges per channel on both sides,
    a panel or more of 2x2 tiles holding 60%+ real outputs (50%+ for the forward), at any
    thread count; not for few edges, less than a panel, 3x3 maps' grad_input, other geometries
    or "never".  It takes F(4x4, 3x3)
    where its tiles make 6+ panels, its scratch fits and it transforms at most WINO_F4_VALUES
    of F(2x2, 3x3)'s values, else F(2x2, 3x3); WINO_TILE forces one."""
    def calls_for(mode, batch, n_in, n_out, degree, hw, stride=1, dilation=1, n_threads=2):
        x, weight, index, _, _ = _case(batch, n_in, n_out, degree, hw, (1, 1), bias=False)
        x, weight = _cast(np.float32, x, weight)
        try:
            xkern.set_num_threads(n_threads)
            with _Winograd(mode) as calls:
                out = xkern.xconv2d(x, weight, index, None, stride, 1, dilation, backend="cpu")
                xkern.xconv2d_backward(np.ones_like(out), x, weight, index, stride, 1, dilation, backend="cpu",
                                       grads=("input",))
        finally:
            xkern.set_num_threads(None)
        return {k: calls[k] for k in ("forward", "grad_input", "tiles")}
    f2, f4 = ({"forward": 1, "grad_input": 1, "tiles": {m}} for m in (2, 4))
    direct = {"forward": 0, "grad_input": 0, "tiles": set()}
    # 2 x 7 x 7 tiles of 4x4: 4.1 panels of 24, so 2x2 tiles (the thread count never switches
    # the algorithm)
    assert calls_for("auto", 2, 64, 64, 16, (28, 28), n_threads=4) == f2
    assert calls_for("auto", 2, 64, 64, 16, (28, 28), n_threads=16) == f2
    assert calls_for("auto", 2, 64, 64, 16, (28, 28)) == f2
    # 4 x 7 x 7 tiles of 4x4: 8.2 panels; 3 x 7 x 7: 6.1
    assert calls_for("auto", 4, 64, 64, 16, (28, 28)) == f4
    assert calls_for("auto", 4, 64, 64, 16, (28, 28), n_threads=16) == f4
    assert calls_for("auto", 3, 64, 64, 16, (28, 28)) == f4
    # 96 -> 24 with D = 48: 12 edges per input channel; grad_input the same edges the other way
    assert calls_for("auto", 2, 96, 24, 48, (28, 28)) == f2
    assert calls_for("auto", 2, 96, 24, 12, (28, 28)) == direct
    assert calls_for("auto", 2, 64, 64, 8, (28, 28)) == direct
    # 7 x 7 tiles of 2x2 at 14x14: 2.0 panels; 4 x 4 at 7x7: 0.67; 5x5 maps in 2x2 tiles
    # hold 69% real outputs, 3x3 maps 56%
    assert calls_for("auto", 1, 64, 64, 16, (14, 14)) == f2
    assert calls_for("auto", 1, 64, 64, 16, (7, 7)) == direct
    assert calls_for("auto", 4, 64, 64, 16, (5, 5)) == f2
    assert calls_for("auto", 8, 64, 64, 16, (3, 3)) == {"forward": 1, "grad_input": 0, "tiles": {2}}
    assert calls_for("auto", 16, 64, 64, 16, (3, 1)) == direct  # 3 of 8
    assert calls_for("auto", 2, 64, 64, 16, (28, 28), stride=2) == direct
    assert calls_for("auto", 2, 64, 64, 16, (28, 28), dilation=2) == direct
    assert calls_for("never", 2, 64, 64, 16, (28, 28)) == direct
    # the scratch limit: 36 (resp. 16) transformed panels of the sources and destinations
    rule = _cpu._winograd
    # 4x4 tiles at 14x14 transform 0.73 of the 2x2 tiles' values: F(4x4) for float32 only
    assert rule((3, 3), (1, 1), (1, 1), 64, 64, 64 * 16, (14, 14), 32, 4, "forward") == 4
    assert rule((3, 3), (1, 1), (1, 1), 64, 64, 64 * 16, (14, 14), 32, 8, "forward") == 2
    assert rule((3, 3), (1, 1), (1, 1), 64, 64, 64 * 16, (28, 28), 32, 8, "forward") == 4
    assert rule((3, 3), (1, 1), (1, 1), 64, 64, 64 * 16, (10, 10), 64, 4, "forward") == 2  # 0.81
    assert rule((3, 3), (1, 1), (1, 1), 512, 512, 512 * 64, (28, 28), 32, 4, "forward") == 4
    assert rule((3, 3), (1, 1), (1, 1), 620, 620, 620 * 64, (28, 28), 32, 4, "forward") == 2
    assert rule((3, 3), (1, 1), (1, 1), 1400, 1400, 1400 * 64, (28, 28), 32, 4, "forward") == 0
    with _Winograd("auto", 2):
        assert rule((3, 3), (1, 1), (1, 1), 64, 64, 64 * 16, (28, 28), 8, 4, "forward") == 2
    with _Winograd("auto", 4):
        assert rule((3, 3), (1, 1), (1, 1), 64, 64, 64 * 16, (28, 28), 2, 4, "forward") == 0  # 4.1 panels of 4x4 tiles
        assert rule((3, 3), (1, 1), (1, 1), 64, 64, 64 * 16, (28, 28), 3, 4, "forward") == 4
    with _Winograd("always"):
        assert rule((3, 3), (1, 1), (1, 1), 64, 64, 64, (5, 5), 1, 4, "forward") == 4


def test_winograd_block_expander_and_many_channels():
    """Block expanders (shared quads in the forward) and a panel of more than a few hundred
    channels, against the oracle."""
    rng = np.random.default_rng(3)
    from xkern.graphs import expander
    for n_in, n_out, degree, block in ((16, 12, 8, 4), (300, 40, 24, 1)):
        index = expander(n_in, n_out, degree, block=block, seed=1) if block > 1 else \
            random_index(rng, n_out, n_in, degree, False)
        x = rng.uniform(-1, 1, (2, n_in, 6, 5))
        weight = rng.standard_normal((n_out, degree, 3, 3))
        bias = rng.standard_normal(n_out)
        grad_out = rng.standard_normal((2, n_out, 6, 5))
        expected = conv2d_oracle(x, weight, index, bias, 1, 1, 1, grad_out)
        for tile in TILES:
            with _Winograd("always", tile) as calls:
                for dtype in DTYPES:
                    _check(_run(*_cast(dtype, x, weight), index, *_cast(dtype, bias, grad_out), 1), expected,
                           dtype, f"{n_in}->{n_out} block {block}, tile {tile}")
            assert calls == {"forward": 2, "grad_input": 2, "grad_weight": 2, "tiles": {tile}}


def test_winograd_grad_weight_auto_rule():
    """"auto" takes Winograd for grad_weight of float32 stride-1 3x3 convs with 12+ edges per
    channel on both sides and 2+ partial sums (_wgrad_parts: one per panel of tiles, at most
    WINO_WGRAD_PARTS), at any thread count; not for float64, few edges, one panel, other
    geometries or "never".  F(4x4, 3x3) where its tiles make 2+ partial sums and waste
    little of the map."""
    def taken(mode, batch, n_in, n_out, degree, hw, dtype=np.float32, stride=1, n_threads=2, tile=False):
        x, weight, index, _, _ = _case(batch, n_in, n_out, degree, hw, (1, 1), bias=False)
        x, weight = _cast(dtype, x, weight)
        out_hw = tuple((n - 1) // stride + 1 for n in hw)
        try:
            xkern.set_num_threads(n_threads)
            with _Winograd(mode) as calls:
                xkern.xconv2d_backward(np.ones((batch, n_out) + out_hw, dtype), x, weight, index, stride, 1, 1,
                                       backend="cpu", grads=("weight",))
        finally:
            xkern.set_num_threads(None)
        return calls["tiles"] if tile else calls["grad_weight"]
    assert taken("auto", 2, 64, 64, 12, (10, 10)) == 1
    assert taken("auto", 2, 64, 64, 8, (10, 10)) == 0
    assert taken("auto", 2, 96, 24, 48, (10, 10)) == 1  # 12 edges per input channel
    assert taken("auto", 2, 96, 24, 12, (10, 10)) == 0
    assert taken("auto", 2, 64, 64, 16, (10, 10), dtype=np.float64) == 0
    assert taken("always", 2, 64, 64, 16, (10, 10), dtype=np.float64) == 1
    assert taken("auto", 2, 64, 64, 16, (10, 10), stride=2) == 0
    assert taken("never", 2, 64, 64, 16, (10, 10)) == 0
    # 2 x 5 x 5 tiles: 3 panels of 24, so 3 partial sums; 1 x 4 x 4 tiles: one panel
    assert taken("auto", 2, 64, 64, 16, (10, 10), n_threads=16) == 1
    assert taken("auto", 1, 64, 64, 16, (8, 8)) == 0
    # F(4x4, 3x3): 8 x 7 x 7 tiles make 17 panels, and 36 values per 4x4 tile are 0.56 of
    # F(2x2, 3x3)'s 16 per 2x2 tile; 12 x 4 x 4 tiles at 14x14 are 0.73 of them (F(2x2))
    assert taken("auto", 2, 64, 64, 16, (10, 10), tile=True) == {2}
    assert taken("auto", 8, 64, 64, 16, (28, 28), tile=True) == {4}
    assert taken("auto", 8, 64, 64, 16, (28, 28), n_threads=16, tile=True) == {4}
    assert taken("auto", 12, 64, 64, 16, (14, 14), tile=True) == {2}
    assert taken("always", 2, 64, 64, 16, (10, 10), tile=True) == {4}


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_winograd_grad_weight_partial_sums(dtype, tile, monkeypatch):
    """grad_weight summed in one partial sum or in many (panels cut into WINO_WGRAD_PARTS
    ranges, each a thread's), with more threads than partial sums, against the oracle; and the
    same bits at 1 and 3 threads."""
    x, weight, index, _, grad_out = _case(3, 10, 7, 6, (11, 9) if tile == 2 else (23, 21), (1, 1), repeats=True)
    expected = conv2d_oracle(x, weight, index, None, 1, 1, 1, grad_out)
    x, weight, grad_out = _cast(dtype, x, weight, grad_out)
    results = []
    for parts, n_threads in ((1, 1), (1, 3), (8, 1), (8, 3), (5, 16)):
        monkeypatch.setattr(_cpu, "WINO_WGRAD_PARTS", parts)
        try:
            xkern.set_num_threads(n_threads)
            with _Winograd("always", tile) as calls:
                grad_w = xkern.xconv2d_backward(grad_out, x, weight, index, 1, 1, 1, backend="cpu",
                                                grads=("weight",))[1]
        finally:
            xkern.set_num_threads(None)
        assert calls["grad_weight"] == 1 and calls["tiles"] == {tile}
        assert_close(grad_w, expected[2], dtype, f"{parts} partial sums, {n_threads} threads")
        results.append(grad_w)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[2], results[3])


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_winograd_grad_weight_block_runs(dtype, tile, monkeypatch):
    """Block expanders' grad_weight shares each transformed tile between the four outputs of
    a run (xk_wino_wdot_shared): the same bits as the one-output-at-a-time path, and the
    oracle's values."""
    from xkern.graphs import expander
    rng = np.random.default_rng(5)
    index = expander(20, 16, 8, block=4, seed=2)
    x = rng.uniform(-1, 1, (3, 20, 9, 7))
    grad_out = rng.standard_normal((3, 16, 9, 7))
    weight = rng.standard_normal((16, 8, 3, 3))
    expected = conv2d_oracle(x, weight, index, None, 1, 1, 1, grad_out)
    x, weight, grad_out = _cast(dtype, x, weight, grad_out)
    assert _cpu._rows_shared(index)
    results = []
    for shared in (True, False):
        if not shared:
            monkeypatch.setattr(_cpu, "_rows_shared", lambda index: False)
        with _Winograd("always", tile) as calls:
            results.append(xkern.xconv2d_backward(grad_out, x, weight, index, 1, 1, 1, backend="cpu",
                                                  grads=("weight",))[1])
        assert calls["grad_weight"] == 1 and calls["tiles"] == {tile}
    assert_close(results[0], expected[2], dtype, "grad_weight, shared runs")
    np.testing.assert_array_equal(results[0], results[1])


def test_winograd_auto_same_bits_at_any_thread_count():
    """"auto" picks the same algorithm at every thread count, so forward and gradients keep
    their bits: 64 -> 64, D 16 at 28x28, batch 2 (16.3 panels of 2x2 tiles: F(2x2, 3x3)), at
    26x26 (14.1: direct) and at 28x28, batch 8 (16.3 panels of 4x4 tiles: F(4x4, 3x3))."""
    for batch, hw in ((2, (28, 28)), (2, (26, 26)), (8, (28, 28))):
        x, weight, index, _, grad_out = _case(batch, 64, 64, 16, hw, (1, 1), bias=False)
        x, weight, grad_out = _cast(np.float32, x, weight, grad_out)
        runs = []
        with _Winograd("auto"):
            for n_threads in (1, 2, 5, 16):
                try:
                    xkern.set_num_threads(n_threads)
                    runs.append(_run(x, weight, index, None, grad_out, 1))
                finally:
                    xkern.set_num_threads(None)
        for got in runs[1:]:
            for name, a, b in zip(("out", "grad_x", "grad_weight"), got, runs[0]):
                np.testing.assert_array_equal(a, b, err_msg=f"{hw} {name}")
