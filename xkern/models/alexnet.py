"""AlexNet (Krizhevsky et al. 2012; torchvision's single-tower layout, 61.1M parameters)
and X-AlexNet-1/-2 of the paper's Table 3.

Names: "alexnet", "x-alexnet-1", "x-alexnet-2".  The suffix is the paper's variant
number.  The paper gives only their parameter counts, 7.6M and 9.7M, and says the
parameters sit in the fully connected layers; so the variants replace the two hidden
fully connected layers (9216 -> 4096, 4096 -> 4096) by X-Linear layers of degree
D = 128 and D = 384 and keep the convolutions and the classifier dense.  These degrees are
the ones that reproduce the two counts (7.62M and 9.72M); the paper does not state them.
"""
import re

from torch import nn

from .layers import parse_variant

NUM_CLASSES = 1000
VARIANTS = {1: 128, 2: 384}   # variant number -> degree of the hidden X-Linear layers
NAMES = ["alexnet"] + [f"x-alexnet-{v}" for v in VARIANTS]
_PATTERN = re.compile(r"(?P<x>x-)?alexnet(?:-(?P<variant>\d+))?")


class AlexNet(nn.Module):
    """(B, 3, H, W) -> (B, num_classes) logits; H = W = 224 on ImageNet (any H, W >= 63 run)."""

    def __init__(self, factory, degree=None, num_classes=NUM_CLASSES):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, 1, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, 1, 1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, 1, 1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, 1, 1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.pool = nn.AdaptiveAvgPool2d(6)
        self.classifier = nn.Sequential(
            nn.Dropout(), factory.linear(256 * 6 * 6, 4096, degree=degree), nn.ReLU(inplace=True),
            nn.Dropout(), factory.linear(4096, 4096, degree=degree), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes))

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


def parse(name):
    """(kind, None, degree) for an AlexNet name, or None."""
    parsed = parse_variant(_PATTERN, name, VARIANTS)
    if parsed is None:
        return None
    kind, value = parsed
    return (kind, None, value)


def build(degree, factory, num_classes=None):
    return AlexNet(factory, degree, num_classes or NUM_CLASSES)
