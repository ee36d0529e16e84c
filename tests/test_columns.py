"""The cpu backend's columns path: forwards and grad_inputs of strided convs and of small maps
as 1x1 quads over the image columns, their rows in blocks (src/cpu/columns.pxi: _columns,
xk_quad_columns), and their grad_weights as dot products over the columns (_columns_wgrad:
xk_dot_columns_taps for k x k kernels, xk_dot_columns for 1x1)."""
import numpy as np
import pytest

import xkern
from testing import assert_close, conv2d_oracle, conv_case, random_index

_cpu = pytest.importorskip("xkern.backends._cpu", reason="the compiled CPU backend is not built")

DTYPES = (np.float32, np.float64)

# (batch, Cin, Cout, D, (H, W), (kh, kw), stride, padding, dilation, repeats)
CONFIGS = {
    "3x3 stride 2": (3, 10, 13, 4, (11, 9), (3, 3), 2, 1, 1, False),
    "3x3 map 3x3": (5, 12, 9, 6, (3, 3), (3, 3), 1, 1, 1, False),
    "3x3 map 6x6, repeats": (2, 8, 16, 5, (6, 6), (3, 3), 1, 1, 1, True),
    "1x1 stride 2": (4, 16, 20, 8, (9, 7), (1, 1), 2, 0, 1, False),
    "1x1 map 3x4": (3, 24, 7, 9, (3, 4), (1, 1), 1, 0, 1, False),
    "5x3 stride (2, 3) dilation 2": (2, 6, 5, 3, (13, 12), (5, 3), (2, 3), (3, 1), 2, False),
    "7x7 stride 2 pad 3": (1, 3, 8, 2, (16, 16), (7, 7), 2, 3, 1, False),
    "2x2 map 4x5": (3, 9, 6, 5, (4, 5), (2, 2), 1, 0, 1, False),
}
PATHS = ("_columns_fwd", "_columns_bwd_input", "_columns_bwd_weight")


@pytest.fixture
def spy(monkeypatch):
    """Records the forwards, grad_inputs and grad_weights that take the columns path."""
    calls = []
    for name in PATHS:
        def counted(*args, real=getattr(_cpu, name), name=name):
            calls.append(name)
            return real(*args)
        monkeypatch.setattr(_cpu, name, counted)
    return calls


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("block_bytes", [1 << 9, 24 << 10])  # many row blocks (some quads empty) / one or few
def test_columns_match_the_oracle(name, block_bytes, monkeypatch, spy):
    """The forward and grad_input by the columns path, float32 and float64, bias or none."""
    monkeypatch.setattr(_cpu, "COLUMNS", "always")
    monkeypatch.setattr(_cpu, "COLUMNS_BLOCK_BYTES", block_bytes)
    x, weight, index, bias, grad_out, geometry = conv_case(CONFIGS[name], seed=len(name))
    for b in (bias, None):
        want = conv2d_oracle(x, weight, index, b, *geometry, grad_out)
        for dtype in DTYPES:
            got = xkern.xconv2d(x.astype(dtype), weight.astype(dtype), index,
                                None if b is None else b.astype(dtype), *geometry, backend="cpu")
            assert_close(got, want[0], dtype, f"{name} bias {b is not None} {np.dtype(dtype)} out")
    for dtype in DTYPES:
        grad_x = xkern.xconv2d_backward(grad_out.astype(dtype), x.astype(dtype), weight.astype(dtype), index,
                                        *geometry, backend="cpu", grads=("input",))[0]
        assert_close(grad_x, want[1], dtype, f"{name} {np.dtype(dtype)} grad_x")
    assert spy == ["_columns_fwd"] * 4 + ["_columns_bwd_input"] * 2


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("tiles", ["one", "many"])
def test_columns_weight_grad_matches_the_oracle(name, tiles, monkeypatch, spy):
    """grad_weight by the columns path, float32 and float64: in one tile of positions and one
    block of rows, or in many tiles (and for 1x1 many row blocks), which sum in turn."""
    monkeypatch.setattr(_cpu, "COLUMNS", "always")
    if tiles == "many":
        monkeypatch.setattr(_cpu, "COLUMNS_WGRAD_G_BYTES", 1)    # the smallest tiles: 4 vectors
        monkeypatch.setattr(_cpu, "COLUMNS_WGRAD_TILE", 8)
        monkeypatch.setattr(_cpu, "COLUMNS_BLOCK_BYTES", 1 << 7)
    x, weight, index, bias, grad_out, geometry = conv_case(CONFIGS[name], seed=len(name) + 1)
    want = conv2d_oracle(x, weight, index, bias, *geometry, grad_out)[2]
    for dtype in DTYPES:
        grad_w = xkern.xconv2d_backward(grad_out.astype(dtype), x.astype(dtype), weight.astype(dtype), index,
                                        *geometry, backend="cpu", grads=("weight",))[1]
        assert_close(grad_w, want, dtype, f"{name} {np.dtype(dtype)} grad_weight")
    assert spy == ["_columns_bwd_weight"] * 2


