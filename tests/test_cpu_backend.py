"""The compiled CPU backend ("cpu") against the float64 oracle on configs chosen to hit its
code paths (polyphase planes for strides, padding frames, dilation, image groups, tile
tails), plus what only it promises: bitwise-equal results at any thread count, concurrent
callers, every output element written, strided and read-only inputs."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import xkern
from testing import assert_close, conv2d_oracle, conv_case, linear_oracle, out_hw, pair, random_index

cpu = pytest.importorskip("xkern.backends.cpu", reason="the compiled CPU backend is not built")
from xkern.backends import _cpu, _graphs  # noqa: E402  (after the skip: needs the extension)
from xkern.ops.adjacency import reverse_adjacency  # noqa: E402

DTYPES = (np.float64, np.float32)

# (batch, Cin, Cout, D, (H, W), (kh, kw), stride, padding, dilation, repeats)
CONV_CONFIGS = {
    "3x3 pad 1": (2, 6, 5, 3, (9, 8), (3, 3), 1, 1, 1, False),
    # stride-1 3x3 grids of 3 to 9 vectors per row: tiles of 1-, 2- and 4-vector rows, several per row
    "3x3 wide rows": (2, 5, 6, 3, (6, 40), (3, 3), 1, 1, 1, False),
    "3x3 wider, pad 0": (1, 4, 5, 2, (5, 63), (3, 3), 1, 0, 1, True),
    "3x3 30 wide": (3, 3, 4, 2, (7, 30), (3, 3), 1, 1, 1, False),
    # images stacked fewer than Ho + kh - 1 grid rows apart, the next one's top padding
    # standing in for the bottom rows (Ho + 1 at pad 1, Ho at pad 2, Ho + 3 here)
    "3x3 pad 2, images Ho rows apart": (4, 4, 5, 2, (6, 7), (3, 3), 1, 2, 1, False),
    "5x5 pad 1 dilation (2,1) stride (1,2)": (3, 5, 4, 3, (9, 11), (5, 5), (1, 2), 1, (2, 1), False),
    "stride 2": (2, 5, 7, 2, (11, 10), (3, 3), 2, 1, 1, False),
    "stride (2,3) pad (2,0)": (3, 4, 6, 2, (11, 13), (3, 3), (2, 3), (2, 0), 1, True),
    "dilation 2": (2, 6, 4, 3, (10, 9), (3, 3), 1, 2, 2, False),
    "dilation (2,1) stride 2": (1, 5, 5, 4, (12, 11), (3, 3), 2, 1, (2, 1), True),
    "non-square 5x2": (2, 4, 3, 2, (9, 7), (5, 2), 1, (2, 0), 1, False),
    "non-square 1x4 stride 3": (2, 3, 4, 3, (7, 13), (1, 4), 3, (0, 1), (1, 2), True),
    "repeated index": (2, 5, 6, 4, (7, 7), (3, 3), 1, 1, 1, True),
    "D = Cin": (2, 4, 5, 4, (6, 7), (3, 3), 1, 1, 1, False),
    "D = 1": (3, 6, 4, 1, (5, 9), (3, 3), 1, 0, 1, False),
    "1x1 pointwise": (3, 7, 9, 3, (5, 5), (1, 1), 1, 0, 1, False),
    "1x1 stride 2 (pixels never read)": (2, 5, 4, 2, (7, 8), (1, 1), 2, 0, 1, False),
    "1x1 pad 2 > kernel": (1, 3, 4, 2, (3, 4), (1, 1), 1, 2, 1, True),
    "kernel = image": (2, 4, 3, 2, (5, 4), (5, 4), 1, 0, 1, False),
    "odd 1x1 image": (5, 3, 2, 2, (1, 1), (3, 3), 1, 1, 1, True),
    # one phase whose taps look like a 3x3 stride-1 grid, but the rows are narrower than a vector
    "stride (2,1) dilation (2,1), one column": (1, 1, 1, 1, (7, 1), (3, 3), (2, 1), (0, 1), (2, 1), False),
}


def linear_case(batch, n_in, n_out, degree, repeats, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (batch, n_in)), rng.standard_normal((n_out, degree)),
            random_index(rng, n_out, n_in, degree, repeats), rng.standard_normal(n_out),
            rng.standard_normal((batch, n_out)))


def _cast(dtype, *arrays):
    return [a.astype(dtype) for a in arrays]


def conv_all(x, weight, index, bias, grad_out, geometry):
    """(out, grad_x, grad_weight, grad_bias) from the cpu backend."""
    out = xkern.xconv2d(x, weight, index, bias, *geometry, backend="cpu")
    return (out,) + xkern.xconv2d_backward(grad_out, x, weight, index, *geometry, backend="cpu")


def linear_all(x, weight, index, bias, grad_out):
    out = xkern.xlinear(x, weight, index, bias, backend="cpu")
    return (out,) + xkern.xlinear_backward(grad_out, x, weight, index, backend="cpu")


def check(results, expected, dtype, what=""):
    for name, got, want in zip(("out", "grad_x", "grad_weight", "grad_bias"), results, expected):
        assert_close(got, want, dtype, f"{what} {name}")


@pytest.fixture
def small_groups(monkeypatch):
    """Pack one image per group, so batches run as several groups (and barriers)."""
    monkeypatch.setattr(_cpu, "PACK_BYTES", 1)


@pytest.fixture
def small_blocks(monkeypatch):
    """As many channel blocks as an output has terms, so tiles run block by block with
    partial sums kept between blocks and some blocks empty (the path of large Cin)."""
    monkeypatch.setattr(_cpu, "BLOCK_BYTES", 1)
    monkeypatch.setattr(_cpu, "BLOCK_TERMS", 1)


# ---- against the oracle ---------------------------------------------------------------

@pytest.mark.parametrize("name", CONV_CONFIGS)
def test_xconv2d_matches_oracle(name):
    x, weight, index, bias, grad_out, geometry = conv_case(CONV_CONFIGS[name])
    expected = conv2d_oracle(x, weight, index, bias, *geometry, grad_out)
    for dtype in DTYPES:
        check(conv_all(*_cast(dtype, x, weight), index, *_cast(dtype, bias, grad_out), geometry),
              expected, dtype, f"{name} {np.dtype(dtype)}")


@pytest.mark.parametrize("name", ["stride (2,3) pad (2,0)", "dilation 2", "1x1 pointwise", "3x3 pad 1"])
def test_xconv2d_in_groups_of_one_image(name, small_groups):
    x, weight, index, bias, grad_out, geometry = conv_case(CONV_CONFIGS[name], seed=1)
    expected = conv2d_oracle(x, weight, index, bias, *geometry, grad_out)
    check(conv_all(x, weight, index, bias, grad_out, geometry), expected, np.float64, name)


@pytest.mark.parametrize("name", ["stride (2,3) pad (2,0)", "dilation 2", "repeated index", "1x1 pointwise",
                                  "3x3 wide rows"])
def test_xconv2d_in_channel_blocks(name, small_blocks):
    x, weight, index, bias, grad_out, geometry = conv_case(CONV_CONFIGS[name], seed=4)
    expected = conv2d_oracle(x, weight, index, bias, *geometry, grad_out)
    for dtype in DTYPES:
        check(conv_all(*_cast(dtype, x, weight), index, *_cast(dtype, bias, grad_out), geometry),
              expected, dtype, f"{name} {np.dtype(dtype)}")


def test_xconv2d_many_tiles():
    """More grid positions than one tile holds, in several groups, float32."""
    x, weight, index, bias, grad_out, geometry = conv_case((3, 6, 7, 3, (23, 19), (3, 3), 1, 1, 1, True))
    expected = conv2d_oracle(x, weight, index, bias, *geometry, grad_out)
    check(conv_all(*_cast(np.float32, x, weight), index, *_cast(np.float32, bias, grad_out), geometry),
          expected, np.float32)


@pytest.mark.parametrize("batch, n_in, n_out, degree, repeats", [
    (5, 9, 7, 4, True), (1, 3, 2, 3, False), (70, 12, 5, 1, False), (129, 33, 17, 33, False),
])
def test_xlinear_matches_oracle(batch, n_in, n_out, degree, repeats):
    x, weight, index, bias, grad_out = linear_case(batch, n_in, n_out, degree, repeats)
    expected = linear_oracle(x, weight, index, bias, grad_out)
    for dtype in DTYPES:
        check(linear_all(*_cast(dtype, x, weight), index, *_cast(dtype, bias, grad_out)),
              expected, dtype, f"xlinear {np.dtype(dtype)}")


def test_xlinear_in_groups_of_one_row(small_groups):
    x, weight, index, bias, grad_out = linear_case(11, 6, 5, 2, True, seed=3)
    check(linear_all(x, weight, index, bias, grad_out), linear_oracle(x, weight, index, bias, grad_out),
          np.float64)


def test_xlinear_in_channel_blocks(small_blocks):
    x, weight, index, bias, grad_out = linear_case(70, 40, 9, 6, True, seed=5)
    check(linear_all(x, weight, index, bias, grad_out), linear_oracle(x, weight, index, bias, grad_out),
          np.float64)


def test_empty_batch_gradients_are_zero():
    x, weight, index, _, grad_out, geometry = conv_case(CONV_CONFIGS["stride 2"])
    _, grad_w, grad_b = xkern.xconv2d_backward(grad_out[:0], x[:0], weight, index, *geometry, backend="cpu")
    np.testing.assert_array_equal(grad_w, np.zeros_like(weight))
    np.testing.assert_array_equal(grad_b, np.zeros(weight.shape[0]))
    x, weight, index, _, grad_out = linear_case(3, 6, 4, 2, False)
    _, grad_w, grad_b = xkern.xlinear_backward(grad_out[:0], x[:0], weight, index, backend="cpu")
    np.testing.assert_array_equal(grad_w, np.zeros_like(weight))
    np.testing.assert_array_equal(grad_b, np.zeros(weight.shape[0]))


# ---- determinism and concurrency --------------------------------------------------------

@pytest.mark.parametrize("cfg", [CONV_CONFIGS["stride (2,3) pad (2,0)"], CONV_CONFIGS["dilation 2"],
                                 (4, 24, 20, 6, (15, 14), (3, 3), 1, 1, 1, True),
                                 (3, 16, 12, 5, (9, 37), (3, 3), 1, 1, 1, False)])
def test_bitwise_equal_at_1_and_2_threads(cfg, threads):
    case = conv_case(cfg, seed=2)
    x, weight, index, bias, grad_out, geometry = case
    lin = linear_case(67, 30, 26, 5, True, seed=2)
    results = {}
    for n in (1, 2):
        threads(n)
        results[n] = (conv_all(*_cast(np.float32, x, weight), index, *_cast(np.float32, bias, grad_out), geometry)
                      + conv_all(x, weight, index, bias, grad_out, geometry) + linear_all(*lin))
    for one, two in zip(results[1], results[2]):
        assert np.array_equal(one, two)


def test_eight_python_threads_at_once():
    cases = [conv_case(CONV_CONFIGS[name], seed=s)
             for s, name in enumerate(["stride 2", "dilation 2", "repeated index", "D = 1"] * 2)]
    alone = [conv_all(*case) for case in cases]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda case: conv_all(*case), cases * 3))
    for i, results in enumerate(together):
        for got, want in zip(results, alone[i % len(cases)]):
            np.testing.assert_array_equal(got, want)
    x, weight, index, bias, grad_out, geometry = cases[0]
    check(alone[0], conv2d_oracle(x, weight, index, bias, *geometry, grad_out), np.float64)


# ---- buffers -----------------------------------------------------------------------------

def test_kernels_write_every_output_element():
    """Outputs arrive uninitialised: NaN-filled buffers must come back fully written
    (grad_x is 0 at pixels a strided 1x1 conv never reads, and for unread channels)."""
    x, weight, index, bias, grad_out, geometry = conv_case(CONV_CONFIGS["1x1 stride 2 (pixels never read)"])
    index[:] = 0  # channels 1.. are read by no output
    stride, padding, dilation = (pair(v) for v in geometry)
    expected = conv2d_oracle(x, weight, index, bias, *geometry, grad_out)
    rev = reverse_adjacency(index, x.shape[1])
    buffers = [np.full(a.shape, np.nan) for a in expected]
    cpu.xconv2d_fwd(x, weight, index, bias, buffers[0], stride, padding, dilation)
    cpu.xconv2d_bwd_input(grad_out, weight, index, rev, buffers[1], stride, padding, dilation)
    cpu.xconv2d_bwd_weight(grad_out, x, index, buffers[2], stride, padding, dilation)
    cpu.xconv2d_bwd_bias(grad_out, buffers[3])
    check(buffers, expected, np.float64)
    assert not buffers[1][:, 1:].any()


def test_read_only_inputs():
    x, weight, index, bias, grad_out, geometry = conv_case(CONV_CONFIGS["stride 2"])
    expected = conv2d_oracle(x, weight, index, bias, *geometry, grad_out)
    for a in (x, weight, index, bias, grad_out):
        a.setflags(write=False)
    check(conv_all(x, weight, index, bias, grad_out, geometry), expected, np.float64)
    x, weight, index, bias, grad_out = linear_case(9, 7, 5, 3, True)
    expected = linear_oracle(x, weight, index, bias, grad_out)
    for a in (x, weight, index, bias, grad_out):
        a.setflags(write=False)
    check(linear_all(x, weight, index, bias, grad_out), expected, np.float64)


def test_non_contiguous_and_fortran_inputs():
    x, weight, index, bias, grad_out, geometry = conv_case(CONV_CONFIGS["dilation (2,1) stride 2"])
    expected = conv2d_oracle(x, weight, index, bias, *geometry, grad_out)
    x_strided = np.zeros(x.shape[:2] + (2 * x.shape[2], x.shape[3]))[:, :, ::2]
    x_strided[...] = x
    check(conv_all(x_strided, np.asfortranarray(weight), np.asfortranarray(index), bias[::-1][::-1],
                   np.asfortranarray(grad_out), geometry), expected, np.float64)
    x, weight, index, bias, grad_out = linear_case(10, 8, 6, 3, False)
    expected = linear_oracle(x, weight, index, bias, grad_out)
    check(linear_all(np.asfortranarray(x), weight.T.copy().T, index, bias, grad_out[:, ::-1][:, ::-1]),
          expected, np.float64)


def test_kernels_take_strided_arrays_directly():
    """The conv kernels read and write through strides (X-Linear relies on it)."""
    x, weight, index, bias, grad_out, geometry = conv_case(CONV_CONFIGS["stride 2"])
    stride, padding, dilation = (pair(v) for v in geometry)
    expected = conv2d_oracle(x, weight, index, bias, *geometry, grad_out)
    x_t = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)  # NHWC memory
    g_t = np.ascontiguousarray(grad_out.transpose(3, 2, 1, 0)).transpose(3, 2, 1, 0)
    out = np.full(expected[0].shape[::-1], np.nan).transpose(3, 2, 1, 0)
    grad_x = np.full(x.shape[::-1], np.nan).transpose(3, 2, 1, 0)
    grad_w = np.empty_like(weight)
    grad_b = np.empty(weight.shape[0])
    cpu.xconv2d_fwd(x_t, weight, index, bias, out, stride, padding, dilation)
    cpu.xconv2d_bwd_input(g_t, weight, index, reverse_adjacency(index, x.shape[1]), grad_x,
                          stride, padding, dilation)
    cpu.xconv2d_bwd_weight(g_t, x_t, index, grad_w, stride, padding, dilation)
    cpu.xconv2d_bwd_bias(g_t, grad_b)
    check((out, grad_x, grad_w, grad_b), expected, np.float64)


def test_backend_reports():
    cpu.require()
    assert isinstance(cpu.openmp_enabled(), bool)
    assert cpu.max_threads() >= 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_finite_pixels_the_conv_never_reads(dtype):
    """Inf and NaN in x where no output reads (the last row and column beyond the last
    strided window) must not reach any result: grad_weight multiplies x only at real
    output positions, as the oracle does."""
    x, weight, index, bias, grad_out, geometry = conv_case((3, 6, 5, 3, (8, 10), (3, 3), 2, 0, 1, True))
    expected = conv2d_oracle(x, weight, index, bias, *geometry, grad_out)  # rows 0-6 and columns 0-8 only
    x[:, :, 7, :] = np.inf
    x[:, :, :, 9] = np.nan
    x[0, 1, 7, 2] = -np.inf
    results = conv_all(*_cast(dtype, x, weight), index, *_cast(dtype, bias, grad_out), geometry)
    assert np.isfinite(results[2]).all()
    check(results, expected, dtype, "non-finite unread pixels")


@pytest.mark.parametrize("block, geometry", [(4, (1, 1, 1)), (8, (2, (2, 0), (1, 2))), (4, (1, 0, 2)),
                                             (4, (2, 1, 1))])
def test_block_expander_rows_share_loads(block, geometry, small_blocks):
    """Index rows equal in runs of 4 or 8 take the path where those outputs share each
    vector load (strided or dilated 3x3: several taps loaded one by one; a stride-1 3x3
    takes the row tiles instead); with blocks of 1 channel it also runs channel block
    by block."""
    x, weight, index, bias, grad_out, _ = conv_case((2, 9, 8 * 2, 3, (9, 8), (3, 3), 1, 1, 1, False), seed=6)
    index = np.repeat(index[::block], block, axis=0)
    geometry = tuple(pair(v) for v in geometry)
    grad_out = np.random.default_rng(7).standard_normal(
        (2, index.shape[0]) + out_hw((9, 8), (3, 3), *geometry))
    expected = conv2d_oracle(x, weight, index, bias, *geometry, grad_out)
    for dtype in DTYPES:
        check(conv_all(*_cast(dtype, x, weight), index, *_cast(dtype, bias, grad_out), geometry),
              expected, dtype, f"block {block} {np.dtype(dtype)}")


@pytest.mark.parametrize("quads", [True, False])
@pytest.mark.parametrize("block, geometry", [(4, (1, 0, 1)), (8, (2, 0, 1)), (4, (1, 1, 1))])
def test_block_expander_1x1_shares_loads(block, geometry, quads, monkeypatch):
    """1x1 forwards of block expanders run in quads whose four outputs share every load
    (odd map sizes: the last tile is partly past the images); without quads (inputs too
    many for a panel) on the flat tiles' shared-load path, in channel blocks."""
    if not quads:
        monkeypatch.setattr(_cpu, "QUAD_PANEL_BYTES", 0)
        monkeypatch.setattr(_cpu, "BLOCK_BYTES", 1)
        monkeypatch.setattr(_cpu, "BLOCK_TERMS", 1)
    calls = _spy_quads(monkeypatch)
    x, weight, index, bias, _, _ = conv_case((3, 11, 8 * 3, 5, (13, 7), (1, 1), 1, 0, 1, False), seed=9)
    index = np.repeat(index[::block], block, axis=0)
    assert _cpu._rows_shared(index)
    grad_out = np.random.default_rng(10).standard_normal((3, index.shape[0]) + out_hw((13, 7), (1, 1), *geometry))
    expected = conv2d_oracle(x, weight, index, bias, *geometry, grad_out)
    for dtype in DTYPES:
        check(conv_all(*_cast(dtype, x, weight), index, *_cast(dtype, bias, grad_out), geometry),
              expected, dtype, f"1x1 block {block} {geometry} {np.dtype(dtype)}")
    assert calls == {"forward": 2 if quads else 0, "grad_input": 0}  # (grad_input spreads)


