"""Training: the CLI on digits (metrics, checkpoint with graphs, resume), torchrun with two
gloo processes, compare, and the dataset readers (CIFAR pickles, image folders, digits)."""
import json
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("tqdm")

import xkern  # noqa: E402
from xkern.__main__ import main  # noqa: E402
from xkern.models.layers import LayerFactory  # noqa: E402
from xkern.training import data as datasets  # noqa: E402
from xkern.training import loop  # noqa: E402
from xkern.training.compare import plan  # noqa: E402
from xkern.training.recipes import recipe_for  # noqa: E402

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(xkern.__file__)))
# Digits at their native 8x8 and 400 images: one epoch takes well under a second.
QUICK = ["--data", "digits", "--image-size", "8", "--limit", "400", "--device", "cpu",
         "--no-progress"]


def tiny_net(name, num_classes, seed, block=1):
    """"tiny", "x-tiny-C" or "g-tiny-C": (B, 3, 8, 8) -> (B, num_classes) logits.

    A dense first conv, one compressible 3x3 conv (dense, X or grouped: made by the models'
    LayerFactory like every registry network, an X one's graph in blocks of `block`
    outputs), a linear classifier.
    """
    m = re.fullmatch(r"(?:(?P<kind>[xg])-)?tiny(?:-(?P<c>\d+))?", name)
    if m is None or (m["kind"] is None) != (m["c"] is None):
        raise ValueError(f"unknown model name {name!r}")
    factory = LayerFactory(m["kind"] or "dense", m["c"] and int(m["c"]), seed=seed, block=block)
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1, bias=False), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        factory.conv(16, 32, 3, 1, 1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(32 * 8 * 8, num_classes))


@pytest.fixture
def tiny_models(monkeypatch):
    monkeypatch.setattr(loop, "build_model", tiny_net)
    # One thread: results must not depend on thread scheduling when runs are compared exactly.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def accuracy_of(state_dict, splits, name, seed):
    """Val accuracy of a saved model, computed here in one process over the whole val split."""
    model = tiny_net(name, splits.num_classes, seed)
    model.load_state_dict(state_dict)
    model.eval()
    x = splits.transform(splits.val.images, train=False)
    with torch.no_grad():
        return (model(x).argmax(1) == splits.val.labels).double().mean().item()


def test_digits_run_checkpoint_and_resume(tiny_models, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--model", "x-tiny-4", "--epochs", "1", "--out", out] + QUICK) == 0
    printed = capsys.readouterr().out
    assert "recipe: SGD lr 0.01, momentum 0.9 (Nesterov), weight decay 0.0005, batch 16" in printed
    [row] = read_metrics(out)
    assert row["epoch"] == 1 and row["world_size"] == 1
    assert {"train_loss", "val_accuracy", "seconds"} <= row.keys()
    assert row["val_accuracy"] > 0.5  # chance is 0.1
    assert os.path.isfile(os.path.join(out, "curves.png"))

    ckpt = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["model_name"] == "x-tiny-4" and ckpt["seed"] == 0
    assert {"optimizer", "scheduler", "args"} <= ckpt.keys()
    index = ckpt["model"]["3.index"]  # the X layer's graph
    assert torch.equal(index, tiny_net("x-tiny-4", 10, 0)[3].index)
    assert index.shape == (32, 4)
    final = torch.load(os.path.join(out, "model_final.pt"), weights_only=True)
    splits = datasets.load("digits", image_size=8, limit=400)
    assert accuracy_of(final["model"], splits, "x-tiny-4", 0) == pytest.approx(row["val_accuracy"])

    assert main(["train", "--model", "x-tiny-4", "--epochs", "2", "--out", out, "--resume"]
                + QUICK) == 0
    rows = read_metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2] and rows[0] == row
    resumed = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)
    assert resumed["epoch"] == 2

    # The resumed run is the uninterrupted one: same data order, augmentation, lr, momentum.
    straight = str(tmp_path / "straight")
    assert main(["train", "--model", "x-tiny-4", "--epochs", "2", "--out", straight] + QUICK) == 0
    assert read_metrics(straight)[1]["train_loss"] == pytest.approx(rows[1]["train_loss"], rel=1e-5)
    assert rows[1]["lr"] == pytest.approx(0.001)  # recipe: x0.1 from epoch 2 of 2
    expected = torch.load(os.path.join(straight, "checkpoint.pt"), weights_only=True)["model"]
    for key, value in expected.items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=1e-5, atol=1e-6)


