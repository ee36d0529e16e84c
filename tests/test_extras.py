"""Missing optional packages: every command says, before it does any work, which extra installs
what it needs; training runs without tqdm (no progress bars) and without matplotlib (no plots).

A missing package is simulated by sys.modules[name] = None, which makes `import name` raise
ImportError and xkern._extras.available(name) answer False.
"""
import os
import sys

import pytest

from xkern import _extras
from xkern.__main__ import main


def _missing(monkeypatch, *names):
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


def test_available_and_require(monkeypatch):
    assert _extras.available("numpy")
    assert not _extras.available("no_such_module_xkern")
    _missing(monkeypatch, "tqdm")
    assert not _extras.available("tqdm")
    with pytest.raises(ImportError, match=r"tqdm.*pip install 'xkern\[train\]'"):
        _extras.require("progress bars", "tqdm")
    _missing(monkeypatch, "onnx", "onnxruntime")
    with pytest.raises(_extras.MissingExtra, match=r"onnx, onnxruntime, which are not installed: "
                                                   r"pip install 'xkern\[onnx\]'"):
        _extras.require("ONNX", "onnx", "onnxruntime")
    assert "pip install 'xkern[graphs]'" in _extras.missing_message("matplotlib", "--plot", "graphs")


TINY = ["--data", "digits", "--image-size", "8", "--limit", "64", "--device", "cpu", "--epochs", "1"]


@pytest.mark.parametrize("argv, module, extra", [
    (["train", "--model", "x-resnet-2-18", *TINY], "torch", "train"),
    (["train", "--model", "x-resnet-2-18", *TINY], "sklearn", "train"),
    (["compare", "--models", "resnet-18", *TINY], "sklearn", "train"),
    (["train", "--model", "x-resnet-2-18", "--data", "digits", "--device", "cuda", "--epochs", "1"],
     "numba", "cuda"),
    (["bench", "--quick"], "torch", "torch"),
    (["bench", "--quick", "--backend", "cuda"], "numba", "cuda"),
    (["bench", "--quick", "--plot", "b.png"], "matplotlib", "bench"),
    (["graph", "--n-in", "16", "--degree", "4", "--plot", "g.png"], "matplotlib", "graphs"),
    (["export", "--checkpoint", "missing.pt", "--out", "m.onnx"], "onnx", "onnx"),
    (["predict", "missing.xk", "image.png"], "matplotlib", "graphs"),
], ids=["train-torch", "train-sklearn", "compare-sklearn", "train-cuda-numba", "bench-torch",
        "bench-cuda-numba", "bench-plot", "graph-plot", "export-onnx", "predict-png"])
def test_commands_name_the_extra_before_any_work(monkeypatch, tmp_path, capsys, argv, module, extra):
    """Each command stops at once (exit 2, one line naming the extra), before reading data,
    building a model or timing anything: --out stays empty and nothing prints on stdout."""
    _missing(monkeypatch, module)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    if argv[0] in ("train", "compare"):
        argv = argv + ["--out", str(out)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    package = _extras.PACKAGES[module][0]
    assert f"xkern {argv[0]}: error:" in captured.err
    assert package in captured.err and f"pip install 'xkern[{extra}]'" in captured.err
    assert "Traceback" not in captured.err
    assert not out.exists() and not any(tmp_path.iterdir())


def test_training_runs_without_tqdm_and_matplotlib(monkeypatch, tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    _missing(monkeypatch, "tqdm", "matplotlib")
    out = tmp_path / "run"
    argv = ["train", "--model", "x-resnet-2-18", "--data", "digits", "--image-size", "8",
            "--limit", "32", "--device", "cpu", "--epochs", "1", "--batch-size", "16", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "no progress bars: progress bars needs tqdm" in text
    assert "no curves.png: plotting needs matplotlib" in text
    assert text.count("pip install 'xkern[train]'") == 2
    assert (out / "model_final.pt").is_file() and not (out / "curves.png").exists()
    assert os.path.isfile(out / "metrics.jsonl")


def test_onnx_export_without_onnx_names_the_extra(monkeypatch):
    """xkern.onnx.export, called from Python rather than the CLI, says which extra installs onnx
    before it traces the model."""
    import xkern.onnx
    traced = []
    monkeypatch.setattr("xkern.export.to_graph", lambda *args, **kwargs: traced.append(1))
    _missing(monkeypatch, "onnx")
    with pytest.raises(_extras.MissingExtra, match=r"xkern.onnx.export needs onnx, .*pip install 'xkern\[onnx\]'"):
        xkern.onnx.export(object(), "m.onnx", (1, 3, 8, 8))
    with pytest.raises(_extras.MissingExtra, match=r"pip install 'xkern\[onnx\]'"):
        xkern.onnx.graph_to_onnx(object())
    assert traced == []