# ---- 1x1 convs of unshared index rows: quads of outputs (forward) or inputs (grad_input)
# ---- on L1 panels (xk_quad_tile)

def _spy_quads(monkeypatch):
    """Counts the forwards (calls["forward"]) and grad_inputs that take quads."""
    calls = {"forward": 0, "grad_input": 0}

    def spy(name, kind):
        make = getattr(_cpu, name)

        def counted(*args):
            calls[kind] += 1
            return make(*args)
        monkeypatch.setattr(_cpu, name, counted)
    spy("_quad_weights", "forward")
    spy("_edge_weights", "grad_input")
    return calls


@pytest.mark.parametrize("quads", [True, False])
@pytest.mark.parametrize("hw, geometry", [
    ((5, 5), (1, 0, 1)),   # read in place: panels straddle two images, the last tile runs past the batch
    ((7, 9), (1, 0, 1)),
    ((3, 3), (1, 0, 1)),   # images smaller than a panel: packed
    ((9, 8), (2, 0, 1)),   # stride: packed planes (grad_input: phases, the flat tiles)
    ((4, 5), (1, 1, 1)),   # padding: packed, one phase
])
@pytest.mark.parametrize("n_out", [4, 9, 14])  # whole quads, or a last quad with padding slots
def test_1x1_in_quads(hw, geometry, n_out, quads, monkeypatch):
    """Inputs read by 0 to several outputs (repeats too): quads of inputs padded to their longest
    list, inputs read by none written as zeros.  quads False: the panel limit set to 0, so
    the same convs take the flat tiles.  (The columns path, tested in test_columns.py, would
    take the small and strided maps.)"""
    monkeypatch.setattr(_cpu, "COLUMNS", "never")
    if not quads:
        monkeypatch.setattr(_cpu, "QUAD_PANEL_BYTES", 0)
    calls = _spy_quads(monkeypatch)
    x, weight, index, bias, _, _ = conv_case((3, 10, n_out, 4, hw, (1, 1), 1, 0, 1, True), seed=13)
    grad_out = np.random.default_rng(14).standard_normal((3, n_out) + out_hw(hw, (1, 1), *geometry))
    expected = conv2d_oracle(x, weight, index, bias, *geometry, grad_out)
    for dtype in DTYPES:
        check(conv_all(*_cast(dtype, x, weight), index, *_cast(dtype, bias, grad_out), geometry),
              expected, dtype, f"1x1 {hw} {geometry} Cout {n_out} {np.dtype(dtype)}")
    assert calls["forward"] == (2 if quads else 0)
    assert calls["grad_input"] == (2 if quads and geometry[0] == 1 else 0)


