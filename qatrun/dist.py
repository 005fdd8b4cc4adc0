"""torchrun support: one process per GPU (or CPU process with gloo), rank 0 writes everything.

Under ``torchrun`` (``WORLD_SIZE > 1``) both runs of the pair are wrapped in
DistributedDataParallel; every rank takes its equal slice of the same global batch, so the
averaged gradients equal the single-process gradient of the global batch.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def setup(device_name: str) -> torch.device | None:
    """Join the process group when launched by torchrun; returns this rank's device (None: single process)."""
    if world() <= 1:
        return None
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    if world() <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def mean(t: torch.Tensor) -> torch.Tensor:
    """All-reduce mean across ranks (identity in a single process)."""
    if world() > 1:
        t = t.clone()
        dist.all_reduce(t)
        t /= world()
    return t


def sum_(t: torch.Tensor) -> torch.Tensor:
    """All-reduce sum across ranks (identity in a single process)."""
    if world() > 1:
        t = t.clone()
        dist.all_reduce(t)
    return t


def min_(t: torch.Tensor) -> torch.Tensor:
    """All-reduce minimum across ranks (identity in a single process)."""
    if world() > 1:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