def test_resume_without_checkpoint_and_wrong_model(tiny_models, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--model", "tiny", "--epochs", "1", "--out", out, "--resume"] + QUICK) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["train", "--model", "tiny", "--epochs", "1", "--out", out] + QUICK) == 0
    capsys.readouterr()
    assert main(["train", "--model", "x-tiny-2", "--epochs", "2", "--out", out, "--resume"]
                + QUICK) == 2
    assert "was trained with --model tiny, not x-tiny-2" in capsys.readouterr().err
    assert main(["train", "--model", "no-such-net", "--epochs", "1", "--out", out] + QUICK) == 2
    assert "unknown model name 'no-such-net'" in capsys.readouterr().err


def test_registry_model_through_cli(tmp_path):
    out = str(tmp_path / "run")
    assert main(["train", "--model", "x-mobilenet-0.5-4", "--data", "digits", "--limit", "32",
                 "--epochs", "1", "--out", out, "--device", "cpu", "--no-progress"]) == 0
    [row] = read_metrics(out)
    assert np.isfinite(row["train_loss"]) and 0 <= row["val_accuracy"] <= 1
    ckpt = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)
    graphs = {k: v for k, v in ckpt["model"].items() if k.endswith(".index")}
    assert graphs and all(v.dtype == torch.int64 for v in graphs.values())
    model = xkern.models.create("x-mobilenet-0.5-4", num_classes=10, seed=0)
    for key, value in graphs.items():
        assert torch.equal(value, model.state_dict()[key])


LAUNCH = """import sys
sys.path.insert(0, {tests!r})
import test_train
from xkern.training import loop
from xkern.__main__ import main
loop.build_model = test_train.tiny_net
sys.exit(main())
"""


def test_torchrun_two_gloo_processes(tiny_models, tmp_path):
    """2 CPU processes with batch 8 each see the same global batches as 1 process with 16."""
    script = tmp_path / "launch.py"
    script.write_text(LAUNCH.format(tests=TESTS))
    out = str(tmp_path / "ddp")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script), "train", "--model", "x-tiny-4", "--epochs", "1", "--out", out,
         "--batch-size", "8"] + QUICK, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("recipe: SGD") == 1  # rank 0 prints, rank 1 does not
    [row] = read_metrics(out)  # written once, by rank 0
    assert row["world_size"] == 2 and row["val_accuracy"] > 0.5

    # Validation is split across ranks and all-reduced: it must equal one process's count.
    splits = datasets.load("digits", image_size=8, limit=400)
    final = torch.load(os.path.join(out, "model_final.pt"), weights_only=True)
    assert accuracy_of(final["model"], splits, "x-tiny-4", 0) == pytest.approx(row["val_accuracy"])

    single = str(tmp_path / "single")
    assert main(["train", "--model", "x-tiny-4", "--epochs", "1", "--out", single,
                 "--batch-size", "16"] + QUICK) == 0
    [one] = read_metrics(single)
    # Same batches and lr; BatchNorm sees 8 images per process instead of 16.
    assert row["train_loss"] == pytest.approx(one["train_loss"], rel=0.25)
    assert abs(row["val_accuracy"] - one["val_accuracy"]) < 0.15


def test_compare_dense_x_g(tiny_models, tmp_path, capsys):
    assert plan("tiny", [4]) == [("dense", None, "tiny"), ("x", 4, "x-tiny-4"), ("g", 4, "g-tiny-4")]
    with pytest.raises(ValueError, match="--models"):
        plan("vgg16-cifar", [2])
    out = str(tmp_path / "cmp")
    assert main(["compare", "--family", "tiny", "--compression", "4", "--seeds", "2",
                 "--epochs", "1", "--out", out] + QUICK) == 0
    assert "g-tiny-4" in capsys.readouterr().out
    with open(os.path.join(out, "compare.json")) as f:
        results = {r["model"]: r for r in json.load(f)["results"]}
    assert list(results) == ["tiny", "x-tiny-4", "g-tiny-4"]
    # The compressed 3x3 conv has 16*32*9*64 MACs dense, a quarter of them in X and G.
    assert results["tiny"]["macs"] - results["x-tiny-4"]["macs"] == 3 * 16 * 32 * 9 * 64 // 4
    assert results["x-tiny-4"]["macs"] == results["g-tiny-4"]["macs"]
    for r in results.values():
        assert len(r["val_accuracy"]) == 2 and r["mean"] == pytest.approx(np.mean(r["val_accuracy"]))
        assert r["mean"] > 0.5
    assert os.path.isfile(os.path.join(out, "compare.png"))