def test_1x1_in_quads_bitwise_equal_across_threads(threads, monkeypatch):
    """Work items are tiles of the whole batch (read in place) or of a group (packed): the
    same bits at 1, 2 and 3 threads, and equal to the oracle; bias None too."""
    calls = _spy_quads(monkeypatch)
    x, weight, index, bias, _, _ = conv_case((5, 12, 14, 5, (7, 9), (1, 1), 1, 0, 1, False), seed=15)
    grad_out = np.random.default_rng(15).standard_normal((5, 14, 7, 9))
    x, weight, grad_out32 = _cast(np.float32, x, weight, grad_out)
    cases = [(b, g) for b in (None, bias) for g in ((1, 0, 1), (1, 1, 1))]
    results = {}
    for n in (1, 2, 3):
        threads(n)
        results[n] = []
        for b, geometry in cases:
            g = grad_out32 if geometry[1] == 0 else np.pad(grad_out32, ((0, 0), (0, 0), (1, 1), (1, 1)))
            results[n] += [xkern.xconv2d(x, weight, index, None if b is None else b.astype(np.float32),
                                         *geometry, backend="cpu"),
                           xkern.xconv2d_backward(g, x, weight, index, *geometry, backend="cpu")[0]]
    assert calls == {"forward": 12, "grad_input": 12}
    for k, (b, geometry) in enumerate(cases):
        g = grad_out if geometry[1] == 0 else np.pad(grad_out, ((0, 0), (0, 0), (1, 1), (1, 1)))
        want = conv2d_oracle(x, weight, index, b, *geometry, g)
        assert_close(results[1][2 * k], want[0], np.float32, f"1x1 {geometry} out")
        assert_close(results[1][2 * k + 1], want[1], np.float32, f"1x1 {geometry} grad_x")
        for n in (2, 3):
            assert np.array_equal(results[1][2 * k], results[n][2 * k])
            assert np.array_equal(results[1][2 * k + 1], results[n][2 * k + 1])


