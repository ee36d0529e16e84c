"""Optimiser and learning-rate defaults, following the paper's training recipes.

CIFAR (DenseNet-BC, ResNet, VGG): SGD lr 0.1, momentum 0.9, Nesterov, weight decay 1e-4
(VGG 5e-4), batch 64 (DenseNet) or 128, lr x0.1 at 50% and 75% of the epochs.
ImageNet-style folders: lr 0.1, weight decay 1e-4 (MobileNet 4e-5), batch 256, lr x0.1 every
30 epochs.  Digits is not in the paper: a small-data default, chosen so one epoch already
trains (see `recipe_for`).
"""
from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class Recipe:
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    batch_size: int
    milestones: tuple  # epochs (counted from 0) from which lr is multiplied by gamma once more
    gamma: float
    source: str

    def lr_factor(self, epoch):
        """Multiplier of the base lr during epoch `epoch` (0-based)."""
        return self.gamma ** sum(epoch >= m for m in self.milestones)

    def describe(self):
        drops = (f"lr x{self.gamma:g} from epoch(s) {', '.join(str(m + 1) for m in self.milestones)}"
                 if self.milestones else "constant lr")
        return (f"SGD lr {self.lr:g}, momentum {self.momentum:g}"
                f"{' (Nesterov)' if self.nesterov else ''}, weight decay {self.weight_decay:g}, "
                f"batch {self.batch_size}, {drops}  [{self.source}]")

    def as_dict(self):
        return asdict(self)


def _fractions(epochs, fractions):
    # An epoch count below 2 gives no drop inside the run: milestone 0 would cut lr from the start.
    return tuple(sorted({max(1, int(epochs * f)) for f in fractions} - {epochs}))


def recipe_for(model, data, epochs, *, lr=None, batch_size=None, weight_decay=None):
    """The paper's recipe for `model` (a registry name) on `data`, with CLI overrides applied.

    model: e.g. "x-densenet-bc-2-40-24"; data: digits, cifar10, cifar100 or imagefolder;
    epochs: total epochs of the run (milestones are fractions of it).
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    name = model.lower()
    if data == "digits":
        # 1438 training images: batch 16 gives 90 steps per epoch; lr 0.05 (batch 32) or
        # 0.02 (batch 8) left x-resnet-2-18 below 70% after one epoch, 0.01 at batch 16 reached ~90%.
        recipe = Recipe(lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4, batch_size=16,
                        milestones=_fractions(epochs, (0.5, 0.75)), gamma=0.1,
                        source="xkern digits default, not from the paper")
    elif data in ("cifar10", "cifar100"):
        recipe = Recipe(lr=0.1, momentum=0.9, nesterov=True,
                        weight_decay=5e-4 if "vgg" in name else 1e-4,
                        batch_size=64 if "densenet" in name else 128,
                        milestones=_fractions(epochs, (0.5, 0.75)), gamma=0.1,
                        source="paper CIFAR recipe")
    elif data == "imagefolder":
        recipe = Recipe(lr=0.1, momentum=0.9, nesterov=True,
                        weight_decay=4e-5 if "mobilenet" in name else 1e-4, batch_size=256,
                        milestones=tuple(range(30, epochs, 30)), gamma=0.1,
                        source="paper ImageNet recipe")
    else:
        raise ValueError(f"data must be one of digits, cifar10, cifar100, imagefolder; got {data!r}")
    overrides = {k: v for k, v in (("lr", lr), ("batch_size", batch_size),
                                   ("weight_decay", weight_decay)) if v is not None}
    for key, value in overrides.items():
        if value < 0 or (key != "weight_decay" and value == 0):
            raise ValueError(f"{key} must be positive, got {value!r}")
    return replace(recipe, **overrides)
