"""Datasets read from local files only (no downloads): digits, CIFAR-10/100, image folders.

Every dataset yields (image uint8 (C, H, W), label int64).  Scaling to float, normalisation and
augmentation run on whole batches on the training device (`BatchTransform`).
"""
import os
import pickle
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import _extras

DATASETS = ("digits", "cifar10", "cifar100", "imagefolder")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".gif", ".tif", ".tiff", ".webp")

_CIFAR = {
    # name: (sub-folder of the official archive, train files, test file, label key, mean, std)
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                b"labels", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ("cifar-100-python", ("train",), "test", b"fine_labels",
                 (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class TensorImages(Dataset):
    """Images held in memory: images uint8 (N, C, H, W), labels int64 (N,)."""

    def __init__(self, images, labels):
        if images.dtype != torch.uint8 or images.ndim != 4 or labels.shape != images.shape[:1]:
            raise ValueError("images must be uint8 (N, C, H, W) and labels (N,)")
        self.images, self.labels = images, labels.long()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


class ImageFiles(Dataset):
    """Image files decoded on demand, shorter side resized to `size`, centre-cropped to size x size."""

    def __init__(self, samples, size):
        self.samples, self.size = samples, size

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        return _read_square(path, self.size), torch.tensor(label)


@dataclass
class Splits:
    """What training needs from a dataset.  image_shape is (C, H, W) as the model sees it."""
    name: str
    train: Dataset
    val: Dataset
    classes: list
    image_shape: tuple
    transform: "BatchTransform"

    @property
    def num_classes(self):
        return len(self.classes)

    def describe(self):
        c, h, w = self.image_shape
        return (f"{self.name}: {len(self.train)} train / {len(self.val)} val images, "
                f"{self.num_classes} classes, {c}x{h}x{w}")


class BatchTransform:
    """uint8 batch (B, C, H0, W0) -> normalised float (B, C, crop, crop), on the batch's device.

    Training: zero-pad by `pad` (in normalised units, i.e. the mean colour), take a random
    crop x crop window per image and mirror half the images if `flip`.  Evaluation: centre crop.
    """

    def __init__(self, mean, std, crop, pad=0, flip=False):
        self.mean, self.std, self.crop, self.pad, self.flip = mean, std, crop, pad, flip

    def __call__(self, images, train, generator=None):
        x = images.float().div_(255)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        x = (x - mean) / std
        b, c, h, w = x.shape
        if not train:
            top, left = (h - self.crop) // 2, (w - self.crop) // 2
            return x[:, :, top:top + self.crop, left:left + self.crop]
        if self.pad:
            x = torch.nn.functional.pad(x, (self.pad,) * 4)
        span_h, span_w = x.shape[2] - self.crop + 1, x.shape[3] - self.crop + 1
        top = torch.randint(span_h, (b, 1), generator=generator)
        left = torch.randint(span_w, (b, 1), generator=generator)
        steps = torch.arange(self.crop)
        rows = (top + steps).to(x.device)[:, None, :, None]
        cols = (left + steps).to(x.device)[:, None, None, :]
        x = x[torch.arange(b, device=x.device)[:, None, None, None],
              torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
        if self.flip:
            mirror = (torch.rand(b, generator=generator) < 0.5).to(x.device)
            x = torch.where(mirror[:, None, None, None], x.flip(3), x)
        return x


def load(name, data_dir=None, *, image_size=None, limit=None):
    """Splits of dataset `name` (one of DATASETS); limit caps each split at that many images."""
    if name not in DATASETS:
        raise ValueError(f"data must be one of {', '.join(DATASETS)}; got {name!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    if name == "digits":
        splits = _digits(32 if image_size is None else image_size)
    elif name in _CIFAR:
        if image_size not in (None, 32):
            raise ValueError(f"image_size: CIFAR images are 32x32, got {image_size}")
        splits = _cifar(name, data_dir)
    else:
        splits = _imagefolder(data_dir, 224 if image_size is None else image_size)
    if limit is not None:
        splits.train = _first(splits.train, limit)
        splits.val = _first(splits.val, limit)
    return splits


def _first(dataset, n):
    if isinstance(dataset, TensorImages):  # digits and CIFAR are stored in random order
        return TensorImages(dataset.images[:n], dataset.labels[:n])
    # Folders list images class by class: draw a fixed random subset so every class can appear.
    keep = np.sort(np.random.default_rng(0).permutation(len(dataset))[:n])
    return ImageFiles([dataset.samples[i] for i in keep], dataset.size)


def _digits(size):
    """scikit-learn's bundled 8x8 digits, upsampled to size x size, 3 channels; fixed 80/20 split."""
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"image_size must be an integer >= 8 for digits, got {size!r}")
    _extras.require("--data digits", "sklearn", extra="train")
    from sklearn.datasets import load_digits
    bunch = load_digits()
    pixels = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16  # values 0..16
    pixels = torch.nn.functional.interpolate(pixels, size=(size, size), mode="bilinear",
                                             align_corners=False)
    images = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    # The split ignores --seed so every run is scored on the same 20%.
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(labels)))
    n_val = len(labels) // 5
    val, train = order[:n_val], order[n_val:]
    mean = images[train].float().mean().item() / 255
    std = images[train].float().std().item() / 255
    # Digits are not mirror-symmetric: shift only.
    transform = BatchTransform((mean,) * 3, (std,) * 3, crop=size, pad=size // 16, flip=False)
    return Splits("digits", TensorImages(images[train], labels[train]),
                  TensorImages(images[val], labels[val]), [str(d) for d in range(10)],
                  (3, size, size), transform)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR files (dicts of numpy arrays and lists) and refuses anything else."""
    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")} | {
        (module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")} | {
        (module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR file")
        return super().find_class(module, name)


def _read_pickle(path):
    with open(path, "rb") as f:
        return _ArrayUnpickler(f, encoding="bytes").load()


def _cifar(name, data_dir):
    folder, train_files, test_file, label_key, mean, std = _CIFAR[name]
    expected = (f"{name} needs --data-dir DIR holding the python-pickle version of the dataset "
                f"(https://www.cs.toronto.edu/~kriz/cifar.html, extracted; nothing is downloaded): "
                f"DIR/{folder}/{{{','.join(train_files)},{test_file}}}, or those files directly in DIR")
    if data_dir is None:
        raise FileNotFoundError(f"no --data-dir given. {expected}")
    root = next((d for d in (os.path.join(data_dir, folder), data_dir)
                 if all(os.path.isfile(os.path.join(d, f)) for f in train_files + (test_file,))),
                None)
    if root is None:
        raise FileNotFoundError(f"{name} files not found in {data_dir!r}. {expected}")

    def read(files):
        images, labels = [], []
        for f in files:
            entry = _read_pickle(os.path.join(root, f))
            try:
                data = np.asarray(entry[b"data"], dtype=np.uint8)
                labels.append(np.asarray(entry[label_key], dtype=np.int64))
            except (KeyError, TypeError) as exc:
                raise ValueError(f"{os.path.join(root, f)} is not a {name} batch: "
                                 f"expected keys b'data' and {label_key!r}") from exc
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels[-1]):
                raise ValueError(f"{os.path.join(root, f)}: b'data' must be (N, 3072) uint8 "
                                 f"with one label per row, got {data.shape}")
            images.append(data.reshape(-1, 3, 32, 32))
        return TensorImages(torch.from_numpy(np.concatenate(images)),
                            torch.from_numpy(np.concatenate(labels)))

    train, val = read(train_files), read((test_file,))
    n_classes = 10 if name == "cifar10" else 100
    if int(train.labels.max()) >= n_classes or int(train.labels.min()) < 0:
        raise ValueError(f"{name}: labels must lie in 0..{n_classes - 1}")
    classes = _cifar_names(root, name) or [str(i) for i in range(n_classes)]
    return Splits(name, train, val, classes, (3, 32, 32),
                  BatchTransform(mean, std, crop=32, pad=4, flip=True))


def _cifar_names(root, name):
    meta, key = (("batches.meta", b"label_names") if name == "cifar10"
                 else ("meta", b"fine_label_names"))
    path = os.path.join(root, meta)
    if not os.path.isfile(path):
        return None
    return [n.decode() if isinstance(n, bytes) else str(n) for n in _read_pickle(path)[key]]


def _imagefolder(data_dir, size):
    expected = ("imagefolder needs --data-dir DIR laid out as DIR/train/<class>/<image> and "
                "DIR/val/<class>/<image> (one sub-folder per class, same class names in both; "
                f"image files ending in {', '.join(IMAGE_SUFFIXES)})")
    if data_dir is None:
        raise FileNotFoundError(f"no --data-dir given. {expected}")
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"image_size must be an integer >= 8, got {size!r}")
    split_dirs = [os.path.join(data_dir, s) for s in ("train", "val")]
    for d in split_dirs:
        if not os.path.isdir(d):
            raise FileNotFoundError(f"{d!r} is not a folder. {expected}")
    classes = sorted(e.name for e in os.scandir(split_dirs[0]) if e.is_dir())
    if not classes:
        raise FileNotFoundError(f"no class sub-folders in {split_dirs[0]!r}. {expected}")
    _image_reader()  # fail now, not inside a data-loader worker
    # Train images are stored 8/7 larger and randomly cropped (224 from 256, as on ImageNet).
    load_size = round(size * 8 / 7)
    datasets = []
    for d in split_dirs:
        samples = [(os.path.join(d, c, f), label) for label, c in enumerate(classes)
                   if os.path.isdir(os.path.join(d, c))
                   for f in sorted(os.listdir(os.path.join(d, c)))
                   if f.lower().endswith(IMAGE_SUFFIXES)]
        if not samples:
            raise FileNotFoundError(f"no images found under {d!r}. {expected}")
        datasets.append(ImageFiles(samples, load_size))
    return Splits("imagefolder", datasets[0], datasets[1], classes, (3, size, size),
                  BatchTransform(_IMAGENET_MEAN, _IMAGENET_STD, crop=size, flip=True))


def _image_reader():
    _extras.require("--data imagefolder", "PIL", extra="train")
    from PIL import Image
    return Image


def _read_square(path, size):
    """Image file -> uint8 (3, size, size): shorter side resized to size, centre crop."""
    image = _image_reader()
    with image.open(path) as im:
        im = im.convert("RGB")
        scale = size / min(im.size)
        w, h = max(size, round(im.size[0] * scale)), max(size, round(im.size[1] * scale))
        im = im.resize((w, h), image.BILINEAR)
        left, top = (w - size) // 2, (h - size) // 2
        im = im.crop((left, top, left + size, top + size))
        array = np.asarray(im, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