def test_block_expanders_in_train_and_compare(tiny_models, tmp_path, capsys):
    out = str(tmp_path / "cmp")
    assert main(["compare", "--models", "tiny", "x-tiny-2", "--seeds", "1", "--epochs", "1",
                 "--block", "8", "--out", out] + QUICK) == 0
    with open(os.path.join(out, "compare.json")) as f:
        results = {r["model"]: r for r in json.load(f)["results"]}
    # the X model's runs are named by their block (the dense model has none)
    assert list(results) == ["tiny", "x-tiny-2-block8"]
    assert results["x-tiny-2-block8"]["block"] == 8 and results["tiny"]["block"] == 1
    assert results["x-tiny-2-block8"]["mean"] > 0.5
    run = os.path.join(out, "x-tiny-2-block8", "seed0")
    ckpt = torch.load(os.path.join(run, "checkpoint.pt"), weights_only=True)
    assert ckpt["block"] == 8 and ckpt["args"]["block"] == 8
    [index] = [v for k, v in ckpt["model"].items() if k.endswith(".index")]
    runs = index.reshape(-1, 8, index.shape[1])
    assert torch.equal(runs, runs[:, :1].expand_as(runs))  # eight outputs share each row
    assert len(torch.unique(index)) == 16  # and the blocks cover every input (biregular)
    # resuming with another block is refused by name; --block must be a positive integer
    assert main(["train", "--model", "x-tiny-2", "--epochs", "2", "--out", run, "--resume"] + QUICK) == 2
    assert "was trained with --block 8, not 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--model", "x-tiny-2", "--epochs", "1", "--out", run, "--block", "0"] + QUICK)
    assert "--block must be a positive integer, got '0'" in capsys.readouterr().err


def test_paper_recipes():
    r = recipe_for("x-densenet-bc-2-40-24", "cifar10", 300)
    assert (r.lr, r.momentum, r.nesterov, r.weight_decay, r.batch_size) == (0.1, 0.9, True, 1e-4, 64)
    assert [r.lr_factor(e) for e in (0, 149, 150, 224, 225)] == pytest.approx([1, 1, .1, .1, .01])
    assert recipe_for("vgg16-cifar", "cifar100", 160).weight_decay == 5e-4
    assert recipe_for("resnet-18", "cifar10", 160).batch_size == 128
    r = recipe_for("x-mobilenet-0.5-4", "imagefolder", 90)
    assert (r.weight_decay, r.milestones) == (4e-5, (30, 60))
    assert recipe_for("x-resnet-2-50", "imagefolder", 90).weight_decay == 1e-4
    assert recipe_for("x-resnet-2-18", "digits", 1).lr_factor(0) == 1  # no drop inside 1 epoch
    assert recipe_for("resnet-18", "cifar10", 10, lr=0.05, batch_size=32).lr == 0.05
    with pytest.raises(ValueError, match="epochs"):
        recipe_for("resnet-18", "cifar10", 0)
    with pytest.raises(ValueError, match="lr"):
        recipe_for("resnet-18", "cifar10", 10, lr=-1.0)
    with pytest.raises(ValueError, match="data"):
        recipe_for("resnet-18", "mnist", 10)


def write_cifar(root, name, n_train=6, n_test=4):
    """A fake python-pickle CIFAR folder; returns (train images, train labels) as written."""
    rng = np.random.default_rng(1)
    classes = 10 if name == "cifar10" else 100
    key = b"labels" if name == "cifar10" else b"fine_labels"
    files = ([f"data_batch_{i}" for i in range(1, 6)], "test_batch") if name == "cifar10" \
        else (["train"], "test")
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True)
    written = []
    for f in files[0] + [files[1]]:
        n = n_test if f == files[1] else n_train
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, classes, n).tolist()
        with open(folder / f, "wb") as fh:
            pickle.dump({b"batch_label": b"x", key: labels, b"data": data}, fh, protocol=2)
        if f != files[1]:
            written.append((data, labels))
    meta = ("batches.meta", b"label_names") if name == "cifar10" else ("meta", b"fine_label_names")
    with open(folder / meta[0], "wb") as fh:
        pickle.dump({meta[1]: [f"class{i}".encode() for i in range(classes)]}, fh)
    return (np.concatenate([d for d, _ in written]), np.concatenate([lab for _, lab in written]))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickle_folder(tmp_path, name):
    data, labels = write_cifar(tmp_path, name)
    splits = datasets.load(name, str(tmp_path))
    assert len(splits.train) == len(labels) and len(splits.val) == 4
    assert splits.num_classes == (10 if name == "cifar10" else 100)
    assert splits.classes[3] == "class3" and splits.image_shape == (3, 32, 32)
    last = len(labels) - 1  # in the last training file
    image, label = splits.train[last]
    assert label.item() == labels[last]
    # CIFAR rows are 1024 red, then green, then blue values, each row-major 32x32.
    assert image[1, 5, 9].item() == data[last, 1024 + 5 * 32 + 9]
    assert torch.equal(image, torch.from_numpy(data[last].reshape(3, 32, 32)))
    assert torch.equal(splits.train.labels, torch.from_numpy(labels))
    folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    # The batches folder itself is accepted as --data-dir too.
    assert len(datasets.load(name, str(tmp_path / folder)).train) == len(labels)