@pytest.mark.parametrize("block", [1, 4])
@pytest.mark.parametrize("hw, batches", [((3, 3), (1, 2, 3, 5, 11)), ((1, 1), (1, 7, 13)), ((2, 3), (3, 9))])
def test_1x1_packed_tiles_past_the_images(hw, batches, block, threads, monkeypatch):
    """Maps smaller than a panel are packed, and a tile's panels past the last image are not
    computed: the last panel computed holds 1-8, 9-16 or 17-24 positions (float32; 1-4,
    5-8, 9-12 for float64), for random and block expanders (forward in quads, grad_input in
    quads or spread from runs), equal to the oracle and the same bits at 1 and 3 threads."""
    calls = _spy_quads(monkeypatch)
    for batch in batches:
        x, weight, index, bias, _, _ = conv_case((batch, 10, 12, 3, hw, (1, 1), 1, 0, 1, False), seed=batch)
        index = np.repeat(index[::block], block, axis=0)
        grad_out = np.random.default_rng(batch).standard_normal((batch, 12) + hw)
        expected = conv2d_oracle(x, weight, index, bias, (1, 1), (0, 0), (1, 1), grad_out)
        for dtype in DTYPES:
            results = {}
            for n in (1, 3):
                threads(n)
                results[n] = conv_all(*_cast(dtype, x, weight), index, *_cast(dtype, bias, grad_out),
                                      ((1, 1), (0, 0), (1, 1)))
            check(results[1], expected, dtype, f"1x1 {hw} batch {batch} block {block} {np.dtype(dtype)}")
            for one, other in zip(results[1], results[3]):
                assert np.array_equal(one, other)
    assert calls["forward"] == 4 * len(batches)
    assert calls["grad_input"] == (4 * len(batches) if block == 1 else 0)


