"""The cpu backend's Winograd F(2x2, 3x3) path (stride-1 undilated 3x3 forward and
grad_input, src/winograd_impl.h) against the float64 oracle.  By default it runs only
from WINO_MIN_TERMS terms per output; the `winograd` fixture lowers that to 1 so the
small test layers take it, and the oracle suite below also runs with it switched off."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import xkern
from testing import EXAMPLES, assert_close, conv2d_oracle, random_index

pytest.importorskip("xkern.backends.cpu", reason="the compiled CPU backend is not built")
from xkern.backends import _cpu  # noqa: E402  (after the skip: needs the extension)

DTYPES = (np.float64, np.float32)


@pytest.fixture
def winograd(monkeypatch):
    """Every stride-1 3x3 conv with at least one term takes the Winograd kernels."""
    monkeypatch.setattr(_cpu, "WINOGRAD", True)
    monkeypatch.setattr(_cpu, "WINO_MIN_TERMS", 1)


def _case(batch, n_in, n_out, degree, hw, padding, repeats=False, seed=0, block=1):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (batch, n_in) + hw)
    weight = rng.standard_normal((n_out, degree, 3, 3))
    index = random_index(rng, n_out // block, n_in, degree, repeats)
    index = np.repeat(index, block, axis=0)
    bias = rng.standard_normal(n_out)
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    grad_out = rng.standard_normal((batch, n_out, hw[0] + 2 * ph - 2, hw[1] + 2 * pw - 2))
    return x, weight, index, bias, grad_out, (1, padding, 1)


def _run(x, weight, index, bias, grad_out, geometry, dtype):
    xd, wd, bd, gd = (a.astype(dtype) for a in (x, weight, bias, grad_out))
    out = xkern.xconv2d(xd, wd, index, bd, *geometry, backend="cpu")
    return (out,) + tuple(xkern.xconv2d_backward(gd, xd, wd, index, *geometry, backend="cpu"))


def _check(case, dtype, what):
    expected = conv2d_oracle(*case[:4], *case[5], case[4])
    for name, got, want in zip(("out", "grad_x", "grad_weight", "grad_bias"), _run(*case, dtype), expected):
        assert_close(got, want, dtype, f"{what} {name}")


# (batch, Cin, Cout, D, (H, W), padding)
CASES = {
    "pad 1, even": (2, 6, 5, 3, (8, 10), 1),
    "pad 1, odd sizes": (3, 5, 7, 4, (9, 7), 1),
    "pad 0": (2, 4, 6, 2, (7, 8), 0),
    "pad 2": (1, 5, 3, 5, (5, 6), 2),
    "pad (2, 0)": (2, 4, 5, 3, (6, 9), (2, 0)),
    "pad (0, 1), one output row": (2, 3, 4, 2, (3, 11), (0, 1)),
    "1x1 image, pad 1": (4, 3, 3, 2, (1, 1), 1),
    "one column": (2, 4, 4, 3, (9, 1), 1),
    "D = 1": (2, 6, 4, 1, (6, 6), 1),
    "one image, many tiles": (1, 3, 40, 3, (31, 29), 1),
}


@pytest.mark.parametrize("name", CASES)
def test_winograd_matches_oracle(name, winograd):
    case = _case(*CASES[name], seed=3)
    for dtype in DTYPES:
        _check(case, dtype, f"{name} {np.dtype(dtype)}")


def test_winograd_repeated_index_and_block_expander(winograd):
    """Repeated entries add up; rows shared in blocks of 4 take the shared-load tiles."""
    _check(_case(2, 6, 5, 4, (7, 8), 1, repeats=True, seed=5), np.float64, "repeated")
    for dtype in DTYPES:
        _check(_case(3, 8, 16, 3, (9, 10), 1, seed=6, block=4), dtype, f"block 4 {np.dtype(dtype)}")


def test_winograd_several_groups(winograd, monkeypatch):
    """One image per packed group (the batch runs as several groups)."""
    monkeypatch.setattr(_cpu, "WINO_PACK_BYTES", 1)
    _check(_case(5, 4, 6, 3, (8, 7), 1, seed=7), np.float64, "groups of one")


def test_winograd_in_channel_blocks(winograd, monkeypatch):
    monkeypatch.setattr(_cpu, "BLOCK_BYTES", 1)
    monkeypatch.setattr(_cpu, "BLOCK_TERMS", 1)
    for dtype in DTYPES:
        _check(_case(2, 12, 7, 6, (6, 9), 1, seed=8), dtype, f"channel blocks {np.dtype(dtype)}")


def test_winograd_bitwise_equal_at_1_and_2_threads(winograd):
    case = _case(4, 24, 20, 6, (15, 14), 1, seed=2)
    results = {}
    try:
        for n in (1, 2):
            xkern.set_num_threads(n)
            results[n] = _run(*case, np.float32) + _run(*case, np.float64)
    finally:
        xkern.set_num_threads(None)
    for one, two in zip(results[1], results[2]):
        assert np.array_equal(one, two)


def test_winograd_is_taken_from_the_threshold(monkeypatch):
    """WINO_MIN_TERMS decides (forward: terms per output; grad_input: per input), and
    both paths agree with each other to rounding on a layer above the threshold."""
    assert _cpu._winograd((3, 3), (1, 1), (1, 1), _cpu.WINO_MIN_TERMS)
    assert not _cpu._winograd((3, 3), (1, 1), (1, 1), _cpu.WINO_MIN_TERMS - 1)
    assert not _cpu._winograd((3, 3), (2, 2), (1, 1), 10**6)
    assert not _cpu._winograd((3, 3), (1, 1), (2, 1), 10**6)
    assert not _cpu._winograd((5, 5), (1, 1), (1, 1), 10**6)
    case = _case(2, _cpu.WINO_MIN_TERMS + 8, 16, _cpu.WINO_MIN_TERMS, (6, 6), 1, seed=9)
    fast = _run(*case, np.float32)
    monkeypatch.setattr(_cpu, "WINOGRAD", False)
    direct = _run(*case, np.float32)
    for a, b in zip(fast, direct):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())
    _check(case, np.float32, "above the threshold")


@st.composite
def configs(draw):
    n_in = draw(st.integers(1, 8))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    hw = tuple(draw(st.integers(max(1, 3 - 2 * p), 9)) for p in padding)
    return dict(batch=draw(st.integers(1, 3)), n_in=n_in, n_out=draw(st.integers(1, 8)),
                degree=draw(st.integers(1, n_in)), hw=hw, padding=padding, repeats=draw(st.booleans()),
                seed=draw(st.integers(0, 2**32 - 1)))


@pytest.mark.parametrize("use", [True, False], ids=["winograd", "direct"])
@settings(max_examples=EXAMPLES, deadline=None)
@given(cfg=configs())
def test_stride1_3x3_oracle(use, cfg):
    """Random stride-1 3x3 configs through both paths (forward and every gradient)."""
    saved = _cpu.WINOGRAD, _cpu.WINO_MIN_TERMS
    _cpu.WINOGRAD, _cpu.WINO_MIN_TERMS = use, 1
    try:
        case = _case(cfg["batch"], cfg["n_in"], cfg["n_out"], cfg["degree"], cfg["hw"], cfg["padding"],
                     cfg["repeats"], cfg["seed"])
        for dtype in DTYPES:
            _check(case, dtype, f"{cfg} {np.dtype(dtype)}")
    finally:
        _cpu.WINOGRAD, _cpu.WINO_MIN_TERMS = saved