def test_cifar_refuses_foreign_pickles(tmp_path):
    write_cifar(tmp_path, "cifar10")
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        pickle.dump({b"data": os.getcwd}, fh)  # anything but arrays and lists
    with pytest.raises(pickle.UnpicklingError, match="posix.getcwd|os.getcwd"):
        datasets.load("cifar10", str(tmp_path))


def test_missing_cifar_folder_says_what_is_expected(tmp_path, capsys):
    missing = str(tmp_path / "nowhere")
    assert main(["train", "--model", "x-resnet-2-18", "--data", "cifar10", "--data-dir", missing,
                 "--epochs", "1", "--out", str(tmp_path / "o"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert missing in err and "cifar-10-batches-py" in err and "data_batch_1" in err
    assert "test_batch" in err and "python-pickle" in err
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        datasets.load("cifar100", None)
    with pytest.raises(ValueError, match="32x32"):
        datasets.load("cifar10", missing, image_size=64)


def test_image_folder(tiny_models, tmp_path):
    image_module = pytest.importorskip("PIL.Image")
    colours = {"cat": (200, 10, 30), "dog": (5, 120, 250)}
    for split, count in (("train", 3), ("val", 1)):
        for name, colour in colours.items():
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(count):
                image_module.new("RGB", (40, 30), colour).save(tmp_path / split / name / f"{i}.png")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    splits = datasets.load("imagefolder", str(tmp_path), image_size=14)
    assert splits.classes == ["cat", "dog"] and splits.image_shape == (3, 14, 14)
    assert len(splits.train) == 6 and len(splits.val) == 2
    image, label = splits.val[1]
    assert label.item() == 1 and image.shape == (3, 16, 16)  # stored 8/7 larger, cropped later
    assert image.dtype == torch.uint8 and image[:, 3, 4].tolist() == [5, 120, 250]
    batch = splits.transform(torch.stack([splits.val[i][0] for i in range(2)]), train=False)
    assert batch.shape == (2, 3, 14, 14)
    with pytest.raises(FileNotFoundError, match=r"DIR/train/<class>/<image>"):
        datasets.load("imagefolder", str(tmp_path / "train"))
    # Decoding in a data-loader worker process, as training on a real folder does.
    out = str(tmp_path / "run")
    assert main(["train", "--model", "tiny", "--data", "imagefolder", "--data-dir", str(tmp_path),
                 "--image-size", "8", "--epochs", "1", "--batch-size", "3", "--workers", "1",
                 "--out", out, "--device", "cpu", "--no-progress"]) == 0
    [row] = read_metrics(out)
    assert np.isfinite(row["train_loss"]) and row["val_accuracy"] in (0, 0.5, 1)


def test_digits_split():
    splits = datasets.load("digits")
    assert (len(splits.train), len(splits.val)) == (1438, 359)
    assert splits.image_shape == (3, 32, 32) and splits.classes == [str(d) for d in range(10)]
    image, _ = splits.val[0]
    assert image.shape == (3, 32, 32) and torch.equal(image[0], image[2])  # grey in RGB
    assert datasets.load("digits", limit=10).train.labels.tolist() == splits.train.labels[:10].tolist()


def test_batch_transform_crops_and_flips():
    transform = datasets.BatchTransform((0.5, 0.5), (0.25, 0.25), crop=4, pad=1, flip=True)
    images = torch.randint(0, 256, (32, 2, 6, 6), dtype=torch.uint8)
    normal = (images.float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(transform(images, train=False), normal[:, :, 1:5, 1:5])
    padded = torch.nn.functional.pad(normal, (1, 1, 1, 1))
    out = transform(images, train=True, generator=torch.Generator().manual_seed(0))
    assert out.shape == (32, 2, 4, 4)
    found_flip = found_plain = False
    for b in range(32):
        windows = [padded[b, :, i:i + 4, j:j + 4] for i in range(5) for j in range(5)]
        plain = any(torch.equal(out[b], w) for w in windows)
        mirrored = any(torch.equal(out[b], w.flip(2)) for w in windows)
        assert plain or mirrored
        found_plain |= plain
        found_flip |= mirrored and not plain
    assert found_plain and found_flip


def test_bad_arguments():
    with pytest.raises(ValueError, match="data"):
        datasets.load("mnist")
    with pytest.raises(ValueError, match="limit"):
        datasets.load("digits", limit=0)
    with pytest.raises(ValueError, match="image_size"):
        datasets.load("digits", image_size=4)
