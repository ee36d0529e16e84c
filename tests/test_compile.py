"""torch.compile(fullgraph=True) and torch.export of a small X-Net
(conv - bn - relu - xconv - pool - xlinear): the custom ops trace without graph
breaks, and compiled / exported runs equal eager ones, forward and backward."""
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from xkern.nn import XConv2d, XLinear  # noqa: E402


def small_xnet():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        XConv2d(8, 16, 3, padding=1, degree=2, seed=0),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        XLinear(16 * 2 * 2, 10, compression=4, seed=1))


def run(model, x, call=None):
    """Output, input gradient and gradients of model's parameters of sum(out * w) for a
    fixed w, where out = call(x) (model(x) by default)."""
    x = x.clone().requires_grad_()
    out = (call or model)(x)
    weights = torch.linspace(-1, 1, out.numel(), device=out.device).reshape(out.shape)
    (out * weights).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    return out.detach(), x.grad, grads


def assert_same_run(got, expected):
    torch.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], expected[1], rtol=1e-5, atol=1e-5)
    assert got[2].keys() == expected[2].keys()
    for name in expected[2]:
        torch.testing.assert_close(got[2][name], expected[2][name], rtol=1e-5, atol=1e-5, msg=name)


def test_compile_fullgraph_matches_eager():
    """Inductor (the default backend) compiles the rest of the net around the xkern ops;
    fullgraph=True fails on any graph break."""
    torch._dynamo.reset()
    model = small_xnet()
    x = torch.randn(4, 3, 8, 8)
    eager = run(model, x)
    compiled = torch.compile(model, fullgraph=True)
    assert_same_run(run(model, x, compiled), eager)


def test_export_holds_the_custom_ops_and_backpropagates():
    model = small_xnet()
    x = torch.randn(4, 3, 8, 8)
    exported = torch.export.export(model.eval(), (x,))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert {"xkern.xconv2d_fwd.default", "xkern.xlinear_fwd.default"} <= targets
    assert_same_run(run(model, x, exported.module()), run(model, x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on a GPU machine)")
def test_compile_fullgraph_on_cuda_matches_cpu_eager(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # the stem conv in full FP32
    torch._dynamo.reset()
    model = small_xnet()
    x = torch.randn(4, 3, 8, 8)
    expected = run(model, x)
    model.cuda()
    got = run(model, x.cuda(), torch.compile(model, fullgraph=True))
    assert_same_run((got[0].cpu(), got[1].cpu(), {k: v.cpu() for k, v in got[2].items()}), expected)