def test_columns_weight_grad_ignores_non_finite_padding(monkeypatch):
    """The image columns hold only the pixels some output reads, and zeros past the real
    positions (as grad_out's rows do): Inf or NaN pixels that no output reads add nothing."""
    monkeypatch.setattr(_cpu, "COLUMNS", "always")
    # 3x3, stride 2, no padding on 6x6 maps: 2x2 outputs read rows and columns 0-4, never 5
    x, weight, index, bias, grad_out, geometry = conv_case((2, 6, 5, 3, (6, 6), (3, 3), 2, 0, 1, False), 4)
    x[:, :, 5, :] = np.inf
    x[:, :, :, 5] = np.nan
    want = conv2d_oracle(np.nan_to_num(x, nan=0.0, posinf=0.0), weight, index, bias, *geometry, grad_out)[2]
    got = xkern.xconv2d_backward(grad_out, x, weight, index, *geometry, backend="cpu", grads=("weight",))[1]
    assert_close(got, want, np.float64, "grad_weight with Inf / NaN in unread pixels")


def test_columns_are_bitwise_equal_at_any_thread_count(threads, monkeypatch, spy):
    monkeypatch.setattr(_cpu, "COLUMNS_BLOCK_BYTES", 1 << 10)
    results = {}
    for n in (1, 2, 3, 5):
        threads(n)
        results[n] = []
        for name in ("3x3 stride 2", "3x3 map 3x3", "1x1 stride 2"):
            x, weight, index, _, _, geometry = conv_case(CONFIGS[name], 3)
            for dtype in DTYPES:
                x_, w_ = x.astype(dtype), weight.astype(dtype)
                out = xkern.xconv2d(x_, w_, index, None, *geometry, backend="cpu")
                results[n] += [out, *xkern.xconv2d_backward(out, x_, w_, index, *geometry, backend="cpu",
                                                            grads=("input", "weight"))[:2]]
    for n in (2, 3, 5):
        for one, other in zip(results[1], results[n]):
            assert np.array_equal(one, other)
    assert spy.count("_columns_bwd_input") == 4 * 3 * 2 and spy.count("_columns_fwd") == 4 * 2 * 2
    assert spy.count("_columns_bwd_weight") == 4 * 3 * 2


@pytest.mark.parametrize("name, taken", [("3x3 stride 2", PATHS),
                                         ("3x3 map 3x3", PATHS),
                                         ("1x1 stride 2", PATHS[1:]),
                                         ("1x1 map 3x4", PATHS[2:]),
                                         ("3x3 map 6x6, repeats", ())])
def test_auto_takes_the_columns_path_for_strides_and_small_maps(name, taken, spy):
    x, weight, index, bias, _, geometry = conv_case(CONFIGS[name])
    x, weight, bias = (a.astype(np.float32) for a in (x, weight, bias))
    out = xkern.xconv2d(x, weight, index, bias, *geometry, backend="cpu")
    xkern.xconv2d_backward(np.ones_like(out), x, weight, index, *geometry, backend="cpu", grads=("input", "weight"))
    assert spy == list(taken)


