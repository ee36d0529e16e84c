"""Training step of an X-Net against its dense twin: the end-to-end view of the layer benchmarks.

The X model's expander layers run through xkern (xkern.nn); everything else (BatchNorm,
ReLU, pooling, the dense first and last layers) is the same torch code in both models.
"""
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .baselines import Case, check_device, no_sync

NUM_CLASSES = 10  # the classifier's width barely matters next to the convolutions; both models share it


class ModelPair(NamedTuple):
    x_name: str             # xkern.models name of the X-Net
    dense_name: str         # its dense twin
    input_shape: tuple      # (C, H, W) of one training sample
    batch: int
    quick_batch: int
    infer_shape: tuple = None   # (C, H, W) of the batch-1 inference input (None: input_shape)


# Training at the batch and size a 2-core machine trains at; inference at batch 1 at the
# networks' own input size (ImageNet's 224 x 224, CIFAR's 32 x 32).
PAIRS = (
    ModelPair("x-resnet-2-18", "resnet-18", (3, 96, 96), 16, 4, (3, 224, 224)),
    ModelPair("x-mobilenet-0.5-4", "mobilenet-0.5", (3, 96, 96), 16, 4, (3, 224, 224)),
    ModelPair("x-densenet-bc-2-40-24", "densenet-bc-40-24", (3, 32, 32), 32, 8, (3, 32, 32)),
)


def create_model(name, seed, block):
    """xkern.models.create(name) with this module's classifier width, its graphs from seed, an
    X-Net's expanders in blocks of `block` outputs (the dense twins take block 1)."""
    from xkern.models import create

    return create(name, NUM_CLASSES, seed=seed, block=block)


def model_case(name, input_shape, batch, *, device="cpu", dtype=torch.float32, seed=0, block=1):
    """A Case for model `name` (an X-Net's expanders in blocks of `block` outputs): forward
    (no_grad) and step = gradients of the cross-entropy of a random batch w.r.t. every
    parameter.  The model stays in training mode."""
    from xkern.models import complexity

    check_device(device)
    model = create_model(name, seed, block).to(device, dtype)
    model.train()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch,) + tuple(input_shape), generator=gen).to(device, dtype)
    y = torch.randint(NUM_CLASSES, (batch,), generator=gen).to(device)
    params = [p for p in model.parameters() if p.requires_grad]

    def forward():
        with torch.no_grad():
            return model(x)

    def step():
        return torch.autograd.grad(F.cross_entropy(model(x), y), params)

    sync = torch.cuda.synchronize if device == "cuda" else no_sync
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    case = Case(name, forward, step, sync, "torch autograd", param_bytes)
    return case, complexity(model, input_shape)


def infer_case(name, input_shape, *, device="cpu", dtype=torch.float32, seed=0, block=1):
    """(forward, sync): model `name` (block as in model_case) in eval mode on one random
    (C, H, W) sample, under no_grad: batch-1 inference."""
    check_device(device)
    model = create_model(name, seed, block).to(device, dtype).eval()
    x = torch.randn((1,) + tuple(input_shape), generator=torch.Generator().manual_seed(seed)).to(device, dtype)

    def forward():
        with torch.no_grad():
            return model(x)

    return forward, torch.cuda.synchronize if device == "cuda" else no_sync
