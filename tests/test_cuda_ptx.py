"""Every CUDA kernel compiles to PTX for sm_80 and sm_90 (and assembles, where ptxas exists).

The simulator runs kernels as Python and never types them for the GPU; this
catches what it cannot see (non-constant shared-array shapes, dtype mixing,
unsupported calls).  Compilation needs no GPU, only numba-cuda's NVVM
(pip package nvidia-cuda-nvrtc).  It runs in a child process so the real
numba.cuda is used even where this pytest process imported the simulator.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

ARCHS = {"sm_80": (8, 0), "sm_90": (9, 0)}
STAGED_KINDS = {}  # staged kernel name -> its RawKernel argument kinds (filled by specialisations)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def specialisations():
    """(name, python function, argument types) of every kernel x dtype.  The float32
    tiled kernels use the tiles the planner picks for real layers (3x3, 128 -> 128
    channels at 28x28 and 1x1, 256 -> 256 at 14x14, batch 32); the rest small tiles,
    which compile faster.  The staged kernels' float32 versions at the reference layers
    are compiled by benchmarks/cuda_static.py (tests/test_cuda_static.py); here their
    float64 versions and the flipped, dilated and strided geometries."""
    from xkern.backends.cuda import _gather, _plan, _pointwise, _transpose, _window
    from xkern.backends.cuda._launch import numba_types
    from xkern.backends.cuda.xconv2d_bwd_bias import bias_signature, bias_source
    from xkern.backends.cuda.xconv2d_bwd_input import strided_signature, strided_source
    from xkern.backends.cuda.xconv2d_bwd_weight import (partial_signature, partial_source,
                                                        sum_signature, sum_source)
    conv3 = _plan.Geometry(3, 3, 1, 1, 1, 1, 1, 1)
    flipped = _plan.Geometry(3, 3, 1, 1, 2, 2, 3, 3, True)  # grad_input of a dilation-2, padding-1 conv
    strided = _plan.Geometry(3, 3, 2, 2, 1, 1, 1, 1)
    f32, f64 = np.dtype(np.float32), np.dtype(np.float64)
    layer_tile, _ = _plan.plan_gather(conv3, 128, (28, 28), 32, 128, 16, 4, 132)
    layer_strips, _ = _plan.plan_strips((28, 28), 128 * 16, 32, 132)
    conv1 = _plan.Geometry(1, 1, 1, 1, 1, 1, 0, 0)
    layer_tile_1x1, _ = _plan.plan_gather(conv1, 256, (14, 14), 32, 256, 64, 4, 132)
    specs = [
        ("gather_3x3_bias_float32", _gather.gather_source(f32, conv3, layer_tile, True), _gather.gather_signature(f32)),
        ("gather_1x1_float32", _gather.gather_source(f32, conv1, layer_tile_1x1, False), _gather.gather_signature(f32)),
        ("bwd_weight_partial_float32", partial_source(f32, conv3, layer_strips), partial_signature(f32)),
        ("gather_flipped_dilated_float64", _gather.gather_source(f64, flipped, _plan.GatherTile(1, 1, 32, 4), False),
         _gather.gather_signature(f64)),
        ("bwd_weight_partial_float64", partial_source(f64, strided, _plan.StripTile(1, 16)), partial_signature(f64)),
    ]
    window = _plan.WindowTile(1, 4, 4, 2, 3)
    block_window = _plan.WindowTile(4, 2, 4, 2, 2)
    staged = [
        ("staged_pointwise_gather_g8_bias", _pointwise.gather_source(f64, 8, 1, True), _pointwise.GATHER_KINDS),
        ("staged_pointwise_gather_nv2", _pointwise.gather_source(f64, 1, 2, False), _pointwise.GATHER_KINDS),
        ("staged_pointwise_wgrad_g4", _pointwise.wgrad_source(f64, 4, 8, 128), _pointwise.WGRAD_KINDS),
        ("staged_window_gather_flipped_dilated", _window.gather_source(f64, flipped, window, False),
         _window.GATHER_KINDS),
        ("staged_window_gather_strided_g4", _window.gather_source(f64, strided, block_window, True),
         _window.GATHER_KINDS),
        ("staged_window_wgrad_strided", _window.wgrad_source(f64, strided, window), _window.WGRAD_KINDS),
        ("staged_window_wgrad_g4", _window.wgrad_source(f64, conv3, block_window), _window.WGRAD_KINDS),
        ("staged_pointwise_wgrad_g8", _pointwise.wgrad_source(f64, 8, 4, 128), _pointwise.WGRAD_KINDS),
        ("staged_pointwise_wgrad_g1", _pointwise.wgrad_source(f64, 1, 32, 128), _pointwise.WGRAD_KINDS),
    ]
    specs += [(name + "_float64", func, numba_types(kinds, f64)) for name, func, kinds in staged]
    STAGED_KINDS.update({name: kinds for name, _, kinds in staged})
    for dtype in (f32, f64):
        t = dtype.name
        specs += [
            (f"bwd_input_strided_{t}", strided_source(dtype, strided), strided_signature(dtype)),
            (f"bwd_weight_sum_{t}", sum_source(dtype), sum_signature(dtype)),
            (f"bwd_bias_{t}", bias_source(dtype), bias_signature(dtype)),
            (f"transpose_{t}", _transpose.transpose_source(dtype), _transpose.transpose_signature(dtype)),
        ]
    return specs


def compile_all(arch, out_dir):
    """Child-process entry: write <name>.ptx for every specialisation; print their names."""
    from xkern.backends.cuda._launch import compile_ptx
    names = []
    for name, func, signature in specialisations():
        ptx, _ = compile_ptx(func, signature, ARCHS[arch])
        with open(os.path.join(out_dir, name + ".ptx"), "w") as f:
            f.write(ptx)
        names.append(name)
    print(json.dumps(names))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """{arch: (directory, names)}, both archs compiled in parallel child processes."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0",
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    procs = {}
    for arch in ARCHS:
        out_dir = tmp_path_factory.mktemp(arch)
        procs[arch] = (out_dir, subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), arch, str(out_dir)], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    result = {}
    for arch, (out_dir, proc) in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"compile_ptx for {arch} failed:\n{stderr[-4000:]}"
        result[arch] = (out_dir, json.loads(stdout.strip().splitlines()[-1]))
    return result


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_kernel_compiles_to_ptx(compiled, arch):
    out_dir, names = compiled[arch]
    expected = [name for name, _, _ in specialisations()]
    assert names == expected
    for name in names:
        with open(os.path.join(out_dir, name + ".ptx")) as f:
            ptx = f.read()
        assert f".target {arch}" in ptx, name
        assert ".entry" in ptx, name
        # Accumulators and staged weights must live in registers, not local memory.
        assert "ld.local" not in ptx and "st.local" not in ptx, name
        if name.startswith("staged_"):
            # RawKernel packs one parameter per argument: pointers and int32 scalars only
            kinds = STAGED_KINDS[name.rsplit("_", 1)[0]]
            params = re.findall(r"\.param \.(u64|u32|b32|s32)\b", ptx.split(")")[0])
            assert params == ["u64" if k != "i32" else "u32" for k in kinds], (name, params)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_ptx_assembles_with_ptxas(compiled, arch):
    from xkern.backends.cuda._launch import find_ptxas
    ptxas = find_ptxas()
    if ptxas is None:
        pytest.skip("ptxas is not installed (pip install nvidia-cuda-nvcc, or the CUDA toolkit on PATH)")
    out_dir, names = compiled[arch]
    for name in names:
        path = os.path.join(out_dir, name + ".ptx")
        run = subprocess.run([ptxas, f"-arch={arch}", "-v", path, "-o", path + ".cubin"],
                             capture_output=True, text=True)
        assert run.returncode == 0, f"{name}: {run.stderr[-2000:]}"
        assert "spill" not in run.stderr or "0 bytes spill stores, 0 bytes spill loads" in run.stderr, \
            f"{name} spills registers:\n{run.stderr}"
        assert "bytes stack frame" not in run.stderr or "0 bytes stack frame" in run.stderr, \
            f"{name} keeps local arrays in memory:\n{run.stderr}"


if __name__ == "__main__":
    compile_all(sys.argv[1], sys.argv[2])
