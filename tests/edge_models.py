"""Models for the edge-inference tests (test_runtime.py, test_onnx.py): the paper's three
families at reduced resolution, and a small network using every op the runtime knows."""
import torch
import torch.nn.functional as F
from torch import nn

from xkern import models
from xkern.nn import XConv2d, XLinear

# name, input shape (batch 2: a reshape that mixes samples would show), classes
PAPER_MODELS = (("x-mobilenet-0.5-4", (2, 3, 64, 64), 10),
                ("x-resnet-2-18", (2, 3, 32, 32), 10),
                ("x-densenet-bc-2-40-24", (2, 3, 32, 32), 10))


def randomize_batch_norms(model, seed):
    """Non-trivial running statistics and affine parameters, so folding is really tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model


def paper_model(name, classes, seed=0):
    torch.manual_seed(seed)
    return randomize_batch_norms(models.create(name, num_classes=classes, seed=seed), seed).eval()


class Zoo(nn.Module):
    """(B, 4, 13, 13) -> (B, 5): the runtime's ops as modules, with odd sizes so that
    ceil_mode, padding and overlapping adaptive bins matter.  Batch norms: one foldable
    (after a conv with bias), one not (its conv output is read twice), one without affine."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, stride=1, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=(1, 2), dilation=(1, 2), groups=2, bias=False)
        self.bn_shared = nn.BatchNorm2d(8)
        self.xconv = XConv2d(8, 12, (3, 2), stride=(2, 1), padding=(1, 0), degree=3, seed=1)
        self.bn_x = nn.BatchNorm2d(12, affine=False)
        self.relu6 = nn.ReLU6()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.avgpool = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.depthwise = nn.Conv2d(24, 24, 3, padding=1, groups=24)
        self.adaptive = nn.AdaptiveAvgPool2d((3, 2))
        self.drop = nn.Dropout(0.5)
        self.xlinear = XLinear(144, 20, degree=7, seed=2)
        self.linear = nn.Linear(20, 5, bias=False)

    def forward(self, x):
        y = F.relu(self.bn(self.conv(x)))
        z = self.grouped(y)
        y = self.bn_shared(z) + z
        y = self.relu6(self.bn_x(self.xconv(y)))                    # (B, 12, 7, 12)
        y = torch.cat([self.maxpool(y), self.avgpool(y)], dim=-3)   # (B, 24, 4, 7)
        y = self.adaptive(self.depthwise(y).relu())                 # (B, 24, 3, 2)
        y = self.drop(torch.flatten(y, 1))
        return self.linear(F.relu(self.xlinear(y)))


class Functional(nn.Module):
    """(B, 3, 10, 9) -> (B, 6): functional pooling (divisor_override too), view, Flatten, torch.add."""

    def __init__(self, divisor=True):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 1)
        self.divisor = 5 if divisor else None
        self.flatten = nn.Flatten()

    def forward(self, x):
        y = self.conv(x)
        a = F.max_pool2d(y, 2, 2, 0, 1, True)                       # (B, 6, 5, 5)
        b = F.avg_pool2d(y, 3, 2, 1, False, True, self.divisor)     # (B, 6, 5, 5)
        y = torch.add(a, b)
        y = F.adaptive_avg_pool2d(y, 1)
        return self.flatten(y.view(y.size(0), -1, 1, 1))


def zoo(seed=0):
    torch.manual_seed(seed)
    return randomize_batch_norms(Zoo(), seed).eval()
