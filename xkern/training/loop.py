"""The training run: SGD epochs, validation, a checkpoint and a metrics row per epoch, resume.

Files in the output folder (written by rank 0 only):
  checkpoint.pt    model state_dict (X layers' index buffers, i.e. the graphs, included),
                   optimizer, scheduler, epochs done, run config, recipe; rewritten every epoch
  metrics.jsonl    one JSON object per epoch (epoch, train_loss, train_accuracy, val_loss,
                   val_accuracy, lr, seconds, ...); --resume appends
  curves.png       loss and accuracy per epoch
  model_final.pt   the trained model alone (name, classes, normalisation, state_dict)
"""
import json
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, Subset

from .. import _extras
from . import data as datasets
from .distributed import all_sum, broadcast_buffers, check_same_graphs
from .plot import save_curves
from .recipes import recipe_for

CHECKPOINT, FINAL, METRICS, CURVES = "checkpoint.pt", "model_final.pt", "metrics.jsonl", "curves.png"
FORMAT = "xkern-train-checkpoint-1"


@dataclass
class RunConfig:
    """One training run; None means the recipe's or the dataset's default."""
    model: str
    data: str
    out: str
    epochs: int
    data_dir: str = None
    batch_size: int = None
    lr: float = None
    weight_decay: float = None
    seed: int = 0
    resume: bool = False
    limit: int = None
    image_size: int = None
    workers: int = None  # data-loader processes; None: 0 for in-memory data, up to 8 for folders
    progress: bool = True
    autocast: str = None  # "bfloat16" or "float16": forward passes under torch.autocast
    block: int = 1        # X models' expanders in blocks of this many outputs (xkern.models.create)


def build_model(name, num_classes, seed, block=1):
    """A registry model with freshly drawn weights and graphs, reproducible from seed (an X
    model's expanders in blocks of `block` outputs)."""
    from .. import models
    torch.manual_seed(seed)
    return models.create(name, num_classes=num_classes, seed=seed, block=block)


def model_cost(model, image_shape):
    """{"params": int, "macs": int} of one image through model, or None if unknown."""
    from .. import models
    return models.complexity(model, (1,) + tuple(image_shape))


