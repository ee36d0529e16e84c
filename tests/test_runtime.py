"""xkern.runtime: .xk files from torch models, run with numpy, compared with torch eval mode.

The acceptance bar is a max abs difference of 1e-4 from the torch model's logits (float32).
The paper's models are checked in a child process where importing torch or numba fails.
"""
import io
import json

import numpy as np
import pytest
import torch
from torch import nn

import xkern
from xkern import runtime
from xkern.runtime import format as xk_format

from edge_models import PAPER_MODELS, Functional, paper_model, zoo
from testing import run_python

TOL = 1e-4
BLOCK = "import sys; sys.modules['torch'] = None; sys.modules['numba'] = None\n"


def torch_logits(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def inputs(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def paper_files(tmp_path_factory):
    """{name: (file.xk, input.npy, torch logits, Graph)} for the paper's three families."""
    folder = tmp_path_factory.mktemp("paper")
    files = {}
    for i, (name, shape, classes) in enumerate(PAPER_MODELS):
        model = paper_model(name, classes, seed=i)
        x = inputs(shape, seed=i)
        path, xpath = folder / f"{name}.xk", folder / f"{name}.npy"
        graph = runtime.save(model, path, shape)
        np.save(xpath, x)
        files[name] = (path, xpath, torch_logits(model, x), graph)
    return files


def test_paper_models_match_torch_without_torch_or_numba(paper_files, tmp_path):
    code = BLOCK + """
import json, sys
import numpy as np
import xkern
from xkern import runtime
for xk, xin, out in json.loads(sys.argv[1]):
    np.save(out, runtime.load(xk).predict(np.load(xin)))
print(json.dumps([sorted(m for m in ("torch", "numba") if sys.modules.get(m)), xkern.get_num_threads()]))
"""
    jobs = [(str(xk), str(xin), str(tmp_path / f"{name}.out.npy"))
            for name, (xk, xin, _, _) in paper_files.items()]
    # OMP_NUM_THREADS sets the kernels' threads when set_num_threads was not called
    assert json.loads(run_python(code, json.dumps(jobs), env={"OMP_NUM_THREADS": "1"})) == [[], 1]
    for (name, (_, _, expected, _)), (_, _, out) in zip(paper_files.items(), jobs):
        got = np.load(out)
        assert got.shape == expected.shape and got.dtype == np.float32
        assert np.abs(got - expected).max() <= TOL, name
        assert np.abs(expected).max() > 1e-2, "logits too small for the comparison to mean anything"


@pytest.mark.parametrize("name, foldable", [("x-mobilenet-0.5-4", True), ("x-resnet-2-18", True),
                                            ("x-densenet-bc-2-40-24", False)])
def test_batch_norms_fold_into_convs(paper_files, name, foldable):
    graph = paper_files[name][3]
    ops = [n.op for n in graph.nodes]
    model = paper_model(name, 10)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    if foldable:  # every BN follows a conv read by nothing else
        assert "affine" not in ops
    else:  # DenseNet's pre-activation BNs read concatenations (1 per layer + the final one)
        assert 0 < ops.count("affine") < n_bn
    assert ops.count("xconv2d") == sum(isinstance(m, xkern.nn.XConv2d) for m in model.modules())


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_every_op_matches_torch(backend, tmp_path):
    for model, shape in [(zoo(), (3, 4, 13, 13)), (Functional().eval(), (2, 3, 10, 9))]:
        x = inputs(shape)
        runtime.save(model, tmp_path / "m.xk", shape)
        got = runtime.load(tmp_path / "m.xk", backend=backend).predict(x)
        np.testing.assert_allclose(got, torch_logits(model, x), rtol=0, atol=TOL)


def test_save_without_input_shape_and_any_batch(tmp_path):
    model = zoo()
    runtime.save(model, tmp_path / "m.xk")
    program = runtime.load(tmp_path / "m.xk")
    assert program.input_shape == (None,) * 4
    for batch in (1, 5):
        x = inputs((batch, 4, 13, 13), seed=batch)
        np.testing.assert_allclose(program.predict(x), torch_logits(model, x), rtol=0, atol=TOL)


def test_training_mode_model_is_saved_as_eval(tmp_path):
    model = zoo().train()
    x = inputs((2, 4, 13, 13))
    runtime.save(model, tmp_path / "m.xk", x.shape)
    assert model.training and model.bn.training  # save leaves the modes as they were
    got = runtime.load(tmp_path / "m.xk").predict(x)
    np.testing.assert_allclose(got, torch_logits(model.eval(), x), rtol=0, atol=TOL)


def test_results_do_not_depend_on_thread_count(paper_files):
    path, xpath, _, _ = paper_files["x-resnet-2-18"]
    program, x = runtime.load(path), np.load(xpath)
    try:
        xkern.set_num_threads(1)
        one = program.predict(x)
        xkern.set_num_threads(2)
        two = program.predict(x)
    finally:
        xkern.set_num_threads(None)
    np.testing.assert_array_equal(one, two)


def test_predict_leaves_the_input_alone(tmp_path):
    class ReadTwice(nn.Module):  # x feeds a relu and an add: neither may write into it
        def forward(self, x):
            return torch.relu(x) + x
    runtime.save(ReadTwice(), tmp_path / "m.xk")
    x = inputs((2, 3, 4, 4))
    before = x.copy()
    got = runtime.load(tmp_path / "m.xk").predict(x)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_allclose(got, np.maximum(before, 0) + before)


def test_layer_list_and_summary(paper_files):
    path = paper_files["x-resnet-2-18"][0]
    program = runtime.load(path)
    layers = program.layers()
    assert layers[0] == ("stem_0", "conv2d", ("x",))
    assert layers[-1][1] == "linear"
    assert len(layers) == len(program.graph.nodes)
    out, times = program.profile(np.load(paper_files["x-resnet-2-18"][1]))
    assert [t[0] for t in times] == [name for name, _, _ in layers]
    assert "stem_0: conv2d(x) -> (2, 64, 16, 16)" in program.graph.summary()


def test_file_holds_no_pickles_and_a_versioned_graph(paper_files):
    path = paper_files["x-mobilenet-0.5-4"][0]
    with np.load(path, allow_pickle=False) as f:
        doc = json.loads(str(f["graph.json"][()]))
        assert all(f[k].dtype != object for k in f.files)
        index = f["features_8_0.index"]
    assert doc["format"] == "xkern-runtime" and doc["version"] == 1
    assert doc["input_shape"] == [None, 3, 64, 64]
    node = next(n for n in doc["nodes"] if n["name"] == "features_8_0")
    assert node["op"] == "xconv2d" and index.dtype == np.int64 and index.shape == (128, 16)


def _rewrite(src, dst, edit):
    """Copy the .xk file src to dst with edit(doc, arrays) applied."""
    with np.load(src) as f:
        arrays = {k: f[k] for k in f.files}
    doc = json.loads(str(arrays.pop("graph.json")[()]))
    edit(doc, arrays)
    arrays["graph.json"] = np.array(json.dumps(doc))
    with open(dst, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize("edit, message", [
    (lambda d, a: d.update(version=2), "version 2"),
    (lambda d, a: d.update(format="other"), "not an xkern runtime file"),
    (lambda d, a: d["nodes"][1].update(op="gelu"), "unknown op 'gelu'"),
    (lambda d, a: d["nodes"][1].update(inputs=["nowhere"]), "reads 'nowhere'"),
    (lambda d, a: d["nodes"][0]["attrs"].pop("stride"), "'stride' is missing"),
    (lambda d, a: d["nodes"][0]["attrs"].update(stride=[0, 1]), "'stride' is invalid"),
    (lambda d, a: a.update({"features_8_0.index": a["features_8_0.index"] + 1000}), "index entries"),
    (lambda d, a: a.update({"features_8_0.weight": a["features_8_0.weight"][:, :3]}), "index must have shape"),
    (lambda d, a: a.pop("features_8_0.bias"), "malformed graph.json"),
])
def test_bad_files_raise_value_error(paper_files, tmp_path, edit, message):
    bad = tmp_path / "bad.xk"
    _rewrite(paper_files["x-mobilenet-0.5-4"][0], bad, edit)
    with pytest.raises(ValueError, match=message):
        runtime.load(bad)


def test_not_an_xk_file(tmp_path):
    (tmp_path / "text.xk").write_text("hello")
    np.save(tmp_path / "one.npy", np.zeros(3))
    np.savez(tmp_path / "objects.npz", **{"graph.json": np.array([{"a": 1}], dtype=object)})
    for name in ("text.xk", "one.npy", "objects.npz"):
        with pytest.raises(ValueError):
            runtime.load(tmp_path / name)


def test_file_objects_round_trip():
    buffer = io.BytesIO()
    graph = runtime.save(zoo(), buffer, (1, 4, 13, 13))
    buffer.seek(0)
    assert xk_format.read(buffer).summary() == graph.summary()


def test_bad_inputs_to_predict(paper_files):
    program = runtime.load(paper_files["x-mobilenet-0.5-4"][0])
    with pytest.raises(ValueError, match=r"\(None, 3, 64, 64\)"):
        program.predict(np.zeros((1, 4, 64, 64), np.float32))
    with pytest.raises(ValueError, match="batch"):
        program.predict(np.zeros((3, 64, 64), np.float32))
    with pytest.raises(TypeError, match="complex"):
        program.predict(np.zeros((1, 3, 64, 64), np.complex64))
    with pytest.raises(ValueError, match="backend"):
        runtime.load(paper_files["x-mobilenet-0.5-4"][0], backend="cuda")


def test_wrong_size_inside_the_network_names_the_node(tmp_path):
    runtime.save(zoo(), tmp_path / "zoo.xk")  # no input_shape: the layers find out
    with pytest.raises(ValueError, match=r"node 'conv' \(conv2d\): expects \(B, 4, H, W\)"):
        runtime.load(tmp_path / "zoo.xk").predict(inputs((1, 5, 13, 13)))
    runtime.save(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), tmp_path / "mlp.xk")
    with pytest.raises(ValueError, match=r"\(linear\): expects \(B, 12\), got \(1, 18\)"):
        runtime.load(tmp_path / "mlp.xk").predict(inputs((1, 2, 3, 3)))


class _Unsupported(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how
        self.gelu = nn.GELU()

    def forward(self, x):
        if self.how == "module":
            return self.gelu(x)
        if self.how == "function":
            return torch.sigmoid(x)
        if self.how == "batch":
            return torch.cat([x, x], 0)
        return x + 2


@pytest.mark.parametrize("how, message", [("module", "GELU"), ("function", "sigmoid"),
                                          ("batch", "batch axis"), ("scalar", "not a tensor")])
def test_unsupported_models_name_the_node(how, message, tmp_path):
    with pytest.raises(NotImplementedError, match=message):
        runtime.save(_Unsupported(how), tmp_path / "m.xk", (1, 3, 4, 4))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(folder, torch model): folder holds ckpt.pt, a checkpoint as `xkern train` writes it,
    and m.xk, written from it by `python -m xkern export`."""
    from xkern.__main__ import main
    folder = tmp_path_factory.mktemp("cli")
    model = paper_model("x-resnet-2-18", 10, seed=5)
    torch.save({"format": "xkern-train-checkpoint-1", "model_name": "x-resnet-2-18",
                "num_classes": 10, "classes": [f"class{i}" for i in range(10)],
                "image_shape": [3, 32, 32], "seed": 5,
                "normalization": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]},
                "model": model.state_dict()}, folder / "ckpt.pt")
    assert main(["export", "--checkpoint", str(folder / "ckpt.pt"), "--out", str(folder / "m.xk")]) == 0
    return folder, model


PREDICT = BLOCK + """
import sys
from xkern.__main__ import main
main(["predict", "m.xk", *sys.argv[1:]])
print("loaded:", sorted(m for m in ("torch", "numba") if sys.modules.get(m)))
"""


def test_cli_predict_npy_without_torch(exported):
    folder, model = exported
    x = inputs((2, 3, 32, 32))
    np.save(folder / "x.npy", x)
    lines = run_python(PREDICT, "x.npy", "--top", "3", cwd=folder).splitlines()
    best = [f"class{c}" for c in torch_logits(model, x).argmax(1)]
    assert lines[0] == "sample 0:" and lines[1].split()[1] == best[0]
    assert lines[4] == "sample 1:" and lines[5].split()[1] == best[1]
    assert len(lines) == 9 and lines[-1] == "loaded: []"


def test_cli_predict_png_without_torch(exported):
    mpimg = pytest.importorskip("matplotlib.image")
    folder, model = exported
    mpimg.imsave(folder / "img.png", np.random.default_rng(1).random((40, 50, 3)))
    lines = run_python(PREDICT, "img.png", "--threads", "1", cwd=folder).splitlines()
    assert lines[0] == "img.png:" and len(lines) == 1 + 5 + 1 and lines[-1] == "loaded: []"
    # what predict should do: drop alpha (imsave writes RGBA), resize 40x50 -> 32x32 by
    # nearest pixel, normalise with the checkpoint's mean and std
    png = mpimg.imread(folder / "img.png")[..., :3].transpose(2, 0, 1)
    png = png[:, np.arange(32) * 40 // 32][:, :, np.arange(32) * 50 // 32]
    png = (png - np.array([0.5, 0.4, 0.3])[:, None, None]) / np.array([0.2, 0.25, 0.3])[:, None, None]
    top = torch_logits(model, png[None].astype(np.float32))[0].argmax()
    assert lines[1].split()[1] == f"class{top}"


def test_cli_export_onnx(exported):
    onnxruntime = pytest.importorskip("onnxruntime")
    from xkern.__main__ import main
    folder, model = exported
    assert main(["export", "--checkpoint", str(folder / "ckpt.pt"), "--out", str(folder / "m.onnx")]) == 0
    x = inputs((2, 3, 32, 32))
    got = onnxruntime.InferenceSession(str(folder / "m.onnx")).run(None, {"x": x})[0]
    assert np.abs(got - torch_logits(model, x)).max() <= TOL


def test_cli_errors(tmp_path):
    from xkern.__main__ import main
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(SystemExit, match="not a checkpoint"):
        main(["export", "--checkpoint", str(tmp_path / "other.pt"), "--out", str(tmp_path / "m.xk")])
    runtime.save(zoo(), tmp_path / "m.xk", (1, 4, 13, 13))
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(SystemExit, match=".npy or .png"):
        main(["predict", str(tmp_path / "m.xk"), str(tmp_path / "x.txt")])
    with pytest.raises(SystemExit, match="no such file"):
        main(["predict", str(tmp_path / "missing.xk"), str(tmp_path / "x.txt")])


def test_numpy_executor_passes_the_cached_graph(monkeypatch):
    """The numpy executor's X-Conv steps hand the kernel xkern.ops' cached copy of the graph, so
    the term lists derived from it are found by identity on every call."""
    from xkern.backends import _graphs, cpu
    from xkern.runtime import Graph, Node, Program
    seen = []
    monkeypatch.setattr(cpu, "xconv2d_fwd", lambda *a, real=cpu.xconv2d_fwd: seen.append(a[2]) or real(*a))
    rng = np.random.default_rng(0)
    index = np.array([(np.arange(3) + v) % 6 for v in range(5)])
    conv = Node("conv", "xconv2d", ["x"], dict(stride=[1, 1], padding=[1, 1], dilation=[1, 1], in_channels=6),
                {"weight": rng.standard_normal((5, 3, 3, 3)).astype(np.float32),
                 "bias": np.zeros(5, np.float32), "index": index})
    program = Program(Graph("x", (None, 6, None, None), [conv], "conv"), backend="cpu")
    x = rng.standard_normal((2, 6, 4, 4)).astype(np.float32)
    first = program.predict(x)
    assert np.array_equal(first, program.predict(x))
    assert len(seen) == 2 and seen[0] is seen[1]
    assert seen[0] is _graphs.lookup(index, 6) and not seen[0].flags.writeable
    assert np.array_equal(seen[0], index)
