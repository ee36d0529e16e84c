"""xkern.nn: XConv2d / XLinear against the oracle with their own weight and graph, their
graph and init, checkpoints, copies, and expanderize on a small CNN."""
import copy
import io
import math
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.func import functional_call  # noqa: E402

import xkern.graphs  # noqa: E402
from xkern.nn import XConv2d, XLinear, expanderize  # noqa: E402
from testing import conv2d_oracle, linear_oracle  # noqa: E402

F64 = torch.float64


def _np(t):
    return None if t is None else t.detach().numpy()


CONV_LAYERS = [
    dict(args=(6, 5, 3), kw=dict(padding=1, degree=2, seed=0)),
    dict(args=(8, 4, (3, 2)), kw=dict(stride=(2, 1), padding=(0, 1), dilation=(1, 2), bias=False,
                                      compression=4, method="biregular", seed=1)),
    dict(args=(4, 6, 1), kw=dict(degree=2, block=3, seed=2)),
]


@pytest.mark.parametrize("layer", CONV_LAYERS, ids=["3x3", "strided-dilated-nobias", "1x1-block"])
def test_xconv2d_matches_the_oracle(layer):
    m = XConv2d(*layer["args"], **layer["kw"]).double()
    x = torch.randn(2, m.in_channels, 7, 6, dtype=F64, requires_grad=True)
    out = m(x)
    grad_out = torch.randn(out.shape, dtype=F64)
    out.backward(grad_out)
    expected = conv2d_oracle(_np(x), _np(m.weight), m.index.numpy(), _np(m.bias), m.stride, m.padding,
                             m.dilation, grad_out.numpy())
    got = [_np(out), _np(x.grad), _np(m.weight.grad), None if m.bias is None else _np(m.bias.grad)]
    for what, g, want in zip(("out", "grad_x", "grad_weight", "grad_bias"), got, expected):
        if g is not None:
            np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-10, err_msg=what)


def test_xlinear_matches_the_oracle_on_any_leading_shape():
    m = XLinear(10, 7, compression=3, seed=5).double()
    x = torch.randn(2, 3, 10, dtype=F64, requires_grad=True)
    out = m(x)
    assert out.shape == (2, 3, 7)
    grad_out = torch.randn(out.shape, dtype=F64)
    out.backward(grad_out)
    expected = linear_oracle(_np(x).reshape(6, 10), _np(m.weight), m.index.numpy(), _np(m.bias),
                             grad_out.numpy().reshape(6, 7))
    got = [_np(out).reshape(6, 7), _np(x.grad).reshape(6, 10), _np(m.weight.grad), _np(m.bias.grad)]
    for what, g, want in zip(("out", "grad_x", "grad_weight", "grad_bias"), got, expected):
        np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-10, err_msg=what)
    assert m(torch.randn(10, dtype=F64)).shape == (7,)


def test_modules_pass_gradcheck():
    conv = XConv2d(4, 3, 2, stride=2, padding=1, degree=2, seed=3).double()
    lin = XLinear(5, 4, degree=3, seed=4).double()
    for m, x in ((conv, torch.randn(1, 4, 3, 4, dtype=F64)), (lin, torch.randn(3, 5, dtype=F64))):
        params = (x.requires_grad_(), m.weight.detach().clone().requires_grad_(),
                  m.bias.detach().clone().requires_grad_())

        def f(x, weight, bias, m=m):
            return functional_call(m, {"weight": weight, "bias": bias, "index": m.index}, (x,))

        assert torch.autograd.gradcheck(f, params)


# ---- graph, parameters, init -------------------------------------------------------

def test_graph_comes_from_xkern_graphs_expander():
    m = XConv2d(12, 8, 3, compression=4, method="biregular", seed=11, block=2)
    assert m.degree == 3 and m.index.dtype == torch.int64
    np.testing.assert_array_equal(m.index.numpy(),
                                  xkern.graphs.expander(12, 8, 3, method="biregular", seed=11, block=2))
    assert m.weight.shape == (8, 3, 3, 3) and m.bias.shape == (8,)
    lin = XLinear(9, 4, bias=False, degree=2, seed=1)
    np.testing.assert_array_equal(lin.index.numpy(), xkern.graphs.expander(9, 4, 2, seed=1))
    assert lin.weight.shape == (4, 2) and lin.bias is None
    assert XLinear(5, 3, compression=10).degree == 1  # max(1, 5 // 10)