def fit(config, ctx, splits=None):
    """Train config.model per config on ctx's device(s); returns all metrics rows of the run.

    splits: already loaded data (compare trains several models on one load); None loads it.
    """
    log = print if ctx.is_main else (lambda *a, **k: None)
    if splits is None:
        splits = datasets.load(config.data, config.data_dir, image_size=config.image_size,
                               limit=config.limit)
    recipe = recipe_for(config.model, config.data, config.epochs, lr=config.lr,
                        batch_size=config.batch_size, weight_decay=config.weight_decay)
    model = build_model(config.model, splits.num_classes, config.seed, config.block).to(ctx.device)
    check_same_graphs(ctx, model)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                nesterov=recipe.nesterov, weight_decay=recipe.weight_decay)
    # LambdaLR saves only its epoch counter: the schedule itself always comes from the recipe,
    # so resuming with a larger --epochs re-places the milestones for the new length.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, recipe.lr_factor)
    ckpt_path = os.path.join(config.out, CHECKPOINT)
    metrics_path = os.path.join(config.out, METRICS)
    start = _restore(config, ckpt_path, model, optimizer, scheduler, ctx) if config.resume else 0
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = base * recipe.lr_factor(start)
    rows = _metrics_until(metrics_path, start)

    cost = model_cost(model, splits.image_shape)
    log(f"xkern train: {config.model}{f' (expander blocks of {config.block})' if config.block > 1 else ''} "
        f"({cost['params'] / 1e6:.3g} M params, "
        f"{cost['macs'] / 1e6:.4g} M MACs per image) on {splits.describe()}")
    log(f"  device {ctx.device} x {ctx.world_size} process(es), seed {config.seed}, "
        f"epochs {start + 1}..{config.epochs} of {config.epochs}")
    log(f"  recipe: {recipe.describe()}")
    if config.autocast:
        log(f"  mixed precision: torch.autocast({ctx.device.type!r}, {config.autocast})"
            f"{' with a gradient scaler' if config.autocast == 'float16' else ''}; "
            f"X layers compute in float32")
    log(f"  output: {config.out}/{{{CHECKPOINT},{METRICS},{CURVES},{FINAL}}}")
    if start >= config.epochs:
        log(f"  checkpoint already has {start} epoch(s): nothing to train")
        return rows
    if config.progress and not has_tqdm():
        log(f"  no progress bars: {_extras.missing_message('tqdm', 'progress bars')}")
    if not _extras.available("matplotlib"):
        log(f"  no {CURVES}: {_extras.missing_message('matplotlib', 'plotting')}")
    if ctx.is_main:
        os.makedirs(config.out, exist_ok=True)
        _write_rows(metrics_path, rows)

    net = model
    if ctx.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None)
    sampler, train_loader, val_loader = _loaders(splits, recipe.batch_size, config, ctx)
    amp = _Amp(config.autocast, ctx.device.type)

    for epoch in range(start, config.epochs):
        began = time.perf_counter()
        seed = np.random.SeedSequence([config.seed, epoch, ctx.rank]).generate_state(2)
        torch.manual_seed(int(seed[0]))  # dropout: a resumed run repeats an uninterrupted one
        augment_rng = torch.Generator().manual_seed(int(seed[1]))
        sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        train = _train_epoch(net, train_loader, splits.transform, optimizer, ctx, augment_rng,
                             desc=f"epoch {epoch + 1}/{config.epochs}",
                             progress=config.progress and ctx.is_main, amp=amp)
        train_seconds = time.perf_counter() - began
        broadcast_buffers(ctx, model)
        val = _evaluate(model, val_loader, splits.transform, ctx, amp)
        loss_sum, correct, count, val_loss_sum, val_correct, val_count = all_sum(ctx, train + val)
        scheduler.step()
        row = {"epoch": epoch + 1, "train_loss": loss_sum / count, "train_accuracy": correct / count,
               "val_loss": val_loss_sum / val_count, "val_accuracy": val_correct / val_count,
               "lr": lr, "seconds": time.perf_counter() - began, "train_seconds": train_seconds,
               "images_per_second": count / train_seconds,
               "ms_per_step": 1000 * train_seconds / max(1, len(train_loader)),
               "world_size": ctx.world_size}
        if not np.isfinite(row["train_loss"]):
            raise FloatingPointError(f"training loss is {row['train_loss']} in epoch {epoch + 1}: "
                                     f"lower the learning rate (--lr, now {recipe.lr:g})")
        rows.append(row)
        log(f"epoch {epoch + 1}/{config.epochs}: train loss {row['train_loss']:.4f}, "
            f"train acc {100 * row['train_accuracy']:.2f}%, val loss {row['val_loss']:.4f}, "
            f"val acc {100 * row['val_accuracy']:.2f}%, lr {lr:g}, {row['seconds']:.1f} s")
        if ctx.is_main:
            _append_row(metrics_path, row)
            _save(ckpt_path, _checkpoint(config, recipe, splits, model, optimizer, scheduler,
                                         epoch + 1))
            save_curves(rows, os.path.join(config.out, CURVES), title=config.model)
    if ctx.is_main:
        _save(os.path.join(config.out, FINAL), _final(config, splits, model))
    return rows


