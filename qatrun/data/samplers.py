"""Samplers of the ImageFolder datasets: the train batches as a function of the step (exact resume,
rank slices of one global batch) and the evaluation shard of one rank."""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Dataset, Sampler

from qatrun.data.mnist import DatasetError


class ShardSampler(Sampler[int]):
    """Evaluation shard of one rank: indices ``rank, rank + world, ...`` in order, no padding.

    Unlike ``DistributedSampler`` it never repeats samples, so summed counts over the ranks give
    the exact accuracy; ranks may get one batch more or less (no per-batch collectives in eval:
    run the un-wrapped model and all-reduce the totals at the end).
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"ShardSampler: rank {rank} outside [0, {num_replicas})")
        self.n, self.num_replicas, self.rank = len(dataset), num_replicas, rank

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.num_replicas))


class StepBatchSampler(Sampler[list[int]]):
    """Batches as a function of the step, for exact resume: epoch ``e`` is a permutation drawn
    from ``(seed, e)``; each global batch of ``global_batch`` indices is split evenly over the
    ``world`` ranks (rank ``r`` gets its slice). ``start(step)`` positions the next iteration."""

    def __init__(self, n: int, global_batch: int, seed: int, world: int = 1, rank: int = 0):
        if global_batch % world:
            raise ValueError(f"dataset.batch_size={global_batch} must be divisible by the {world} processes")
        self.n, self.global_batch, self.seed, self.world, self.rank = n, global_batch, seed, world, rank
        self.steps_per_epoch = n // global_batch
        if self.steps_per_epoch == 0:
            raise DatasetError(f"ImageNet train split has {n} samples, fewer than one batch of {global_batch}")
        self._step = 0

    def start(self, step: int) -> None:
        self._step = step

    def __iter__(self):
        epoch, offset = divmod(self._step, self.steps_per_epoch)
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        local = self.global_batch // self.world
        for b in range(offset, self.steps_per_epoch):
            chunk = perm[b * self.global_batch : (b + 1) * self.global_batch]
            yield chunk[self.rank * local : (self.rank + 1) * local].tolist()

    def __len__(self) -> int:
        return self.steps_per_epoch - self._step % self.steps_per_epoch