@pytest.mark.parametrize("kw, exc, text", [
    (dict(), ValueError, "exactly one of degree and compression"),
    (dict(degree=2, compression=2), ValueError, "exactly one of degree and compression"),
    (dict(compression=0.5), ValueError, "compression must be a number >= 1"),
    (dict(compression="2"), ValueError, "compression must be a number >= 1"),
    (dict(degree=9), ValueError, "degree"),
    (dict(degree=2, method="magic"), ValueError, "method"),
])
def test_bad_graph_arguments(kw, exc, text):
    with pytest.raises(exc, match=text):
        XConv2d(8, 4, 3, **kw)
    with pytest.raises(exc, match=text):
        XLinear(8, 4, **kw)


def test_bad_geometry_arguments():
    with pytest.raises(ValueError, match="stride"):
        XConv2d(8, 4, 3, stride=0, degree=2)
    with pytest.raises(TypeError, match="kernel_size"):
        XConv2d(8, 4, 2.5, degree=2)


def test_wrong_input_channels_are_refused():
    with pytest.raises(ValueError, match=r"\(B, 8, H, W\)"):
        XConv2d(8, 4, 3, degree=2)(torch.randn(1, 9, 5, 5))
    with pytest.raises(ValueError, match=r"\(\*, 8\)"):
        XLinear(8, 4, degree=2)(torch.randn(3, 7))


def test_init_uses_the_real_fan_in():
    """kaiming_uniform_(a=sqrt(5)) bounds weights and bias by 1/sqrt(fan_in) with fan_in
    = D·kh·kw; the dense fan-in Cin·kh·kw would give a bound 4x smaller here."""
    torch.manual_seed(0)
    m = XConv2d(64, 256, 3, degree=4)
    bound = 1 / math.sqrt(4 * 9)
    for p in (m.weight, m.bias):
        assert p.abs().max() <= bound and p.abs().max() > 0.9 * bound
    assert abs(m.weight.std().item() - bound / math.sqrt(3)) < 0.05 * bound
    lin = XLinear(100, 300, degree=25)
    assert lin.weight.abs().max() <= 1 / 5 and lin.weight.abs().max() > 0.9 / 5


def test_extra_repr_shows_degree_density_and_method():
    text = repr(XConv2d(16, 8, 3, padding=1, bias=False, compression=4, method="biregular", seed=0))
    assert "XConv2d(16, 8, kernel_size=(3, 3)" in text and "bias=False" in text
    assert "degree=4" in text and "density=0.25" in text and "method=biregular" in text
    text = repr(XLinear(10, 4, degree=5, block=2, seed=0))
    assert "in_features=10" in text and "degree=5, density=0.5, method=random, block=2" in text


# ---- checkpoints and copies ------------------------------------------------------------

def _make(seed):
    return nn.Sequential(XConv2d(6, 8, 3, padding=1, degree=2, seed=seed), nn.ReLU(),
                         nn.Flatten(), XLinear(8 * 4 * 4, 5, compression=8, seed=seed))


def test_state_dict_round_trip_restores_the_graph():
    src, dst = _make(seed=1), _make(seed=2)
    assert not torch.equal(src[0].index, dst[0].index)
    buffer = io.BytesIO()
    torch.save(src.state_dict(), buffer)
    buffer.seek(0)
    dst.load_state_dict(torch.load(buffer))
    x = torch.randn(3, 6, 4, 4)
    assert torch.equal(dst(x), src(x))
    assert torch.equal(dst[0].index, src[0].index) and torch.equal(dst[3].index, src[3].index)
    assert set(src.state_dict()) == {"0.weight", "0.bias", "0.index", "3.weight", "3.bias", "3.index"}


def test_loading_a_wrong_graph_or_weight_is_refused_and_changes_nothing():
    good = XConv2d(6, 8, 3, degree=2, seed=0).state_dict()
    other_degree = XConv2d(6, 8, 3, degree=3, seed=0).state_dict()
    bad = {
        "degree": (other_degree, r"size mismatch for weight: the checkpoint has shape \(8, 3, 3, 3\), "
                                 r"this layer \(8, 2, 3, 3\)"),
        "index": (dict(good, index=torch.zeros(8, 3, dtype=torch.int64)), "size mismatch for index"),
        "weight": (dict(good, weight=torch.zeros(8, 2, 3)), "size mismatch for weight"),
        "range": (dict(good, index=torch.full((8, 2), 6)), "invalid graph for index: index entries"),
        "dtype": (dict(good, index=good["index"].float()),
                  "invalid graph for index: index must have an integer"),
    }
    for name, (state, text) in bad.items():
        fresh = XConv2d(6, 8, 3, degree=2, seed=1)
        before = {k: v.clone() for k, v in fresh.state_dict().items()}
        with pytest.raises(RuntimeError, match=text):
            fresh.load_state_dict(state, strict=False)
        assert all(torch.equal(v, before[k]) for k, v in fresh.state_dict().items()), name
    lin = XLinear(6, 4, degree=3)
    with pytest.raises(RuntimeError, match="invalid graph for index"):
        lin.load_state_dict(dict(lin.state_dict(), index=torch.full((4, 3), -1)))