@pytest.mark.parametrize("geometry", [(1, 0, 1), (1, 1, 1)])
def test_1x1_quads_split_between_threads_on_small_inputs(geometry, threads, monkeypatch):
    """One image of 5x5 is one tile: with 2 and 3 threads its quads are split into blocks,
    items of their own (some empty); the results keep their bits."""
    calls = _spy_quads(monkeypatch)
    x, weight, index, bias, _, _ = conv_case((1, 12, 22, 5, (5, 5), (1, 1), 1, 0, 1, False), seed=17)
    grad_out = np.random.default_rng(17).standard_normal((1, 22) + out_hw((5, 5), (1, 1), *geometry))
    expected = conv2d_oracle(x, weight, index, bias, *geometry, grad_out)
    results = {}
    for n in (1, 2, 3):
        threads(n)
        results[n] = conv_all(*_cast(np.float32, x, weight), index, *_cast(np.float32, bias, grad_out), geometry)
    check(results[1], expected, np.float32, f"1x1 {geometry}, one image")
    for n in (2, 3):
        for one, other in zip(results[1], results[n]):
            assert np.array_equal(one, other)
    assert calls == {"forward": 3, "grad_input": 3}


def test_1x1_in_quads_ignores_non_finite_values_nothing_reads(monkeypatch):
    """A forward quad's padding slots read channel 0 with weight 0, grad_input's padding terms a
    row of zeros: Inf in a channel no output reads (forward), or in an output no input
    gathers, must not reach any result."""
    calls = _spy_quads(monkeypatch)
    rng = np.random.default_rng(16)
    x = rng.standard_normal((2, 6, 5, 5))
    x[:, 0] = np.inf
    index = np.array([[1, 2], [3, 4], [5, 1], [2, 3], [4, 5]])  # no output reads channel 0
    weight = rng.standard_normal((5, 2, 1, 1))
    grad_out = rng.standard_normal((2, 5, 5, 5))
    unread = x.copy()
    unread[:, 0] = 0  # (the dense oracle would multiply the Inf by a zero weight)
    expected = conv2d_oracle(unread, weight, index, None, 1, 0, 1, grad_out)
    grad_inf = grad_out.copy()
    grad_inf[:, 0] = np.inf  # output 0 reads inputs 1 and 2 only
    for dtype in DTYPES:
        out = xkern.xconv2d(*_cast(dtype, x, weight), index, None, 1, 0, 1, backend="cpu")
        assert np.isfinite(out).all()
        assert_close(out, expected[0], dtype, "1x1, Inf in an unread channel")
        grad_x = xkern.xconv2d_backward(*_cast(dtype, grad_inf, x, weight), index, 1, 0, 1, backend="cpu")[0]
        assert np.isinf(grad_x[:, 1:3]).all()
        assert_close(grad_x[:, [0, 3, 4, 5]], expected[1][:, [0, 3, 4, 5]], dtype, "1x1 grad_x, Inf in output 0")
    assert calls == {"forward": 2, "grad_input": 2}


def test_block_expander_xlinear():
    x, weight, index, bias, grad_out = linear_case(37, 19, 16, 6, True, seed=4)
    index = np.repeat(index[::4], 4, axis=0)
    assert _cpu._rows_shared(index)
    expected = linear_oracle(x, weight, index, bias, grad_out)
    for dtype in DTYPES:
        check(linear_all(*_cast(dtype, x, weight), index, *_cast(dtype, bias, grad_out)),
              expected, dtype, f"xlinear block 4 {np.dtype(dtype)}")


