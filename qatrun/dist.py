"""torchrun support: one process per GPU (or CPU process with gloo), rank 0 writes everything.

Under ``torchrun`` every process joins the process group (NCCL on CUDA, gloo on the CPU), also
``--nproc_per_node=1``, so one process checks the whole distributed path, and both runs of the pair
are wrapped in DistributedDataParallel; every rank takes its equal slice of the same global batch,
so the averaged gradients equal the single-process gradient of the global batch. A plain
``python -m qatrun`` (no torchrun, ``WORLD_SIZE`` unset or 1) stays one process without a group.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def launched() -> bool:
    """Started by torchrun (its ``TORCHELASTIC_RUN_ID``) or by another launcher with ``WORLD_SIZE > 1``."""
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """This process is in a process group: the collectives and DDP below run."""
    return dist.is_available() and dist.is_initialized()


def world() -> int:
    return dist.get_world_size() if active() else int(os.environ.get("WORLD_SIZE", "1"))


def backend() -> str | None:
    """The process group's backend (``nccl``, ``gloo``), None in a single process."""
    return str(dist.get_backend()) if active() else None


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def setup(device_name: str) -> torch.device | None:
    """Join the process group when launched by torchrun; returns this rank's device (None: single process)."""
    if not launched():
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
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def mean(t: torch.Tensor) -> torch.Tensor:
    """All-reduce mean across ranks (identity in a single process)."""
    if active():
        t = t.clone()
        dist.all_reduce(t)
        t /= world()
    return t


def sum_(t: torch.Tensor) -> torch.Tensor:
    """All-reduce sum across ranks (identity in a single process)."""
    if active():
        t = t.clone()
        dist.all_reduce(t)
    return t


def min_(t: torch.Tensor) -> torch.Tensor:
    """All-reduce minimum across ranks (identity in a single process)."""
    if active():
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t


def broadcast_(tensors) -> None:
    """Rank 0's values into ``tensors`` on every rank, in place (nothing without torchrun); any dtype (sent as
    float64, which holds the bool, int and float values of a few calibration buffers exactly)."""
    if not active():
        return
    for t in tensors:
        buf = t.detach().to(torch.float64)
        dist.broadcast(buf, src=0)
        t.data.copy_(buf.to(t.dtype))


def barrier() -> None:
    if active():
        dist.barrier()


def teardown() -> None:
    if active():
        dist.destroy_process_group()