def test_auto_leaves_large_stride_1_maps_and_oversized_columns(monkeypatch, spy):
    # stride-1 3x3 on 16x16 maps: Winograd or the row tiles; 1x1 stride 1 on 8x8: in place
    for cfg in [(2, 8, 8, 4, (16, 16), (3, 3), 1, 1, 1, False), (2, 8, 8, 4, (8, 8), (1, 1), 1, 0, 1, False)]:
        x, weight, index, bias, grad_out, geometry = conv_case(cfg)
        got = xkern.xconv2d(x, weight, index, bias, *geometry, backend="cpu")
        assert_close(got, conv2d_oracle(x, weight, index, bias, *geometry, grad_out)[0], np.float64, str(cfg))
    assert spy == []
    monkeypatch.setattr(_cpu, "COLUMNS_MAX_BYTES", 1)
    x, weight, index, bias, grad_out, geometry = conv_case(CONFIGS["3x3 stride 2"])
    got = xkern.xconv2d(x, weight, index, bias, *geometry, backend="cpu")
    assert_close(got, conv2d_oracle(x, weight, index, bias, *geometry, grad_out)[0], np.float64, "columns too large")
    assert spy == []


def test_column_terms_cover_every_edge_once():
    """Each (output, edge, tap) appears in exactly one slot of its output, in its row's block,
    pointing at its row; the other slots read the block's zero row with weight entry -1."""
    rng = np.random.default_rng(7)
    n_in, n_out, degree, kk, width, block_rows = 11, 10, 4, 9, 24, 7
    index = random_index(rng, n_out, n_in, degree, True)
    off, wsrc, ptr, row0 = _cpu._column_terms(index, n_in, kk, width, block_rows)
    n_quads = -(-n_out // 4)
    nb = row0.shape[0] - 1
    assert nb == -(-n_in * kk // block_rows) and row0[-1] == n_in * kk
    ptr = ptr.reshape(nb, n_quads + 1)
    seen = np.zeros(n_out * degree * kk, int)
    for b in range(nb):
        rows = row0[b + 1] - row0[b]
        for q in range(n_quads):
            for term in range(ptr[b, q], ptr[b, q + 1]):
                for o in range(4):
                    slot = term * 4 + o
                    e = wsrc[slot]
                    if e < 0:
                        assert off[slot] == rows * width
                        continue
                    v, rest = divmod(e, degree * kk)
                    i, t = divmod(rest, kk)
                    assert v == q * 4 + o
                    assert off[slot] == (index[v, i] * kk + t - row0[b]) * width
                    seen[e] += 1
    assert (seen == 1).all()


def test_tap_terms_group_every_edge_once():
    """Channel u's groups hold each edge (v, i) with index[v, i] = u once, outputs in order,
    as (output v, weight entry (v * D + i) * kk); unused slots: the zero row Cout and -1."""
    rng = np.random.default_rng(8)
    n_in, n_out, degree, kk = 13, 10, 4, 9
    index = random_index(rng, n_out, n_in, degree, True)
    gptr, sv, sw = _cpu._tap_terms(index, n_in, kk)
    slots = _cpu.XK_TAP_OUTS if hasattr(_cpu, "XK_TAP_OUTS") else 4
    assert gptr[0] == 0 and sv.shape == sw.shape == (gptr[-1] * slots,)
    seen = np.zeros(n_out * degree, int)
    for u in range(n_in):
        members = []
        for j in range(gptr[u] * slots, gptr[u + 1] * slots):
            if sw[j] < 0:
                assert sv[j] == n_out
                continue
            v, i = divmod(sw[j] // kk, degree)
            assert sw[j] % kk == 0 and sv[j] == v and index[v, i] == u
            members.append(v)
            seen[v * degree + i] += 1
        assert members == sorted(members)
        assert gptr[u + 1] - gptr[u] == -(-np.count_nonzero(index == u) // slots)
    assert (seen == 1).all()


def test_dot_terms_cover_every_edge_once():
    """Output v's terms in block b are its (channel, tap) rows in that block, in order, each
    (v, i, t) once with weight entry (v * D + i) * kk + t."""
    rng = np.random.default_rng(9)
    n_in, n_out, degree, kk, block_rows = 11, 7, 5, 4, 6
    index = random_index(rng, n_out, n_in, degree, True)
    rows, wpos, ptr = _cpu._dot_terms(index, n_in, kk, block_rows)
    nb = -(-n_in * kk // block_rows)
    ptr = ptr.reshape(nb, n_out + 1)
    seen = np.zeros(n_out * degree * kk, int)
    for b in range(nb):
        for v in range(n_out):
            terms = range(ptr[b, v], ptr[b, v + 1])
            assert list(rows[terms]) == sorted(rows[terms])
            for j in terms:
                assert b * block_rows <= rows[j] < (b + 1) * block_rows
                w, rest = divmod(wpos[j], degree * kk)
                i, t = divmod(rest, kk)
                assert w == v and rows[j] == index[v, i] * kk + t
                seen[wpos[j]] += 1
    assert ptr[-1, -1] == rows.shape[0] and (seen == 1).all()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_im2col_by_offsets_equals_im2col_by_rows(name, monkeypatch):
    """The two ways of writing the image columns (per position: xk_im2col_table; per row:
    xk_im2col) agree bit for bit, zero tail included, at 1 and 3 threads."""
    x, weight, _, _, grad_out, (stride, padding, dilation) = conv_case(CONFIGS[name], 5)
    kernel, out_hw = weight.shape[2:], grad_out.shape[2:]
    pair = lambda v: (v, v) if np.isscalar(v) else tuple(v)  # noqa: E731
    n = x.shape[0] * out_hw[0] * out_hw[1]
    cols = []
    for table_max_wo, chunks in ((0, 1), (1 << 20, 1), (1 << 20, 3)):
        monkeypatch.setattr(_cpu, "IM2COL_TABLE_MAX_WO", table_max_wo)
        col = np.full((x.shape[1] * kernel[0] * kernel[1], n + 5), np.nan)
        _cpu._im2col(x, tuple(kernel), pair(stride), pair(padding), pair(dilation), tuple(out_hw), n + 5, col, chunks)
        cols.append(col)
    assert not np.isnan(cols[0]).any() and (cols[0][:, n:] == 0).all()
    assert np.array_equal(cols[0], cols[1]) and np.array_equal(cols[0], cols[2])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_col2im_is_the_adjoint_of_im2col(name):
    """<im2col(x), gcol> = <x, col2im(gcol)> in float64 for every config, the zero tail of
    gcol's rows ignored, into a contiguous grad_x and into one with strided rows and columns
    (a view of a larger array), at 1 and 3 threads bit for bit."""
    x, weight, _, _, grad_out, (stride, padding, dilation) = conv_case(CONFIGS[name], 7)
    kernel, out_hw = tuple(weight.shape[2:]), tuple(grad_out.shape[2:])
    pair = lambda v: (v, v) if np.isscalar(v) else tuple(v)  # noqa: E731
    geometry = (pair(stride), pair(padding), pair(dilation), out_hw)
    n = x.shape[0] * out_hw[0] * out_hw[1]
    rows = x.shape[1] * kernel[0] * kernel[1]
    col = np.full((rows, n + 5), np.nan)
    _cpu._im2col(x, kernel, *geometry, n + 5, col, 1)
    gcol = np.random.default_rng(1).standard_normal((rows, n + 5))
    want = float(np.sum(col[:, :n] * gcol[:, :n]))
    got = []
    for chunks in (1, 3):
        gx = np.full(x.shape, np.nan)
        _cpu._col2im(gcol, gx, kernel, *geometry, chunks)
        wide = np.full(x.shape[:2] + (2 * x.shape[2] + 1, 3 * x.shape[3]), np.nan)
        view = wide[:, :, 1::2, ::3]
        _cpu._col2im(gcol, view, kernel, *geometry, chunks)
        assert np.array_equal(view, gx) and np.isnan(wide[:, :, ::2]).all() and np.isnan(wide[:, :, :, 1::3]).all()
        got.append(gx)
    assert np.array_equal(got[0], got[1])
    np.testing.assert_allclose(float(np.sum(x * got[0])), want, rtol=1e-12)


@pytest.mark.parametrize("hw, taken, block_bytes, block", [
    ((12, 12), True, None, 1), ((16, 16), True, None, 1), ((32, 32), True, None, 1),
    ((32, 32), True, 3 << 10, 1),   # blocks of 3 rows: 20 channels in 7, the last short
    ((8, 8), True, None, 1), ((4, 4), False, None, 1), ((33, 32), False, None, 1), ((11, 13), False, None, 1),
    ((16, 16), False, None, 4)])    # a block expander keeps the packed planes
def test_1x1_weight_grad_in_place_matches_the_oracle(hw, taken, block_bytes, block, monkeypatch):
    """Stride-1 1x1 grad_weights of random expanders on maps of 64-1024 positions (whole
    vectors) read x and grad_out in place (_dots_in_place: each block of rows copied to a
    panel); others keep the packed planes.  Both against the oracle, at 1 and 3 threads bit
    for bit."""
    if block_bytes:
        monkeypatch.setattr(_cpu, "COLUMNS_BLOCK_BYTES", block_bytes)
    calls = []
    monkeypatch.setattr(_cpu, "_dots_in_place", lambda *a, real=_cpu._dots_in_place: calls.append(1) or real(*a))
    x, weight, index, bias, grad_out, geometry = conv_case((3, 20, 9 if block == 1 else 8, 7, hw, (1, 1), 1, 0, 1,
                                                            True), 6)
    if block > 1:
        index = np.repeat(index[::block], block, axis=0)
    want = conv2d_oracle(x, weight, index, bias, *geometry, grad_out)[2]
    for dtype in DTYPES:
        got = []
        for n in (1, 3):
            xkern.set_num_threads(n)
            try:
                got.append(xkern.xconv2d_backward(grad_out.astype(dtype), x.astype(dtype), weight.astype(dtype), index,
                                                  *geometry, backend="cpu", grads=("weight",))[1])
            finally:
                xkern.set_num_threads(None)
        assert_close(got[0], want, dtype, f"{hw} {np.dtype(dtype)} grad_weight")
        assert np.array_equal(got[0], got[1])
    assert len(calls) == (4 if taken else 0)


def test_columns_rule_limits():
    """The forward of a strided k x k conv takes the columns path into maps of up to
    COLUMNS_MAX_STRIDED_HW outputs; stride-1 maps only up to COLUMNS_MAX_HW; never past
    COLUMNS_MAX_BYTES of image columns."""
    side = int(_cpu.COLUMNS_MAX_STRIDED_HW ** 0.5)
    assert _cpu._columns((3, 3), (2, 2), 64, (side, side), 16, 4, True)
    assert not _cpu._columns((3, 3), (2, 2), 64, (side + 1, side + 1), 1, 4, True)
    assert not _cpu._columns((1, 1), (2, 2), 64, (6, 6), 16, 4, True)          # strided 1x1: planes
    assert _cpu._columns((1, 1), (2, 2), 64, (30, 30), 16, 4, False)           # its grad_input: columns
    assert _cpu._columns((3, 3), (1, 1), 64, (5, 5), 16, 4, True)
    assert not _cpu._columns((3, 3), (1, 1), 64, (6, 6), 16, 4, True)
    assert not _cpu._columns((3, 3), (2, 2), 1 << 16, (side, side), 64, 4, True)  # too many bytes
