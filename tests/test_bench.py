"""The benchmark tools (xkern.bench, `python -m xkern bench`, asv_bench/): structure and values, never timings."""
import importlib.util
import json
import os
import pathlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import xkern
import xkern.nn
from xkern.__main__ import main
from xkern.bench import baselines, layers, memory, models, report, suite, timing

from testing import dense_weight, run_python

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    xkern.set_num_threads(None)


# layers ---------------------------------------------------------------------------------

def test_make_index_is_paper_style_with_block_structure():
    plain = layers.make_index(layers.make_config(layers.get_layer("L1"), 4), seed=3)
    assert plain.shape == (256, 64) and plain.dtype == np.int64
    assert all(len(set(row)) == 64 for row in plain)  # D distinct inputs per output (no replacement)
    np.testing.assert_array_equal(plain, layers.make_index(layers.make_config(layers.get_layer("L1"), 4), seed=3))
    index = layers.make_index(layers.make_config(layers.get_layer("L3"), 8, block=4), seed=1)
    assert index.shape == (256, 32) and index.min() >= 0 and index.max() < 256
    np.testing.assert_array_equal(index, np.repeat(index[::4], 4, axis=0))


def test_configs_are_checked():
    assert [c.key for c in layers.configs(["L1", "L4"], [2, 8])] == [
        ("L1", 2, 1), ("L1", 8, 1), ("L4", 2, 1), ("L4", 8, 1)]
    assert layers.configs(["L4"], [8])[0].degree == 48
    assert layers.get_layer("L2", batch=4).batch == 4
    with pytest.raises(ValueError, match="compression 3"):
        layers.make_config(layers.get_layer("L1"), 3)
    with pytest.raises(ValueError, match="block 3"):
        layers.make_config(layers.get_layer("L1"), 2, block=3)
    with pytest.raises(ValueError, match="layer must be one of"):
        layers.get_layer("L9")


# baselines: every implementation computes the layer it claims to --------------------------

@pytest.fixture(scope="module")
def problem():
    config = layers.make_config(layers.get_layer("T3"), 2)
    return baselines.make_problem(config, dtype=torch.float64, seed=5)


def test_masked_and_xkern_equal_the_dense_equivalent_conv(problem):
    n_in, pad = problem.config.layer.cin, problem.config.layer.padding
    w_dense = torch.from_numpy(dense_weight(problem.weight.numpy(), problem.index.numpy(), n_in))
    w_dense.requires_grad_(True)
    x = problem.x.detach().clone().requires_grad_(True)
    b = problem.bias.detach().clone().requires_grad_(True)
    out = F.conv2d(x, w_dense, b, padding=pad)
    gx, gw_dense, gb = torch.autograd.grad(out, (x, w_dense, b), problem.grad_out)
    # the compact weight's gradient is the dense one read at the index
    gw = gw_dense.gather(1, problem.index[:, :, None, None].expand_as(problem.weight))
    for impl in ("masked", "xkern"):
        case = baselines.build_case(impl, problem, xkern_backend="reference")
        torch.testing.assert_close(torch.as_tensor(case.forward()), out.detach())
        grads = case.step()
        if not isinstance(grads[0], torch.Tensor):  # numpy API: (out, (gx, gw, gb))
            grads = tuple(torch.as_tensor(g) for g in grads[1])
        for got, want in zip(grads, (gx, gw, gb)):
            torch.testing.assert_close(got, want)


