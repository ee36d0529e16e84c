"""Multi-process training under torchrun, on torch's own DistributedDataParallel.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `setup` joins the process group with nccl on
GPUs and gloo on CPUs.  Rank 0 alone prints and writes files.  Sums (losses, correct counts)
are all-reduced, so every rank reports the numbers of the whole dataset.
"""
import os
import zlib
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """Where this process runs: its rank among world_size processes and its torch device."""
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.world_size > 1


def resolve_device(device):
    """"cpu", "cuda" or None (cuda when torch sees a GPU, else cpu) -> "cpu" or "cuda"."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' asked for, but torch sees no GPU "
                         f"(torch {torch.__version__}, built with CUDA {torch.version.cuda})")
    return device


def setup(device=None):
    """Context of this process; joins the torchrun process group when WORLD_SIZE > 1."""
    kind = resolve_device(device)
    env = {k: int(os.environ.get(k, default)) for k, default in
           (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0))}
    if kind == "cuda":
        if env["LOCAL_RANK"] >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {env['LOCAL_RANK']} but only "
                             f"{torch.cuda.device_count()} GPU(s): lower --nproc_per_node")
        torch.cuda.set_device(env["LOCAL_RANK"])
        torch_device = torch.device("cuda", env["LOCAL_RANK"])
    else:
        torch_device = torch.device("cpu")
    if env["WORLD_SIZE"] > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if kind == "cuda" else "gloo")
    return Context(env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], torch_device)


def teardown():
    if dist.is_initialized():
        dist.destroy_process_group()


def all_sum(ctx, values):
    """Element-wise sum of a list of numbers over all ranks (float64)."""
    total = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    if ctx.distributed:
        dist.all_reduce(total)
    return total.tolist()


def check_same_graphs(ctx, model):
    """Raise unless every rank built the same expander graphs (buffers named *index).

    DDP would overwrite them with rank 0's anyway; a mismatch means the ranks did not agree
    on the seed, so say so instead of training silently on rank 0's draw.
    """
    if not ctx.distributed:
        return
    crc = 0
    for name, buf in model.named_buffers():
        if name.endswith("index"):
            crc = zlib.crc32(buf.detach().cpu().numpy().tobytes(), crc)
    # max == -max(-x) holds on every rank only if all ranks hold the same value.
    both = torch.tensor([crc, -crc], dtype=torch.int64, device=ctx.device)
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    if both[0].item() != -both[1].item():
        raise RuntimeError("ranks built different expander graphs: pass the same --seed to all")


def broadcast_buffers(ctx, model):
    """Copy rank 0's buffers (BatchNorm statistics, graphs) to all ranks.

    After the last training step each rank has updated BatchNorm statistics on its own batch;
    this makes every rank evaluate exactly the model rank 0 checkpoints.
    """
    if ctx.distributed:
        for buf in model.buffers():
            dist.broadcast(buf, src=0)
