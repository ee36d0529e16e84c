"""xkern.onnx: X-Nets as standard ONNX graphs, run by onnxruntime, compared with torch eval."""
import json

import numpy as np
import pytest
import torch

from xkern import onnx as xonnx
from xkern.export import to_graph
from xkern.runtime import Program

from edge_models import PAPER_MODELS, Functional, paper_model, zoo

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOL = 1e-4


def run_onnx(path, x):
    ort_run = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in ort_run.get_inputs()]
    return ort_run.run(None, {name: x})[0]


def torch_logits(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def inputs(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("name, shape, classes", PAPER_MODELS)
@pytest.mark.parametrize("xconv", ["gather", "dense"])
def test_paper_models_run_in_onnxruntime(name, shape, classes, xconv, tmp_path):
    model = paper_model(name, classes, seed=3)
    x = inputs(shape, seed=3)
    proto = xonnx.export(model, tmp_path / "m.onnx", (1,) + shape[1:], xconv=xconv)
    onnx.checker.check_model(str(tmp_path / "m.onnx"), full_check=True)
    ops = {n.op_type for n in proto.graph.node}
    assert ("Gather" in ops) == (xconv == "gather")
    assert "BatchNormalization" not in ops
    expected = torch_logits(model, x)
    got = run_onnx(tmp_path / "m.onnx", x)  # batch 2 through a model exported at batch 1
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= TOL


def test_x_conv_is_a_gather_and_a_grouped_conv(tmp_path):
    model = paper_model("x-mobilenet-0.5-4", 10)
    proto = xonnx.export(model, tmp_path / "m.onnx", (1, 3, 64, 64))
    layer = model.features[8][0]  # the first X-Conv: 64 -> 128 channels, D = 16
    nodes = {n.name: n for n in proto.graph.node}
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    gather, conv = nodes["features_8_0.gathered"], nodes["features_8_0"]
    assert gather.op_type == "Gather" and conv.op_type == "Conv"
    assert conv.input[0] == "features_8_0.gathered"
    np.testing.assert_array_equal(weights[gather.input[1]], layer.index.numpy().ravel())
    assert {a.name: a.i for a in conv.attribute if a.name == "group"} == {"group": 128}
    assert weights[conv.input[1]].shape == (128, 16, 1, 1)  # compact weights, BN folded in


@pytest.mark.parametrize("xconv", ["gather", "dense"])
def test_every_op_matches_torch(xconv, tmp_path):
    for model, shape in [(zoo(), (3, 4, 13, 13)), (Functional(divisor=False).eval(), (2, 3, 10, 9))]:
        x = inputs(shape)
        xonnx.export(model, tmp_path / "m.onnx", shape, xconv=xconv)
        np.testing.assert_allclose(run_onnx(tmp_path / "m.onnx", x), torch_logits(model, x),
                                   rtol=0, atol=TOL)


def test_runtime_graph_converts_without_torch_and_keeps_meta(tmp_path):
    graph = to_graph(zoo(), (1, 4, 13, 13), meta={"classes": ["a", "b", "c", "d", "e"]})
    proto = xonnx.graph_to_onnx(graph)
    assert json.loads({p.key: p.value for p in proto.metadata_props}["classes"]) == list("abcde")
    onnx.save(proto, tmp_path / "m.onnx")
    program = Program(graph)
    x = inputs((2, 4, 13, 13))
    np.testing.assert_allclose(run_onnx(tmp_path / "m.onnx", x), program.predict(x), rtol=0, atol=TOL)


def test_what_onnx_cannot_express(tmp_path):
    with pytest.raises(NotImplementedError, match="divisor_override"):
        xonnx.export(Functional(divisor=True).eval(), tmp_path / "m.onnx", (1, 3, 10, 9))
    with pytest.raises(ValueError, match="input_shape"):
        xonnx.graph_to_onnx(to_graph(zoo()))
    with pytest.raises(ValueError, match="xconv"):
        xonnx.export(zoo(), tmp_path / "m.onnx", (1, 4, 13, 13), xconv="sparse")