def test_block_expander_bitwise_equal_at_1_and_2_threads(threads):
    x, weight, index, bias, grad_out, geometry = conv_case((3, 16, 24, 5, (11, 10), (3, 3), 2, 1, 1, False), seed=8)
    index = np.repeat(index[::4], 4, axis=0)  # stride 2: the shared-load path
    results = {}
    for n in (1, 2):
        threads(n)
        results[n] = conv_all(*_cast(np.float32, x, weight), index, *_cast(np.float32, bias, grad_out), geometry)
    for one, two in zip(results[1], results[2]):
        assert np.array_equal(one, two)


@pytest.mark.parametrize("n_out", [4, 12, 20])
def test_block_expander_1x1_bitwise_equal_across_threads(n_out, threads):
    """grad_weight's chunks own whole runs of shared outputs: with 1, 2 and 3 threads (runs
    split unevenly, or fewer runs than threads) every result is the same to the bit."""
    x, weight, index, bias, grad_out, geometry = conv_case((2, 10, n_out, 3, (9, 6), (1, 1), 1, 0, 1, False), seed=12)
    index = np.repeat(index[::4], 4, axis=0)
    results = {}
    for n in (1, 2, 3):
        threads(n)
        results[n] = conv_all(*_cast(np.float32, x, weight), index, *_cast(np.float32, bias, grad_out), geometry)
    check(results[1], conv2d_oracle(x, weight, index, bias, *geometry, grad_out), np.float32, "1x1 block 4")
    for n in (2, 3):
        for one, other in zip(results[1], results[n]):
            assert np.array_equal(one, other)


def test_scratch_buffers_are_reused_and_released():
    """The kernels keep their packing buffers for the thread's next call; results do
    not depend on it, and release_scratch frees them."""
    case = conv_case(CONV_CONFIGS["3x3 wide rows"], seed=3)
    cpu.release_scratch()
    first = conv_all(*case)
    kept = {key: buf.ctypes.data for key, buf in _cpu._scratch_local.buffers.items()}
    assert kept
    again = conv_all(*case)
    assert {key: buf.ctypes.data for key, buf in _cpu._scratch_local.buffers.items()} == kept
    cpu.release_scratch()
    assert not _cpu._scratch_local.buffers
    for results in (again, conv_all(*case)):
        for got, want in zip(results, first):
            np.testing.assert_array_equal(got, want)


def _content_keyed_terms(monkeypatch):
    """Make the kernels keep their term lists in their own cache, keyed on the index's
    contents, as for an index that is not xkern.ops' cached copy (a direct kernel call)."""
    monkeypatch.setattr(_graphs, "table", lambda index, key, make: None)


