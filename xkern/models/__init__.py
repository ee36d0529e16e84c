"""The paper's networks, dense and expander (X) versions, as thin torch definitions.

create(name, num_classes=None, seed=..., ...) builds one; names() lists them;
complexity(model, input_shape) counts its parameters and multiply-accumulates.
Names follow the paper's X-C-D-G notation (C compression, D depth, G growth rate):
"resnet-50", "x-resnet-2-50", "densenet-bc-121", "x-densenet-bc-2-40-24",
"mobilenet-0.5", "x-mobilenet-0.5-4", "g-mobilenet-0.5-4", "vgg16-cifar",
"x-vgg16-cifar-1", "alexnet", "x-alexnet-2".  docs/models.md tabulates them.
"""
from .complexity import complexity
from .registry import create, names

__all__ = ["create", "names", "complexity"]
