"""The numpy core without torch, in child processes that block `import torch` the way a
missing install does (sys.modules["torch"] = None makes the import raise ModuleNotFoundError
and importlib.util.find_spec return None)."""
import itertools
import json
import os

import numpy as np

from testing import HOST_BACKENDS, run_python, usable

TESTS = os.path.dirname(os.path.abspath(__file__))
BLOCK_TORCH = "import sys; sys.modules['torch'] = None\n"


def test_import_and_numpy_calls_load_neither_torch_nor_numba():
    code = """
import sys
import numpy as np
import xkern
from xkern.ops import get_backend
x, w, index = np.ones((1, 2, 3, 3)), np.ones((2, 1, 1, 1)), np.array([[1], [0]])
for name in ("reference", "cpu"):
    try:
        get_backend(name)
    except (ImportError, RuntimeError):
        continue
    xkern.xconv2d(x, w, index, backend=name)
    xkern.xlinear(x[:, :, 0, 0], w[:, :, 0, 0], index, backend=name)
print(sorted(m for m in ("torch", "numba") if m in sys.modules))
"""
    assert run_python(code).strip() == "[]"


# A tiny X-Conv: non-square kernel, stride, padding, dilation, a repeated index entry, Cin != Cout.
CONV = dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2))
SHAPES = dict(batch=2, n_in=3, n_out=4, hw=(5, 7), kernel=(2, 3))


