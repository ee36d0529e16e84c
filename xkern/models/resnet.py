"""ResNet-18/34/50/101 (He et al. 2016, torchvision layout) and X-ResNet-C-D (paper §5.2).

Names: "resnet-D", "x-resnet-C-D".  Every convolution except the first (7x7 stem) is
made by the factory, and the classifier stays dense, as the paper states.  The 1x1
projection shortcuts are compressed too: the paper replaces every layer but the first
and the last, and Table 1's X-ResNet-2 rows have exactly half the FLOPs of their dense
twins, which they would not with dense projections (in ResNet-50 those hold 2.8M
weights and 0.36 GMACs, about 11% and 9% of the network).
"""
import re

from torch import nn

NUM_CLASSES = 1000
DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
          50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}
NAMES = [f"resnet-{d}" for d in DEPTHS] + [f"x-resnet-{c}-{d}" for c in (2, 4) for d in DEPTHS]
_PATTERN = re.compile(r"(?P<x>x-)?resnet-(?:(?P<c>\d+)-)?(?P<depth>\d+)")


class BasicBlock(nn.Module):
    """Two 3x3 convs: (B, cin, H, W) -> (B, planes, H / stride, W / stride)."""
    expansion = 1

    def __init__(self, factory, cin, planes, stride):
        super().__init__()
        self.conv1 = factory.conv(cin, planes, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = factory.conv(planes, planes, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(factory, cin, planes, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand: (B, cin, H, W) -> (B, 4 planes, H / s, W / s)."""
    expansion = 4

    def __init__(self, factory, cin, planes, stride):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = factory.conv(cin, planes, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = factory.conv(planes, planes, 3, stride, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = factory.conv(planes, out, 1)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(factory, cin, out, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def _shortcut(factory, cin, cout, stride):
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(factory.conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    """(B, 3, H, W) -> (B, num_classes) logits; H = W = 224 on ImageNet."""

    def __init__(self, depth, factory, num_classes=NUM_CLASSES):
        super().__init__()
        kind, counts = DEPTHS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages, cin = [], 64
        for i, count in enumerate(counts):
            planes = 64 * 2 ** i
            blocks = []
            for j in range(count):
                blocks.append(block(factory, cin, planes, 2 if i > 0 and j == 0 else 1))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.stages(self.stem(x))).flatten(1))


def parse(name):
    """(kind, compression, depth) for a ResNet name, or None."""
    m = _PATTERN.fullmatch(name)
    if m is None or (m["x"] is None) != (m["c"] is None) or int(m["depth"]) not in DEPTHS:
        return None
    return ("x" if m["x"] else "dense"), None if m["c"] is None else int(m["c"]), int(m["depth"])


def build(depth, factory, num_classes=None):
    return ResNet(depth, factory, num_classes or NUM_CLASSES)
