"""Model names -> constructors.  Each family module holds its NAMES, a parse(name) that
returns (kind, compression, config) or None, and a build(config, factory, num_classes)."""
import numbers

from . import alexnet, densenet, mobilenet, resnet, vgg
from .layers import LayerFactory

FAMILIES = (mobilenet, resnet, densenet, vgg, alexnet)


def names():
    """Every canonical model name, dense baselines first within each family.

    create() also accepts any other integer C >= 2 in an X (or G) name, e.g.
    "x-resnet-3-50"; names() lists C in (2, 4) (MobileNet: 2, 4, 8, 16).
    """
    return [name for family in FAMILIES for name in family.NAMES]


def create(name, num_classes=None, *, seed=None, method=None, block=1):
    """A freshly initialised torch model (an nn.Module, in training mode) called name.

    num_classes: classifier width; None gives the dataset's (1000 for ImageNet models,
    10 for CIFAR ones).  seed: fixes every expander graph of an X model (the same seed
    always builds the same graphs; None draws new ones).  method, block: the expander
    construction passed to every X layer (see xkern.graphs.expander); method None is
    "random" for block 1 and "biregular" for blocks of outputs, and a block too large to
    cover a layer's inputs is refused (models.layers.LayerFactory).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if num_classes is not None and (not isinstance(num_classes, numbers.Integral)
                                    or isinstance(num_classes, bool) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}")
    for family in FAMILIES:
        parsed = family.parse(name)
        if parsed is None:
            continue
        kind, compression, config = parsed
        if compression is not None and compression < 2:
            raise ValueError(f"the compression C in {name!r} must be >= 2, got {compression}")
        factory = LayerFactory(kind, compression, seed=seed, method=method, block=block)
        return family.build(config, factory, None if num_classes is None else int(num_classes))
    raise ValueError(f"unknown model name {name!r}; xkern.models.names() lists the known ones")