def test_deepcopy_pickle_double_and_to():
    m = _make(seed=3)
    x = torch.randn(2, 6, 4, 4)
    expected = m(x)
    for twin in (copy.deepcopy(m), pickle.loads(pickle.dumps(m)), m.to("cpu")):
        assert torch.equal(twin(x), expected)
    d = copy.deepcopy(m).double()
    assert d[0].weight.dtype == F64 and d[0].index.dtype == torch.int64
    torch.testing.assert_close(d(x.double()), expected.double(), rtol=1e-5, atol=1e-6)


# ---- expanderize ------------------------------------------------------------------------

class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.Sequential(
            nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=2, dilation=2, groups=4),   # grouped: left dense
            nn.Conv2d(32, 32, 3, padding=1, groups=32),              # depthwise: left dense
            nn.Conv2d(32, 64, 1), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.head(self.body(torch.relu(self.stem(x))))


LAYERS = (nn.Conv2d, nn.Linear, XConv2d, XLinear)


def _profile(model, x):
    """Output shape per layer name and total MACs of the conv / linear layers."""
    shapes, macs = {}, [0]

    def hook(name):
        def record(module, inputs, out):
            shapes[name] = tuple(out.shape)
            # Products per output element: weight[0] is (D, kh, kw) for XConv2d, (Cin/groups, kh, kw)
            # for Conv2d, (D,) for XLinear and (Cin,) for Linear.
            macs[0] += out.numel() * module.weight[0].numel()
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, LAYERS)]
    out = model(x)
    for h in handles:
        h.remove()
    return out, shapes, macs[0]


def test_expanderize_keeps_shapes_and_saves_parameters_and_macs():
    torch.manual_seed(0)
    dense = SmallCNN()
    x = torch.randn(2, 3, 8, 8)
    before = {k: v.clone() for k, v in dense.state_dict().items()}
    sparse = expanderize(dense, compression=4, seed=0)
    assert all(torch.equal(v, dense.state_dict()[k]) for k, v in before.items())  # input untouched
    assert type(dense.body[0]) is nn.Conv2d
    assert type(sparse.stem) is nn.Conv2d and type(sparse.head[3]) is nn.Linear      # first and last kept
    assert type(sparse.body[3]) is nn.Conv2d and type(sparse.body[4]) is nn.Conv2d  # grouped, depthwise
    conv, pointwise, fc = sparse.body[0], sparse.body[5], sparse.head[1]
    assert isinstance(conv, XConv2d) and isinstance(pointwise, XConv2d) and isinstance(fc, XLinear)
    geometry = (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
    assert geometry == (16, 32, (3, 3), (2, 2), (1, 1)) and conv.degree == 4
    assert conv.bias is None and pointwise.degree == 8 and fc.degree == 256

    dense_out, dense_shapes, dense_macs = _profile(dense, x)
    sparse_out, sparse_shapes, sparse_macs = _profile(sparse, x)
    assert sparse_shapes == dense_shapes and sparse_out.shape == dense_out.shape
    n_params = [sum(p.numel() for p in m.parameters()) for m in (dense, sparse)]
    assert n_params[1] < n_params[0] and sparse_macs < dense_macs
    sparse_out.sum().backward()
    assert conv.weight.grad is not None and fc.weight.grad is not None


def test_expanderize_options():
    dense = SmallCNN()
    same = [expanderize(dense, degree=4, seed=7) for _ in range(2)]
    assert torch.equal(same[0].body[0].index, same[1].body[0].index)
    assert not torch.equal(same[0].body[0].index[:, :4], same[0].body[5].index[:, :4])  # per-layer seeds

    kept = expanderize(dense, degree=2, keep=("body.5", "last"), seed=0)
    assert isinstance(kept.stem, XConv2d) and type(kept.body[5]) is nn.Conv2d
    assert type(kept.head[3]) is nn.Linear

    high = expanderize(dense, degree=20, keep=(), seed=0)  # D >= n_in (3, 16): no saving, left dense
    assert type(high.stem) is nn.Conv2d and type(high.body[0]) is nn.Conv2d
    assert isinstance(high.body[5], XConv2d) and isinstance(high.head[3], XLinear)

    with pytest.raises(ValueError, match="keep entries"):
        expanderize(dense, degree=4, keep=("nonexistent",))
    with pytest.raises(ValueError, match="exactly one of degree and compression"):
        expanderize(nn.ReLU())

    mha = nn.Sequential(nn.MultiheadAttention(16, 2))  # out_proj is a Linear subclass the parent reads
    converted = expanderize(mha, degree=4, keep=())
    assert type(converted[0].out_proj) is type(mha[0].out_proj)
