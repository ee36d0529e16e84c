"""MobileNet (v1) with a width multiplier, and its X / grouped versions (paper §5.1).

Names: "mobilenet-0.5", "x-mobilenet-0.5-C", "g-mobilenet-0.5-C".  Only the 1x1
convolutions after the 8th layer of MobileNet's Table 1 are compressed, as in the paper:
those are the pointwise convs of blocks 3..12 below (rows 9, 11, ..., 27 of that table).
The depthwise 3x3 convs, the first conv, the three earlier pointwise convs and the
classifier stay dense.
"""
import re

from torch import nn

NUM_CLASSES = 1000
NAMES = ["mobilenet-0.5"] + [f"{k}-mobilenet-0.5-{c}" for k in ("x", "g") for c in (2, 4, 8, 16)]
_PATTERN = re.compile(r"(?:(?P<kind>[xg])-)?mobilenet-(?P<width>\d+(?:\.\d+)?)(?:-(?P<c>\d+))?")

# (output channels at width 1, stride) of the 13 depthwise-separable blocks.
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
          (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
FIRST_COMPRESSED_BLOCK = 3


def _conv_bn_relu(conv, channels):
    return nn.Sequential(conv, nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


class MobileNet(nn.Module):
    """(B, 3, H, W) -> (B, num_classes) logits; H = W = 224 on ImageNet."""

    def __init__(self, width, factory, num_classes=NUM_CLASSES):
        super().__init__()
        channels = int(32 * width)
        layers = [_conv_bn_relu(nn.Conv2d(3, channels, 3, 2, 1, bias=False), channels)]
        for block, (out, stride) in enumerate(BLOCKS):
            out = int(out * width)
            depthwise = nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False)
            if block >= FIRST_COMPRESSED_BLOCK:
                pointwise = factory.conv(channels, out, 1)
            else:
                pointwise = nn.Conv2d(channels, out, 1, bias=False)
            layers += [_conv_bn_relu(depthwise, channels), _conv_bn_relu(pointwise, out)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


def parse(name):
    """(kind, compression, width) for a MobileNet name, or None."""
    m = _PATTERN.fullmatch(name)
    if m is None or (m["kind"] is None) != (m["c"] is None) or float(m["width"]) <= 0:
        return None
    kind = m["kind"] or "dense"
    return kind, None if m["c"] is None else int(m["c"]), float(m["width"])


def build(width, factory, num_classes=None):
    return MobileNet(width, factory, num_classes or NUM_CLASSES)
