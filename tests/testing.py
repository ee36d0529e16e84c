"""Shared test helpers: the backends to test, tolerances per dtype, and the oracle.

The oracle is torch's float64 conv2d / linear on the dense-equivalent weight
W_dense[v, index[v, i]] += weight[v, i]; without torch the numpy reference backend,
run in float64, takes its place.
"""
import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest

import xkern
from xkern.ops import get_backend

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None

# The checkout that holds the xkern under test; child processes import it from here.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(xkern.__file__)))


def run_python(code, *args, cwd=ROOT, env=None):
    """Run `python -c code args` on this xkern in a child process; fail the test on a non-zero exit."""
    env = dict(os.environ, **(env or {}))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (ROOT, env.get("PYTHONPATH"))))
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


requires_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

# Hypothesis examples per randomised test; the acceptance criterion is >= 150.
EXAMPLES = int(os.environ.get("XKERN_TEST_EXAMPLES", "150"))

DTYPES = (np.float64, np.float32)
# atol is scaled by max(1, |expected|): float32 sums of a few hundred O(1) terms
# lose ~1e-5 of their magnitude.
TOLERANCES = {np.dtype(np.float64): (1e-10, 1e-10), np.dtype(np.float32): (2e-4, 2e-4)}

HOST_BACKENDS = ("reference", "cpu")


def usable(name):
    """Whether backend name loads here."""
    try:
        get_backend(name)
    except (ImportError, RuntimeError):
        return False
    return True


def _backends():
    """Host backends under test: XKERN_TEST_BACKENDS="reference,cpu" names them (a missing
    one then fails the run); otherwise every usable one.  cuda is tested in its own file."""
    asked = os.environ.get("XKERN_TEST_BACKENDS")
    if not asked:
        return tuple(name for name in HOST_BACKENDS if usable(name))
    names = tuple(n.strip() for n in asked.split(",") if n.strip())
    for name in names:
        if name not in HOST_BACKENDS:
            raise ValueError(f"XKERN_TEST_BACKENDS may name {HOST_BACKENDS}, got {name!r}")
        get_backend(name)
    return names


BACKENDS = _backends()


def assert_close(actual, expected, dtype, what):
    """actual (dtype, same shape) equals the float64 expected within dtype's tolerance."""
    actual = np.asarray(actual)
    assert actual.dtype == np.dtype(dtype), f"{what}: dtype {actual.dtype}, expected {np.dtype(dtype)}"
    expected = np.asarray(expected, dtype=np.float64)
    rtol, atol = TOLERANCES[np.dtype(dtype)]
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=rtol, atol=atol * scale,
                               err_msg=what, strict=True)


def random_index(rng, n_out, n_in, degree, repeats):
    """(n_out, degree) int64 index into n_in inputs.  Rows are distinct unless repeats,
    in which case entries are drawn with replacement and, when degree > 1, each row
    holds at least one repeated entry."""
    if not repeats:
        return np.stack([rng.choice(n_in, degree, replace=False) for _ in range(n_out)]).astype(np.int64)
    index = rng.integers(0, n_in, size=(n_out, degree))
    if degree > 1:
        index[:, -1] = index[:, 0]
    return index.astype(np.int64)


def pair(v):
    """An int or an (h, w) pair as (h, w)."""
    return (v, v) if isinstance(v, int) else v


def out_hw(hw, k, stride, padding, dilation):
    """The output map (Ho, Wo) of a conv of hw with kernel k."""
    return tuple((n + 2 * p - d * (kk - 1) - 1) // s + 1
                 for n, kk, s, p, d in zip(hw, k, pair(stride), pair(padding), pair(dilation)))


