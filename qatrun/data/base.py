"""The dataset registry and what every dataset shares, apart from the package so that each dataset's module can
register itself without importing the package it is part of.

A dataset is a registered class (or function) whose keyword parameters are the keys of its YAML file in
``configs/dataset/``, plus what the run supplies (``SUPPLIED``). Its static ``shape(**options)`` is the
one place its options are checked: it states the ``DataShape`` the model is built for, before any data is
read, and ``qatrun.data.build_data`` hands the checked shape to the builder.
"""

from __future__ import annotations

from typing import NamedTuple, Tuple

from qatrun.registry import Registry

# The builder parameters the run supplies (not config keys): ``shape`` is ``shape(**options)``, already checked.
SUPPLIED = ("device", "seed", "world", "rank", "shape")
DATASETS: Registry = Registry("dataset", supplied=SUPPLIED)


class DataShape(NamedTuple):
    input_shape: Tuple[int, int, int]  # (channels, height, width) of one example, as the model sees it
    num_classes: int


class RankSlice:
    """Tensor-backed datasets under torchrun: this rank's equal slice of each global batch."""

    def _set_world(self, batch_size: int, world: int, rank: int) -> None:
        if batch_size % world:
            raise ValueError(f"dataset.batch_size={batch_size} must be divisible by the {world} processes")
        self.world, self.rank = world, rank

    def _shard(self, n_batches: int):
        """This rank's test batches: every ``world``-th, so the ranks' shards cover the set once."""
        return range(self.rank, n_batches, self.world)

    def _slice(self, x, y):
        if self.world == 1:
            return x, y
        n = len(x) // self.world
        return x[self.rank * n : (self.rank + 1) * n], y[self.rank * n : (self.rank + 1) * n]
