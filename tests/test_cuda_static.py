"""The static report of the CUDA kernels (benchmarks/cuda_static.py) meets the design numbers.

A subset of the reference layers: L1 (1x1) and L3 (3x3) at C = 8, random and block-8
expanders, every kernel compiled for sm_90 (NVVM from nvidia-cuda-nvrtc, ptxas from
nvidia-cuda-nvcc).  No GPU needed.  Skipped only where NVVM or ptxas is absent.
"""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "cuda_static.py")


def _missing():
    """Why the report cannot run here, or None."""
    if importlib.util.find_spec("numba_cuda") is None:
        return "numba-cuda is not installed"
    from xkern.backends.cuda._launch import find_ptxas
    if find_ptxas() is None:
        return "ptxas is not installed (pip install nvidia-cuda-nvcc)"
    from numba.cuda.cuda_paths import get_cuda_paths
    if get_cuda_paths()["nvvm"].info is None:
        return "NVVM is not installed (pip install nvidia-cuda-nvrtc nvidia-cuda-nvcc)"
    return None


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    reason = _missing()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("static") / "report.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    run = subprocess.run([sys.executable, SCRIPT, "--json", str(out), "--layers", "L1", "L3", "-C", "8",
                          "--block", "1", "8"], capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with open(out) as f:
        return json.load(f)["rows"]


def test_every_direction_and_config_is_reported(rows):
    seen = {(r["layer"], r["block"], r["kernel"].split("_")[0] + "_" + r["kernel"].split("_")[1]) for r in rows}
    for layer in ("L1", "L3"):
        for block in (1, 8):
            for direction in ("forward", "grad_input", "grad_weight"):
                assert any(s[:2] == (layer, block) and s[2].startswith(direction) for s in seen), \
                    (layer, block, direction)
    for r in rows:
        for field in ("kernel", "layer", "C", "block", "kernel_size", "registers", "spill_bytes",
                      "shared_bytes", "blocks_per_sm", "words_per_fma"):
            assert field in r, field


def test_design_numbers(rows):
    for r in rows:
        what = f"{r['kernel']} {r['layer']} C={r['C']} block={r['block']}"
        assert r["spill_bytes"] == 0 and r["local_bytes"] == 0, what
        assert r["blocks_per_sm"] >= 1, what
        if r["words_per_fma"] is None:  # the grad_weight sum: no FMA
            continue
        limit = {"random 1x1": 1.0, "3x3": 0.5, "block 8": 0.3}.get(r["design"])
        if r["design"] == "random 1x1 grad_weight floor":
            limit = 1 + 1 / 32
        assert r["words_per_fma"] <= limit, (what, r["words_per_fma"], limit)
        if r["block"] == 8 and not r["kernel"].startswith("grad_input"):
            assert r["words_per_fma"] <= 0.3, what