def tiny_inputs():
    rng = np.random.default_rng(11)
    (h, w), (kh, kw) = SHAPES["hw"], SHAPES["kernel"]
    (sh, sw), (ph, pw), (dh, dw) = CONV["stride"], CONV["padding"], CONV["dilation"]
    out_hw = ((h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1)
    return dict(
        x=rng.uniform(-1, 1, (SHAPES["batch"], SHAPES["n_in"], h, w)),
        weight=rng.standard_normal((SHAPES["n_out"], 2, kh, kw)),
        index=np.array([[0, 2], [1, 1], [2, 0], [0, 1]]),
        bias=rng.standard_normal(SHAPES["n_out"]),
        grad_out=rng.standard_normal((SHAPES["batch"], SHAPES["n_out"]) + out_hw),
        lx=rng.uniform(-1, 1, (3, 5)),
        lweight=rng.standard_normal((4, 3)),
        lindex=np.array([[0, 4, 4], [1, 2, 3], [3, 3, 0], [2, 1, 0]]),
        lbias=rng.standard_normal(4),
        lgrad_out=rng.standard_normal((3, 4)))


def direct_xconv2d(x, weight, index, bias, stride, padding, dilation, grad_out):
    """(out, grad_x, grad_weight, grad_bias) by the defining sums, one term at a time."""
    batch, _, height, width = x.shape
    n_out, degree, kh, kw = weight.shape
    h_out, w_out = grad_out.shape[2:]
    out = np.zeros((batch, n_out, h_out, w_out))
    grad_x, grad_w = np.zeros_like(x), np.zeros_like(weight)
    for b, v, y, z, i, ky, kx in itertools.product(range(batch), range(n_out), range(h_out), range(w_out),
                                                   range(degree), range(kh), range(kw)):
        iy = y * stride[0] + ky * dilation[0] - padding[0]
        ix = z * stride[1] + kx * dilation[1] - padding[1]
        if 0 <= iy < height and 0 <= ix < width:
            u = index[v, i]
            out[b, v, y, z] += weight[v, i, ky, kx] * x[b, u, iy, ix]
            grad_x[b, u, iy, ix] += weight[v, i, ky, kx] * grad_out[b, v, y, z]
            grad_w[v, i, ky, kx] += grad_out[b, v, y, z] * x[b, u, iy, ix]
    return out + bias[None, :, None, None], grad_x, grad_w, grad_out.sum(axis=(0, 2, 3))


def direct_xlinear(x, weight, index, bias, grad_out):
    out = np.tile(bias, (x.shape[0], 1))
    grad_x, grad_w = np.zeros_like(x), np.zeros_like(weight)
    for b, v, i in itertools.product(range(x.shape[0]), *map(range, weight.shape)):
        out[b, v] += weight[v, i] * x[b, index[v, i]]
        grad_x[b, index[v, i]] += weight[v, i] * grad_out[b, v]
        grad_w[v, i] += grad_out[b, v] * x[b, index[v, i]]
    return out, grad_x, grad_w, grad_out.sum(axis=0)


CHILD = BLOCK_TORCH + """
import json
import numpy as np
import xkern
from xkern.ops import get_backend

a = np.load(sys.argv[1])
conv = json.loads(sys.argv[3])
results, backends = {}, []
for name in ("reference", "cpu"):
    try:
        get_backend(name)
    except (ImportError, RuntimeError):
        continue
    backends.append(name)
    for dtype in ("float64", "float32"):
        c = {k: a[k].astype(dtype) if a[k].dtype.kind == "f" else a[k] for k in a.files}
        geometry = (conv["stride"], conv["padding"], conv["dilation"])
        out = xkern.xconv2d(c["x"], c["weight"], c["index"], c["bias"], *geometry, backend=name)
        grads = xkern.xconv2d_backward(c["grad_out"], c["x"], c["weight"], c["index"], *geometry,
                                       backend=name)
        lout = xkern.xlinear(c["lx"], c["lweight"], c["lindex"], c["lbias"], backend=name)
        lgrads = xkern.xlinear_backward(c["lgrad_out"], c["lx"], c["lweight"], c["lindex"], backend=name)
        for what, value in zip(("out", "grad_x", "grad_weight", "grad_bias"), (out,) + grads):
            results[f"conv/{what}/{name}/{dtype}"] = value
        for what, value in zip(("out", "grad_x", "grad_weight", "grad_bias"), (lout,) + lgrads):
            results[f"linear/{what}/{name}/{dtype}"] = value
np.savez(sys.argv[2], **results)
print(json.dumps({"backends": backends, "torch": sys.modules["torch"] is None}))
"""

TOLERANCE = {"float64": 1e-12, "float32": 1e-5}


def test_backends_match_direct_sums_without_torch(tmp_path):
    inputs = tiny_inputs()
    np.savez(tmp_path / "in.npz", **inputs)
    report = json.loads(run_python(CHILD, str(tmp_path / "in.npz"), str(tmp_path / "out.npz"),
                                   json.dumps(CONV)))
    backends = [name for name in HOST_BACKENDS if usable(name)]
    assert report == {"backends": backends, "torch": True}
    got = np.load(tmp_path / "out.npz")
    expected = {
        "conv": direct_xconv2d(inputs["x"], inputs["weight"], inputs["index"], inputs["bias"],
                               CONV["stride"], CONV["padding"], CONV["dilation"], inputs["grad_out"]),
        "linear": direct_xlinear(inputs["lx"], inputs["lweight"], inputs["lindex"], inputs["lbias"],
                                 inputs["lgrad_out"]),
    }
    assert len(got.files) == 2 * 4 * 2 * len(backends)
    for key in got.files:
        op, what, _, dtype = key.split("/")
        want = expected[op][("out", "grad_x", "grad_weight", "grad_bias").index(what)]
        assert got[key].dtype == np.dtype(dtype), key
        np.testing.assert_allclose(got[key].astype(np.float64), want, rtol=TOLERANCE[dtype],
                                   atol=TOLERANCE[dtype], err_msg=key, strict=True)


def test_info_without_torch():
    run = BLOCK_TORCH + "import runpy; sys.argv = ['xkern', 'info']; " \
                        "runpy.run_module('xkern', run_name='__main__', alter_sys=True)"
    lines = run_python(run).splitlines()
    assert "torch not installed" in lines[1]
    status = {line.split()[0]: line.split()[1] for line in lines[2:5]}
    assert status["reference"] == "usable:"
    assert status["cpu"] == ("usable:" if usable("cpu") else "unavailable:")


def test_core_suite_without_torch():
    """The bad-input and oracle suites pass with the reference backend as the oracle, and
    their torch-only tests skip (few hypothesis examples: the full run covers the rest)."""
    code = BLOCK_TORCH + "import pytest; sys.exit(pytest.main(sys.argv[1:]))"
    text = run_python(code, "-q", "-rs", "-p", "no:cacheprovider",
                      os.path.join(TESTS, "test_bad_input.py"), os.path.join(TESTS, "test_oracle.py"),
                      env={"XKERN_TEST_EXAMPLES": "10"})
    summary = text.strip().splitlines()[-1]
    assert "passed" in summary and "skipped" in summary and "failed" not in summary, text
    assert "torch is not installed" in text