def conv_case(cfg, seed=0):
    """Random data of a conv config (batch, Cin, Cout, D, (H, W), (kh, kw), stride, padding,
    dilation, repeats): x, weight, index, bias, grad_out, (stride, padding, dilation)."""
    batch, n_in, n_out, degree, hw, k, stride, padding, dilation, repeats = cfg
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (batch, n_in) + hw)
    weight = rng.standard_normal((n_out, degree) + k)
    index = random_index(rng, n_out, n_in, degree, repeats)
    bias = rng.standard_normal(n_out)
    grad_out = rng.standard_normal((batch, n_out) + out_hw(hw, k, stride, padding, dilation))
    return x, weight, index, bias, grad_out, (stride, padding, dilation)


def dense_weight(weight, index, n_in):
    """The (Cout, Cin, ...) dense weight equal to compact weight (Cout, D, ...) over index (Cout, D)."""
    weight = np.asarray(weight)
    index = np.asarray(index)
    dense = np.zeros((weight.shape[0], n_in) + weight.shape[2:], dtype=weight.dtype)
    np.add.at(dense, (np.arange(weight.shape[0])[:, None], index), weight)  # repeats add up
    return dense


def _compact_grad(grad_dense, index):
    # W_dense[v, u] = sum of weight[v, i] over i with index[v, i] = u, so
    # d loss / d weight[v, i] = d loss / d W_dense[v, index[v, i]].
    return grad_dense[np.arange(index.shape[0])[:, None], index]


@contextlib.contextmanager
def _torch_single_threaded():
    # The oracle's convolutions are tiny: on a busy machine torch's thread pool waits
    # for descheduled workers far longer than the work takes.  The caller's setting
    # is restored because xkern's CPU kernels share torch's OpenMP runtime.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def conv2d_oracle(x, weight, index, bias, stride, padding, dilation, grad_out):
    """float64 (out, grad_x, grad_weight, grad_bias) of an X-Conv given grad_out (B, Cout, Ho, Wo).

    grad_bias is the bias gradient whether or not bias is None (grad_out summed over B, Ho, Wo).
    """
    x, weight, grad_out = (np.ascontiguousarray(a, dtype=np.float64) for a in (x, weight, grad_out))
    bias = np.zeros(weight.shape[0]) if bias is None else np.ascontiguousarray(bias, dtype=np.float64)
    index = np.ascontiguousarray(index, dtype=np.int64)
    if torch is None:
        return _reference_oracle(xkern.xconv2d, xkern.xconv2d_backward, x, weight, index, bias,
                                 grad_out, (stride, padding, dilation))
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(dense_weight(weight, index, x.shape[1]), requires_grad=True)
    bt = torch.tensor(bias, requires_grad=True)
    with _torch_single_threaded():
        out = F.conv2d(xt, wt, bt, stride, padding, dilation)
        out.backward(torch.tensor(grad_out))
    return (out.detach().numpy(), xt.grad.numpy(), _compact_grad(wt.grad.numpy(), index),
            bt.grad.numpy())


def linear_oracle(x, weight, index, bias, grad_out):
    """float64 (out, grad_x, grad_weight, grad_bias) of an X-Linear given grad_out (B, Cout)."""
    x, weight, grad_out = (np.ascontiguousarray(a, dtype=np.float64) for a in (x, weight, grad_out))
    bias = np.zeros(weight.shape[0]) if bias is None else np.ascontiguousarray(bias, dtype=np.float64)
    index = np.ascontiguousarray(index, dtype=np.int64)
    if torch is None:
        return _reference_oracle(xkern.xlinear, xkern.xlinear_backward, x, weight, index, bias,
                                 grad_out, ())
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(dense_weight(weight, index, x.shape[1]), requires_grad=True)
    bt = torch.tensor(bias, requires_grad=True)
    with _torch_single_threaded():
        out = F.linear(xt, wt, bt)
        out.backward(torch.tensor(grad_out))
    return (out.detach().numpy(), xt.grad.numpy(), _compact_grad(wt.grad.numpy(), index),
            bt.grad.numpy())


def _reference_oracle(forward, backward, x, weight, index, bias, grad_out, geometry):
    out = forward(x, weight, index, bias, *geometry, backend="reference")
    grads = backward(grad_out, x, weight, index, *geometry, backend="reference")
    return (out,) + tuple(grads)