def test_grouped_is_xkern_with_the_grouped_index(problem):
    c = problem.config
    per_group = c.layer.cout // c.compression
    grouped_index = (torch.arange(c.layer.cout)[:, None] // per_group) * c.degree + torch.arange(c.degree)
    as_expander = problem._replace(index=grouped_index)
    want = baselines.build_case("masked", as_expander).forward()
    torch.testing.assert_close(baselines.build_case("grouped", problem).forward(), want)


def test_dense_case_shapes_and_unsupported_combinations(problem):
    case = baselines.build_case("dense", problem)
    layer = problem.config.layer
    assert case.forward().shape == (layer.batch, layer.cout, layer.hw, layer.hw)
    assert [g.shape for g in case.step()] == [problem.x.shape, (layer.cout, layer.cin, 3, 3), (layer.cout,)]
    assert case.param_bytes == (layer.cout * layer.cin * 9 + layer.cout) * 8
    with pytest.raises(ValueError, match="impl must be one of"):
        baselines.build_case("sparse", problem)
    with pytest.raises(NotImplementedError):
        baselines.build_case("xkern", problem, xkern_backend="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(NotImplementedError, match="no CUDA device"):
            baselines.make_problem(problem.config, device="cuda")


# timing and memory ---------------------------------------------------------------------

def test_measure_calls_warmup_then_samples():
    calls = []
    t = timing.measure(lambda: calls.append(1), repeats=5, sample_time=0.0, warmup=2)
    assert len(calls) == 2 + 1 + 5 * t.number and t.number == 1 and t.repeats == 5
    assert 0 <= t.q1 <= t.median <= t.q3
    with pytest.raises(ValueError, match="repeats"):
        timing.measure(lambda: None, repeats=0)


@pytest.mark.skipif(not memory.rss_peak_supported(), reason="needs Linux /proc/self/clear_refs")
def test_peak_bytes_sees_a_temporary_buffer():
    # The kernel keeps RSS in per-CPU counters and reads them approximately: each CPU may hold
    # up to max(32, 2 * CPUs) pages back (Linux's percpu_counter batch), 2 MiB on a 16-CPU
    # machine, where a 1 MiB allowance failed.  The buffer is large against that.
    cpus = os.cpu_count() or 1
    slack = 2**20 + cpus * max(32, 2 * cpus) * 4096
    size = max(32 * 2**20, 8 * slack)
    peak = memory.peak_bytes(lambda: np.ones(size // 8).sum())
    assert size - slack < peak < size + 8 * 2**20 + slack
    assert memory.peak_bytes(lambda: None) < slack


# report: derived values from known times -----------------------------------------------

def _fake_result():
    def t(ms):
        return {"median": ms / 1e3, "q1": ms / 1e3, "q3": ms / 1e3, "number": 1, "repeats": 1}

    times = {"dense": (10.0, 30.0), "grouped": (5.0, 20.0), "masked": (12.0, 40.0), "xkern": (2.0, 8.0)}
    results = []
    for c, scale in ((4, 1.0), (8, 4.0)):
        for impl, (fwd, step) in times.items():
            xk = impl == "xkern"
            results.append(dict(layer="L1", C=c, D=256 // c, block=1, cin=256, impl=impl, api=impl, param_bytes=4,
                                forward=t(fwd / (scale if xk else 1.0)), step=t(step), step_peak_bytes=2**20 * c))
    meta = dict(date="today", cpu="cpu", cores=2, load_avg=[1.0, 1.0, 1.0], python="3", torch="t", numpy="n",
                xkern="x", torch_threads=2, xkern_threads=2, device="cpu", dtype="float32", repeats=1,
                sample_time=0.0, passes=["forward", "step"], memory="rss high-water mark",
                layers={"L1": "1x1"}, command="python -m xkern bench")
    return {"meta": meta, "results": results, "skipped": [dict(layer="L1", C=4, block=1, impl="x", reason="why")]}


def test_report_derives_efficiency_and_speedups():
    result = _fake_result()
    configs = report.by_config(result)
    eff, speedup = report.derive(configs[0], "forward")
    assert eff["xkern"] == pytest.approx(10.0 * 64 / 256 / 2.0)      # 1.25
    assert eff["grouped"] == pytest.approx(10.0 * 64 / 256 / 5.0)    # 0.5
    assert speedup["vs grouped"] == pytest.approx(2.5)
    assert speedup["vs masked"] == pytest.approx(6.0)
    s = report.summary(result)
    # C=8: xkern forward 0.5 ms -> eff 10 * 32/256 / 0.5 = 2.5; geomean with 1.25
    assert s["forward"]["block 1"]["eff xkern"] == pytest.approx((1.25 * 2.5) ** 0.5)
    assert s["step"]["block 1"]["vs grouped"] == pytest.approx(2.5)
    assert {t["what"] for t in s["targets"]} == {"forward efficiency of xkern (block 1)",
                                                 "step speedup of xkern vs grouped (block 1)"}
    text = report.text(result)
    assert "1.25" in text and "2.50x" in text and "6.00x" in text and "x: why" in text
    assert "geomean block 1" in text and "1.77" in text   # sqrt(1.25 * 2.5)
    md = report.markdown(result)
    assert "| layer | C | D | block | dense ms |" in md and md.count("| L1 |") == 6
    assert json.loads(report.to_json(result))["summary"]["step"]["block 1"]["vs masked"] == pytest.approx(5.0)


# the CLI -------------------------------------------------------------------------------

TINY = ["bench", "--layers", "T1", "-C", "2", "--block", "1", "4", "--backend", "reference",
        "--repeats", "1", "--sample-time", "0", "--threads", "1", "--quiet"]


def test_cli_prints_the_tables_and_writes_files(tmp_path, capsys, restore_threads):
    files = {k: tmp_path / f"bench.{k}" for k in ("json", "md", "png")}
    assert main(TINY + ["--json", str(files["json"]), "--markdown", str(files["md"]),
                        "--plot", str(files["png"])]) == 0
    out = capsys.readouterr().out
    for column in ("dense ms", "grouped ms", "masked ms", "xkern ms", "eff grouped", "eff masked", "eff xkern",
                   "xkern vs grouped", "xkern vs masked", "dense MB", "xkern MB"):
        assert column in out
    lines = out.splitlines()
    assert sum(line.startswith("T1 ") for line in lines) == 2 * 3    # 2 blocks x (forward, step, memory)
    assert sum(line.startswith("geomean block") for line in lines) == 2 * 2
    assert "threads: torch 1, xkern 1" in out
    assert "allocator: glibc malloc defaults" in out
    saved = json.loads(files["json"].read_text())
    assert {(r["impl"], r["block"]) for r in saved["results"]} == {
        (i, b) for i in baselines.IMPLS for b in (1, 4)}
    assert all(r["forward"]["median"] > 0 and r["step"]["median"] > 0 for r in saved["results"])
    assert "| T1 | 2 | 8 | 4 |" in files["md"].read_text()
    assert files["png"].stat().st_size > 0
    # a saved run renders to the same tables without timing anything
    assert main(["bench", "--from-json", str(files["json"])]) == 0
    assert capsys.readouterr().out == out


def test_cli_keep_freed_memory_changes_the_allocator_and_says_so():
    """--keep-freed-memory sets glibc's malloc thresholds for the whole process (so in a child
    process here): afterwards, a freed 16 MiB block is reused without a page fault."""
    out = run_python(
        "import resource, sys, numpy as np\n"
        "from xkern.__main__ import main\n"
        "code = main(sys.argv[1:])\n"
        "faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "np.ones(4 << 20, np.float32)\n"
        "before = faults()\n"
        "for _ in range(3): np.ones(4 << 20, np.float32)\n"
        "print('exit', code, 'faults', faults() - before)\n",
        *TINY, "--keep-freed-memory")
    assert "allocator: glibc malloc keeping freed memory" in out
    assert "--keep-freed-memory" in out  # in the recorded command
    words = out.split()
    assert words[words.index("exit") + 1] == "0"
    assert int(words[words.index("faults") + 1]) < 100  # ~500 here without the flag


def test_cli_rejects_a_bad_config(capsys, restore_threads):
    assert main(TINY[:3] + ["-C", "3"] + TINY[5:]) == 2
    assert "compression 3 must divide" in capsys.readouterr().err


def test_model_pairs_run_and_render():
    pair = models.ModelPair("x-densenet-bc-2-40-24", "densenet-bc-40-24", (3, 8, 8), 2, 2)
    result = suite.run_models([pair], repeats=1, sample_time=0.0, with_memory=False)
    (row,) = result["models"]
    assert row["x_stats"]["param_bytes"] < row["dense_stats"]["param_bytes"]
    assert row["x_stats"]["macs"] < row["dense_stats"]["macs"]
    title, headers, rows = report.tables(result)[0]
    assert headers[:4] == ["X-Net", "dense twin", "batch", "input"] and rows[0][:4] == [
        "x-densenet-bc-2-40-24", "densenet-bc-40-24", "2", "3x8x8"]
    assert "dense/X MACs" in report.text(result)
    # batch-1 inference beside the step, and every distinct X layer timed in both phases
    assert row["x_stats"]["infer"]["median"] > 0 and row["dense_stats"]["infer"]["median"] > 0
    assert headers[-4:] == ["batch-1 input", "X infer ms", "dense infer ms", "X infer speedup"]
    from xkern.bench.network_layers import x_layers
    from xkern.models import create
    expected = x_layers(create("x-densenet-bc-2-40-24", 10, seed=0), (3, 8, 8))
    assert len(expected) >= 2 and sum(layer.count for layer, _ in expected) == sum(
        isinstance(m, xkern.nn.XConv2d) for m in create("x-densenet-bc-2-40-24", 10, seed=0).modules())
    for mode in ("step", "infer"):
        got = row["layers"][mode]
        assert [r["layer"] for r in got] == [layer._asdict() for layer, _ in expected]
        assert all(r["eff"] > 0 and r["batch"] == (2 if mode == "step" else 1) for r in got)
    title, headers, rows = report.tables(result)[1]
    assert title.startswith("x-densenet-bc-2-40-24: its X layers") and len(rows) == 2 * len(expected)
    text = report.text(result)
    assert "fwd+bwd efficiency of the networks' X layers, geomean" in text
    assert "X-Net batch-1 inference vs dense twin, geomean" in text
    gm = report.network_summary(result)
    assert gm["layer eff step"] == pytest.approx(report.geomean(r["eff"] for r in row["layers"]["step"]))
    # the model's step differentiates every parameter: the gradients cover param_bytes exactly
    case, _ = models.model_case("x-densenet-bc-2-40-24", (3, 8, 8), 2)
    grads = case.step()
    assert sum(g.numel() * g.element_size() for g in grads) == case.param_bytes
    assert all(torch.isfinite(g).all() for g in grads)


def test_model_pairs_with_block_expanders():
    pair = models.ModelPair("x-densenet-bc-2-40-24", "densenet-bc-40-24", (3, 8, 8), 2, 2)
    result = suite.run_models([pair], repeats=1, sample_time=0.0, with_memory=False, block=8)
    (row,) = result["models"]
    assert row["block"] == 8 and row["x_stats"]["macs"] < row["dense_stats"]["macs"]
    title, headers, rows = report.tables(result)[0]
    assert rows[0][:2] == ["x-densenet-bc-2-40-24 (block 8)", "densenet-bc-40-24"]
    assert report.tables(result)[1][0].startswith("x-densenet-bc-2-40-24 (block 8): its X layers")
    # the layers timed are the block model's: every index in runs of 8 equal rows
    model = models.create_model("x-densenet-bc-2-40-24", 0, 8)
    from xkern.bench.network_layers import x_layers
    for _, index in x_layers(model, (3, 8, 8)):
        runs = index.reshape(-1, 8, index.shape[1])
        assert (runs == runs[:, :1]).all()


def test_cli_models_take_one_block(capsys, restore_threads):
    assert main(["bench", "--models", "--block", "1", "8", "--quiet"]) == 2
    assert "--models takes one block size, got 1 8" in capsys.readouterr().err


# the asv suite uses the same definitions -----------------------------------------------

def _asv_module():
    path = ROOT / "asv_bench" / "benchmarks" / "xconv.py"
    spec = importlib.util.spec_from_file_location("xkern_asv_xconv", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_asv_params_are_consistent():
    asv = _asv_module()
    conf = (ROOT / "asv_bench" / "asv.conf.json").read_text()
    assert '"benchmark_dir": "benchmarks"' in conf and "--no-deps" in conf
    for cls in (asv.XConv, asv.Compare, asv.BlockXConv):
        assert {"time_forward", "time_forward_backward", "peakmem_step", "track_step_peak_mb"} <= set(dir(cls))
    # XConv is not parameterised: asv names its methods "xconv.XConv.time_forward", which
    # `-b "XConv.time_forward$"` selects (parameterised names end in "(param, ...)")
    assert not getattr(asv.XConv, "params", None)
    for cls in (asv.Compare, asv.BlockXConv):
        assert len(cls.params) == len(cls.param_names)
        grid = dict(zip(cls.param_names, cls.params))
        assert set(grid["layer"]) == set(layers.REFERENCE) and grid["C"] == list(layers.COMPRESSIONS)
        for name in grid["layer"]:                # every (layer, C, block) combination is a valid config
            for c in grid["C"]:
                for block in grid.get("block", [1]):
                    layers.make_config(layers.get_layer(name), c, block)
    assert asv.Compare.params[2] == list(baselines.IMPLS)


def test_asv_setup_runs_or_skips():
    asv = _asv_module()
    bench = asv.Compare()
    bench.setup("L1", 8, "grouped", "cpu")
    bench.time_forward("L1", 8, "grouped", "cpu")
    assert bench.track_step_peak_mb("L1", 8, "grouped", "cpu") > 0
    if not torch.cuda.is_available():
        with pytest.raises(NotImplementedError):
            asv.Compare().setup("L1", 8, "dense", "cuda")


def test_asv_xconv_covers_every_layer_and_compression(monkeypatch):
    monkeypatch.setenv("XKERN_ASV_LAYERS", "T1,T3")
    asv = _asv_module()
    bench = asv.XConv()
    try:
        bench.setup()
    except NotImplementedError:
        pytest.skip("the xkern cpu backend is not built")
    assert len(bench.cases) == 2 * len(layers.COMPRESSIONS)     # T1 and T3, each at every C
    assert all(case.impl == "xkern" and "cpu" in case.api for case in bench.cases)
    bench.time_forward()
    bench.time_forward_backward()
    assert bench.track_step_peak_mb() >= 0


def test_interleaved_timing_takes_samples_in_turns():
    order = []
    fns = [lambda: order.append("a"), lambda: order.append("b")]
    timings = timing.measure_interleaved(fns, repeats=3, sample_time=0.0, warmup=1)
    assert [t.repeats for t in timings] == [3, 3] and [t.number for t in timings] == [1, 1]
    # warm-up a, b; one calibration call each; then a, b, a, b, a, b
    assert order == ["a", "b", "a", "b"] + ["a", "b"] * 3
    with pytest.raises(ValueError, match="one sync per callable"):
        timing.measure_interleaved(fns, syncs=[None])