def test_term_lists_follow_an_index_changed_in_place(monkeypatch):
    """The kernels keep the term lists of the graphs they saw last, keyed on a sample of
    the index's entries.  An index edited in place between calls, also at an entry the
    sample skips, must give the new graph's results, and the old graph its own again."""
    _content_keyed_terms(monkeypatch)
    x, weight, index, bias, grad_out, geometry = conv_case((2, 9, 300, 4, (4, 3), (3, 3), 1, 1, 1, False), seed=5)
    assert index.size > _cpu.TERMS_CACHE_MIN  # small graphs are rebuilt every call
    original = index.copy()
    check(conv_all(x, weight, index, bias, grad_out, geometry),
          conv2d_oracle(x, weight, original, bias, *geometry, grad_out), np.float64, "first graph")
    flat = index.reshape(-1)
    step = max(1, flat.size // 64)
    assert step > 1  # entry 1 is then not in the key
    row = flat[:4].tolist()
    flat[1] = next(u for u in range(x.shape[1]) if u not in row)
    check(conv_all(x, weight, index, bias, grad_out, geometry),
          conv2d_oracle(x, weight, index, bias, *geometry, grad_out), np.float64, "edited in place")
    check(conv_all(x, weight, original, bias, grad_out, geometry),
          conv2d_oracle(x, weight, original, bias, *geometry, grad_out), np.float64, "first graph again")
    assert len(_cpu._terms_cache) <= _cpu.TERMS_CACHE_SIZE
    assert _cpu._terms_bytes == sum(_cpu._entry_bytes(e) for e in _cpu._terms_cache.values())


def test_term_cache_keeps_to_its_byte_budget(monkeypatch):
    """Past TERMS_CACHE_BYTES the least recently used graphs go (the newest always stays)."""
    _content_keyed_terms(monkeypatch)
    _cpu.clear_term_cache()
    monkeypatch.setattr(_cpu, "TERMS_CACHE_BYTES", 1)
    for seed in range(3):
        case = conv_case((1, 9, 300, 4, (4, 3), (3, 3), 1, 1, 1, False), seed=seed)
        check(conv_all(*case), conv2d_oracle(*case[:4], *case[5], case[4]), np.float64, f"graph {seed}")
        assert len(_cpu._terms_cache) == 1
        assert _cpu._terms_bytes == sum(_cpu._entry_bytes(e) for e in _cpu._terms_cache.values())
    _cpu.clear_term_cache()
    assert _cpu._terms_bytes == 0 and not _cpu._terms_cache


@pytest.mark.parametrize("edges", [40, 1200])  # rebuilt each call / through the term cache
def test_raw_kernels_reject_arrays_that_do_not_fit(edges):
    """The backend functions (no validation in front of them here) raise ValueError naming
    the argument where the arrays would make the kernels read or write out of bounds."""
    n_out = edges // 4
    x, weight, index, bias, grad_out, _ = conv_case((2, 9, n_out, 4, (6, 5), (3, 3), 1, 1, 1, False), seed=6)
    geometry = ((1, 1), (1, 1), (1, 1))
    out = np.empty_like(grad_out)
    gx, gw = np.empty_like(x), np.empty_like(weight)
    rev = reverse_adjacency(index, 9)

    def fwd(x=x, weight=weight, index=index, bias=bias, out=out, geometry=geometry):
        cpu.xconv2d_fwd(x, weight, index, bias, out, *geometry)

    def gin(grad_out=grad_out, index=index, rev=rev, grad_x=gx):
        cpu.xconv2d_bwd_input(grad_out, weight, index, rev, grad_x, *geometry)

    def gwt(index=index, grad_weight=gw):
        cpu.xconv2d_bwd_weight(grad_out, x, index, grad_weight, *geometry)

    fwd(), gin(), gwt()  # all fit
    too_big = index.copy()
    too_big.reshape(-1)[-1] = 9
    negative = index.copy()
    negative.reshape(-1)[1] = -1
    other = index.copy()  # another graph: its reverse adjacency does not fit index
    other.reshape(-1)[1] = (index.reshape(-1)[1] + 1) % 9
    cases = [
        (lambda: fwd(index=np.ascontiguousarray(index[1:])), "index has shape"),
        (lambda: fwd(index=too_big), r"index entries must lie in \[0, 9\)"),
        (lambda: fwd(index=negative), "entry 1 is -1"),
        (lambda: fwd(out=out[:, 1:].copy()), "out has shape"),
        (lambda: fwd(out=out[:1].copy()), "out has shape"),
        (lambda: fwd(bias=bias[1:].copy()), "bias has length"),
        (lambda: fwd(geometry=((0, 1), (1, 1), (1, 1))), "stride must be >= 1"),
        (lambda: fwd(geometry=((1, 1), (-1, 1), (1, 1))), "padding must be >= 0"),
        (lambda: fwd(geometry=((1, 1), (1,), (1, 1))), "padding must be a pair of ints"),
        (lambda: fwd(geometry=((1, 1), (0, 0), (4, 1)), out=np.empty((2, n_out, 0, 5))), "does not fit x's 6x5"),
        (lambda: gin(index=too_big), "index entries"),
        (lambda: gin(rev=reverse_adjacency(other, 9)), "rev is not the reverse adjacency"),
        (lambda: gin(rev=rev._replace(ptr=rev.ptr[:-1])), "rev must hold ptr of length 10"),
        (lambda: gin(grad_x=gx[:, :, 1:].copy()), "grad_out has shape"),
        (lambda: gwt(index=too_big), "index entries"),
        (lambda: gwt(grad_weight=np.empty((n_out + 1, 4, 3, 3))), "index has shape"),
        (lambda: fwd(weight=np.empty((n_out, 0, 3, 3)), index=np.empty((n_out, 0), np.int64)),
         r"weight must have shape \(Cout, D, kh, kw\) with every size >= 1"),
        (lambda: gwt(grad_weight=np.empty((n_out, 0, 3, 3)), index=np.empty((n_out, 0), np.int64)),
         "grad_weight must have shape"),
        (lambda: cpu.xconv2d_bwd_bias(grad_out, np.empty(n_out - 1)), "grad_bias has length"),
    ]
    for call, message in cases:
        # rev is read (and checked) when grad_input builds its term lists; a graph it has
        # cached lists for does not read rev again
        _cpu.clear_term_cache()
        with pytest.raises(ValueError, match=message):
            call()
    fwd(), gin(), gwt()  # and the good arrays still work afterwards


def test_grad_weight_checks_a_cached_graph_against_fewer_inputs():
    """grad_weight does not check the entries of xkern.ops' cached copy of a graph again (they
    were checked when it was cached), but does when x has fewer channels than that check was for."""
    x, weight, index, bias, grad_out, geometry = conv_case((2, 9, 8, 4, (6, 5), (1, 1), 1, 0, 1, False), seed=6)
    index[0, 0] = 8
    geometry = tuple(pair(v) for v in geometry)
    cached = _graphs.insert(index, 9)
    gw = np.empty_like(weight)
    cpu.xconv2d_bwd_weight(grad_out, x, cached, gw, *geometry)
    assert_close(gw, conv2d_oracle(x, weight, index, bias, *geometry, grad_out)[2], np.float64, "grad_weight")
    with pytest.raises(ValueError, match=r"index entries must lie in \[0, 8\) \(the input channels\); entry 0 is 8"):
        cpu.xconv2d_bwd_weight(grad_out, np.ascontiguousarray(x[:, :8]), cached, gw, *geometry)


def test_forward_plans_follow_the_settings(monkeypatch):
    """A forward's plan is kept beside the cached graph per geometry, and made again when a
    setting its choices depend on changes between calls."""
    x, weight, index, bias, grad_out, geometry = conv_case(CONV_CONFIGS["stride 2"])
    expected = conv2d_oracle(x, weight, index, bias, *geometry, grad_out)[0]
    _graphs.clear()
    taken = []
    real = _cpu._columns_fwd
    monkeypatch.setattr(_cpu, "_columns_fwd", lambda *args: taken.append(1) or real(*args))
    for setting, columns in (("never", 0), ("always", 1), ("never", 0), ("always", 1)):
        monkeypatch.setattr(_cpu, "COLUMNS", setting)
        taken.clear()
        for _ in range(2):
            assert_close(xkern.xconv2d(x, weight, index, bias, *geometry, backend="cpu"), expected,
                         np.float64, setting)
        assert len(taken) == 2 * columns, setting
    graph = _graphs.lookup(index, x.shape[1])
    plans = [key for key in _graphs._by_id[id(graph)].tables if key[0] == "forward plan"]
    assert len(plans) == 2  # one per setting


def test_settings_key_follows_assignments_and_mappings_are_read_only(monkeypatch):
    """_settings() keeps its key while no setting is reassigned, makes a new one when one is
    (a mapping too), and the mappings refuse changes in place, which the key would not see."""
    key = _cpu._settings()
    assert _cpu._settings() is key
    monkeypatch.setattr(_cpu, "WINO_MIN_PANELS", {4: 2, 2: 1})
    changed = _cpu._settings()
    assert changed != key and ((4, 2), (2, 1)) in changed
    monkeypatch.undo()
    assert _cpu._settings() == key
    for name in ("WINO_F4_VALUES", "WINO_MIN_PANELS", "WINO_MIN_COVER", "ROWS3_SPEED"):
        mapping = getattr(_cpu, name)
        with pytest.raises(TypeError):
            mapping[next(iter(mapping))] = 0


def test_raw_forward_rejects_arrays_it_cannot_read():
    """The forward takes ndarrays without a buffer export: what a typed memoryview refused
    (another dtype or byte order, misaligned data, a non-contiguous weight or index, a
    read-only out, not an array) is a ValueError or TypeError naming the argument."""
    x, weight, index, bias, grad_out, geometry = conv_case(CONV_CONFIGS["stride 2"])
    out = np.empty_like(grad_out)
    geometry = tuple(pair(v) for v in geometry)

    def fwd(**kw):
        args = dict(x=x, weight=weight, index=index, bias=bias, out=out)
        args.update(kw)
        _cpu.xconv2d_fwd(*args.values(), *geometry, 1)

    def misaligned(a):
        raw = np.zeros(a.size * a.itemsize + 1, np.uint8)
        view = raw[1:].view(a.dtype).reshape(a.shape)
        view[...] = a
        return view

    read_only = out.copy()
    read_only.setflags(write=False)
    cases = [(TypeError, "x must be a numpy array", dict(x=x.tolist())),
             (ValueError, "weight has dtype float32", dict(weight=weight.astype(np.float32))),
             (ValueError, "x has dtype >f8", dict(x=x.astype(">f8"))),
             (ValueError, "bias is not aligned", dict(bias=misaligned(bias))),
             (ValueError, "weight must be C-contiguous", dict(weight=np.asfortranarray(weight))),
             (ValueError, "index has dtype int32", dict(index=index.astype(np.int32))),
             (ValueError, "index must be 2-D", dict(index=index.reshape(-1))),
             (ValueError, "out is read-only", dict(out=read_only)),
             (ValueError, "out has dtype float32", dict(out=out.astype(np.float32)))]
    for exc, message, kw in cases:
        with pytest.raises(exc, match=message):
            fwd(**kw)
    fwd()
    assert_close(out, conv2d_oracle(x, weight, index, bias, *geometry, grad_out)[0], np.float64, "good arrays")


def test_small_forwards_at_any_thread_count(monkeypatch):
    """Forwards under SERIAL_MACS multiply-adds run on one thread, whatever was asked: the same
    bits as the threaded split (results never depend on the thread count)."""
    x, weight, index, bias, grad_out, geometry = conv_case(CONV_CONFIGS["stride 2"])
    geometry = tuple(pair(v) for v in geometry)
    got = {}
    for serial in (0, 1 << 30):
        monkeypatch.setattr(_cpu, "SERIAL_MACS", serial)
        for n in (1, 3):
            out = np.empty_like(grad_out)
            _cpu.xconv2d_fwd(x, weight, index, bias, out, *geometry, n)
            got[serial, n] = out
    assert all(np.array_equal(out, got[0, 1]) for out in got.values())
    assert_close(got[0, 1], conv2d_oracle(x, weight, index, bias, *geometry, grad_out)[0], np.float64, "out")


def test_prepared_forward_takes_only_its_geometry(monkeypatch):
    """_cpu.PreparedForward (behind xkern.ops.PreparedXconv2d) gives xconv2d_fwd's bits for
    arrays of the geometry it checked, None for any other (the caller then takes the full
    checks), follows the settings, and refuses a bad geometry by name when made."""
    x, weight, index, bias, grad_out, geometry = conv_case(CONV_CONFIGS["stride 2"])
    geometry = tuple(pair(v) for v in geometry)
    index = _graphs.insert(np.ascontiguousarray(index, np.int64), x.shape[1])
    run = _cpu.PreparedForward(x, weight, index, bias, *geometry)
    want = np.empty_like(grad_out)
    _cpu.xconv2d_fwd(x, weight, index, bias, want, *geometry, 1)
    for threads in (1, 2):
        got = run(x, weight, bias, threads)
        assert got.flags.c_contiguous and got.dtype == x.dtype
        np.testing.assert_array_equal(got, want)
    wider = np.zeros(x.shape[:3] + (x.shape[3] + 1,))
    wider[..., :-1] = x
    others = [(x.astype(np.float32), weight, bias), (wider[..., :-1], weight, bias), (x[:1], weight, bias),
              (x, np.asfortranarray(weight), bias), (x, weight[:, :1], bias), (x, weight, None),
              (x, weight, bias[:-1]), (x.tolist(), weight, bias), (x, weight, bias.astype(">f8"))]
    for args in others:
        assert run(*args, 1) is None
    monkeypatch.setattr(_cpu, "COLUMNS", "never" if _cpu.COLUMNS == "always" else "always")
    _cpu.xconv2d_fwd(x, weight, index, bias, want, *geometry, 1)
    np.testing.assert_array_equal(run(x, weight, bias, 1), want)
    own = np.array(index)  # a caller's writeable graph: the call keeps it as it was
    run_own = _cpu.PreparedForward(x, weight, own, bias, *geometry)
    own[...] = own[::-1]
    np.testing.assert_array_equal(run_own(x, weight, bias, 1), run(x, weight, bias, 1))
    with pytest.raises(ValueError, match="bias"):
        _cpu.PreparedForward(x, weight, index, bias[:-1], *geometry)
    with pytest.raises(ValueError, match="stride"):
        _cpu.PreparedForward(x, weight, index, bias, (0, 1), geometry[1], geometry[2])
    with pytest.raises(ValueError, match="output would be empty|x"):
        _cpu.PreparedForward(x[:, :, :1, :1], weight, index, bias, (1, 1), (0, 0), (9, 9))
