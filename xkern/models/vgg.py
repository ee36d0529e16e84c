"""VGG16 for CIFAR (Simonyan & Zisserman 2014; the 15.0M-parameter variant of Li et al.
2017 with BatchNorm and a 512-512-classes head) and X-VGG16-1/-2 of the paper's Table 2.

Names: "vgg16-cifar", "x-vgg16-cifar-1", "x-vgg16-cifar-2".  The suffix is the paper's
variant number, not a compression.  The paper gives only their parameter counts,
1.65M (9x) and 1.15M (13x); reading "9x" and "13x" as the compression, the variants are
built with every conv but the first, and the hidden fully connected layer, compressed
C = 9 and C = 13 times; the classifier stays dense.  This reproduces both counts
(docs/models.md).
"""
import re

from torch import nn

from .layers import parse_variant

NUM_CLASSES = 10
CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VARIANTS = {1: 9, 2: 13}   # variant number -> compression C
NAMES = ["vgg16-cifar"] + [f"x-vgg16-cifar-{v}" for v in VARIANTS]
_PATTERN = re.compile(r"(?P<x>x-)?vgg16-cifar(?:-(?P<variant>\d+))?")


class VGG(nn.Module):
    """(B, 3, 32, 32) -> (B, num_classes) logits."""

    def __init__(self, factory, num_classes=NUM_CLASSES):
        super().__init__()
        layers, cin = [], 3
        for item in CONFIG:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            conv = nn.Conv2d(cin, item, 3, 1, 1) if cin == 3 else factory.conv(cin, item, 3, 1, 1, bias=True)
            layers += [conv, nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
            cin = item
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(factory.linear(cin, 512), nn.ReLU(inplace=True),
                                        nn.Linear(512, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def parse(name):
    """(kind, compression, None) for a VGG16-CIFAR name, or None."""
    parsed = parse_variant(_PATTERN, name, VARIANTS)
    if parsed is None:
        return None
    kind, value = parsed
    return (kind, value, None)


def build(config, factory, num_classes=None):
    return VGG(factory, num_classes or NUM_CLASSES)
