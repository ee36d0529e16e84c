"""Results are bitwise the same at OMP_NUM_THREADS=1 and 2 (separate processes, so the
OpenMP runtime reads the variable at start-up as a user's process would)."""
import numpy as np

import xkern.backends.cpu  # noqa: F401  (fails, never skips, when the cpu backend is not built)
from testing import run_python

CHILD = r"""
import sys
import numpy as np
import xkern

out_path = sys.argv[1]
rng = np.random.default_rng(7)
results = {"threads": np.array(xkern.get_num_threads())}
for dtype in (np.float32, np.float64):
    # conv: 3x3, stride 2, padding 1, dilation 1; enough channels and pixels for several work items
    x = rng.standard_normal((5, 24, 23, 19)).astype(dtype)
    w = rng.standard_normal((40, 6, 3, 3)).astype(dtype)
    idx = rng.integers(0, 24, (40, 6))
    b = rng.standard_normal(40).astype(dtype)
    y = xkern.xconv2d(x, w, idx, b, stride=2, padding=1, backend="cpu")
    g = rng.standard_normal(y.shape).astype(dtype)
    gx, gw, gb = xkern.xconv2d_backward(g, x, w, idx, stride=2, padding=1, backend="cpu")
    # linear
    xl = rng.standard_normal((67, 50)).astype(dtype)
    wl = rng.standard_normal((33, 9)).astype(dtype)
    il = rng.integers(0, 50, (33, 9))
    yl = xkern.xlinear(xl, wl, il, backend="cpu")
    gl = xkern.xlinear_backward(np.ones_like(yl), xl, wl, il, backend="cpu")
    name = np.dtype(dtype).name
    results.update({f"{name}_{k}": v for k, v in dict(y=y, gx=gx, gw=gw, gb=gb, yl=yl, glx=gl[0],
                                                        glw=gl[1], glb=gl[2]).items()})
np.savez(out_path, **results)
"""


def run_child(tmp_path, threads):
    out = tmp_path / f"threads{threads}.npz"
    run_python(CHILD, str(out), env={"OMP_NUM_THREADS": str(threads)})
    return dict(np.load(out))


def test_bitwise_equal_at_omp_num_threads_1_and_2(tmp_path):
    one, two = run_child(tmp_path, 1), run_child(tmp_path, 2)
    assert int(one.pop("threads")) == 1
    assert int(two.pop("threads")) == 2
    assert one.keys() == two.keys() and len(one) == 16
    for key in one:
        assert np.array_equal(one[key], two[key]), f"{key} differs between 1 and 2 threads"
