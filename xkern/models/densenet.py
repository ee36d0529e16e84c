"""DenseNet-BC (Huang et al. 2017) and X-DenseNet-BC-C-D-G (paper §5.2, §5.5).

Names: ImageNet "densenet-bc-D" and "x-densenet-bc-C-D" for D in 121, 169, 201, 161;
CIFAR "densenet-bc-D-G" and "x-densenet-bc-C-D-G" (depth D with (D - 4) / 6 bottleneck
layers in each of 3 blocks, growth rate G).  Every convolution except the first is made
by the factory (bottleneck 1x1, 3x3 and transition 1x1 convs) and the classifier stays
dense.  A bottleneck 1x1 conv that widens (Cin < 4G, early in a block) is an expanding
layer: it still gets density 1/C per output, unlike the paper's code.
"""
import re

import torch
from torch import nn

IMAGENET = {121: (32, (6, 12, 24, 16), 64), 169: (32, (6, 12, 32, 32), 64),
            201: (32, (6, 12, 48, 32), 64), 161: (48, (6, 12, 36, 24), 96)}
CIFAR = ((40, 24), (40, 36), (40, 48), (40, 60), (58, 60), (70, 60), (40, 100), (40, 200))
NAMES = ([f"densenet-bc-{d}" for d in IMAGENET] + [f"densenet-bc-{d}-{g}" for d, g in CIFAR]
         + [f"x-densenet-bc-{c}-{d}" for c in (2, 4) for d in IMAGENET]
         + [f"x-densenet-bc-{c}-{d}-{g}" for c in (2, 4) for d, g in CIFAR])
_PATTERN = re.compile(r"(?P<x>x-)?densenet-bc-(?P<numbers>\d+(?:-\d+){0,2})")
BOTTLENECK_WIDTH = 4   # the 1x1 conv makes 4 G channels (the "B" of BC)
REDUCTION = 0.5        # transitions halve the channels (the "C" of BC)


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv-BN-ReLU-3x3 conv; returns its input with G new channels appended."""

    def __init__(self, factory, cin, growth):
        super().__init__()
        mid = BOTTLENECK_WIDTH * growth
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True), factory.conv(cin, mid, 1),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), factory.conv(mid, growth, 3, 1, 1))

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


def _transition(factory, cin, cout):
    return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True), factory.conv(cin, cout, 1),
                         nn.AvgPool2d(2))


class DenseNet(nn.Module):
    """(B, 3, H, W) -> (B, num_classes) logits.

    stem: the first conv (kept dense) and its pooling; blocks: layer counts per dense block.
    """

    def __init__(self, stem, channels, growth, blocks, factory, num_classes):
        super().__init__()
        layers = [stem]
        for i, count in enumerate(blocks):
            for _ in range(count):
                layers.append(DenseLayer(factory, channels, growth))
                channels += growth
            if i + 1 < len(blocks):
                out = int(channels * REDUCTION)
                layers.append(_transition(factory, channels, out))
                channels = out
        layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


def imagenet_densenet(depth, factory, num_classes=1000):
    """DenseNet-BC-121/169/201/161 for 224 x 224 inputs (7x7 stem and max pooling)."""
    growth, blocks, channels = IMAGENET[depth]
    stem = nn.Sequential(nn.Conv2d(3, channels, 7, 2, 3, bias=False), nn.BatchNorm2d(channels),
                         nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
    return DenseNet(stem, channels, growth, blocks, factory, num_classes)


def cifar_densenet(depth, growth, factory, num_classes=10):
    """DenseNet-BC-D-G for 32 x 32 inputs: a 3x3 stem with 2 G channels and 3 dense blocks."""
    stem = nn.Conv2d(3, 2 * growth, 3, 1, 1, bias=False)
    count = (depth - 4) // 6
    return DenseNet(stem, 2 * growth, growth, (count,) * 3, factory, num_classes)


def parse(name):
    """(kind, compression, (depth,) or (depth, growth)) for a DenseNet-BC name, or None."""
    m = _PATTERN.fullmatch(name)
    if m is None:
        return None
    numbers = [int(n) for n in m["numbers"].split("-")]
    compression = numbers.pop(0) if m["x"] else None
    if len(numbers) == 1 and numbers[0] in IMAGENET:
        config = (numbers[0],)
    elif len(numbers) == 2 and numbers[0] > 4 and (numbers[0] - 4) % 6 == 0 and numbers[1] > 0:
        config = tuple(numbers)
    else:
        return None
    return ("x" if m["x"] else "dense"), compression, config


def build(config, factory, num_classes=None):
    """ImageNet models default to 1000 classes, CIFAR ones to 10."""
    if len(config) == 1:
        return imagenet_densenet(config[0], factory, num_classes or 1000)
    return cifar_densenet(*config, factory, num_classes or 10)