def _loaders(splits, batch_size, config, ctx):
    """(train sampler, train loader, val loader) for this rank."""
    workers = config.workers
    if workers is None:
        workers = 0 if isinstance(splits.train, datasets.TensorImages) else \
            min(8, max(1, (os.cpu_count() or 1) // ctx.world_size))
    pin = ctx.device.type == "cuda"
    # Also with one process: its seed + set_epoch order makes a resumed run repeat an unbroken one.
    sampler = DistributedSampler(splits.train, num_replicas=ctx.world_size, rank=ctx.rank,
                                 shuffle=True, seed=config.seed)
    per_rank = len(sampler)
    train = DataLoader(splits.train, batch_size=batch_size, sampler=sampler, num_workers=workers,
                       pin_memory=pin,
                       # BatchNorm cannot train on a last batch of one image.
                       drop_last=per_rank % batch_size == 1 and per_rank > 1)
    # Each rank scores a disjoint slice; the all-reduced counts cover the val set exactly once.
    val = DataLoader(Subset(splits.val, range(ctx.rank, len(splits.val), ctx.world_size)),
                     batch_size=batch_size, num_workers=workers, pin_memory=pin)
    return sampler, train, val


class _Amp:
    """Mixed precision of a run: the autocast context of its forward passes and, for float16, the
    gradient scaler that keeps small gradients from flushing to zero (bfloat16 needs none)."""

    def __init__(self, dtype, device_type):
        self.dtype, self.device_type = dtype, device_type
        self.scaler = torch.amp.GradScaler(device_type) if dtype == "float16" else None

    def autocast(self):
        return torch.autocast(self.device_type, dtype=getattr(torch, self.dtype or "float32"),
                              enabled=self.dtype is not None)

    def step(self, loss, optimizer):
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


def _train_epoch(net, loader, transform, optimizer, ctx, rng, desc, progress, amp):
    """One pass over this rank's shard; returns [loss sum, correct, count] of this rank."""
    net.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
    correct = torch.zeros((), dtype=torch.int64, device=ctx.device)
    count = 0
    bar = _progress_bar(loader, desc, progress)
    for step, (images, labels) in enumerate(bar):
        x = transform(images.to(ctx.device, non_blocking=True), train=True, generator=rng)
        labels = labels.to(ctx.device, non_blocking=True)
        with amp.autocast():
            logits = net(x)
            loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        amp.step(loss, optimizer)
        loss_sum += loss.detach().double() * len(labels)
        correct += (logits.detach().argmax(1) == labels).sum()
        count += len(labels)
        if progress and step % 10 == 0:  # .item() waits for the GPU: not every step
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    return [loss_sum.item(), correct.item(), count]


class _NoBar:
    """What _train_epoch uses of a tqdm bar, for runs without one."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        return iter(self.loader)

    def set_postfix(self, **kwargs):
        pass

    def close(self):
        pass


def _progress_bar(loader, desc, progress):
    """A tqdm bar over loader, or a bare iteration when progress is off or tqdm is missing
    (fit reports the missing package once, before training)."""
    if progress and has_tqdm():
        from tqdm.auto import tqdm
        return tqdm(loader, desc=desc, unit="batch", leave=False)
    return _NoBar(loader)


def has_tqdm():
    return _extras.available("tqdm")


@torch.no_grad()
def _evaluate(model, loader, transform, ctx, amp):
    """[loss sum, correct, count] of model over loader (this rank's slice of the val set).

    Runs the bare module, not the DDP wrapper: ranks hold different numbers of val batches,
    and DDP's forward would wait for the others.
    """
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for images, labels in loader:
        x = transform(images.to(ctx.device, non_blocking=True), train=False)
        labels = labels.to(ctx.device, non_blocking=True)
        with amp.autocast():
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
        count += len(labels)
    return [loss_sum, correct, count]


def _final(config, splits, model):
    """What predicting needs: the model's name, classes, input and weights (graphs included)."""
    return {"format": FORMAT, "model_name": config.model, "num_classes": splits.num_classes,
            "classes": list(splits.classes), "image_shape": list(splits.image_shape),
            "normalization": {"mean": list(splits.transform.mean), "std": list(splits.transform.std)},
            "seed": config.seed, "block": config.block, "model": model.state_dict()}


def _checkpoint(config, recipe, splits, model, optimizer, scheduler, epochs_done):
    return {**_final(config, splits, model), "epoch": epochs_done, "args": asdict(config),
            "recipe": recipe.as_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict()}


def _save(path, obj):
    # Write then rename: an interrupted save never leaves a truncated checkpoint behind.
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _restore(config, path, model, optimizer, scheduler, ctx):
    """Load path into model/optimizer/scheduler; returns the number of epochs already done."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--resume: no checkpoint at {path!r} (run without --resume first)")
    ckpt = torch.load(path, map_location=ctx.device, weights_only=True)
    if ckpt.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not an xkern training checkpoint")
    for key in ("model", "data", "block"):
        saved = ckpt["args"].get(key, 1 if key == "block" else None)
        if saved != getattr(config, key):
            raise ValueError(f"--resume: {path!r} was trained with --{key} {saved}, "
                             f"not {getattr(config, key)}")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    return ckpt["epoch"]


def _metrics_until(path, epochs_done):
    """Rows of path for epochs 1..epochs_done (later rows belong to an epoch never checkpointed)."""
    if epochs_done == 0 or not os.path.isfile(path):
        return []
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if r["epoch"] <= epochs_done]


def _write_rows(path, rows):
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def _append_row(path, row):
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
