"""Datasets (one registry): each entry is built from its config group's keys, by name.

Interface: ``num_classes``, ``device``, ``steps_per_epoch``, ``batch(step) -> (x, y)`` on the
device (the batch is a function of the step, so both runs and a resumed run see the same data;
under torchrun this rank's equal slice of the global batch), and ``test_batches()`` yielding
``(x, y)``. Every builder takes ``device, seed, world, rank`` plus the keys of its YAML file in
``configs/dataset/`` (``name`` selects the entry).
"""

from __future__ import annotations

import torch

from qatrun import checks
from qatrun.data.mnist import DatasetError, load_mnist
from qatrun.registry import Registry

DATASETS: Registry = Registry("dataset")


class _RankSlice:
    """Tensor-backed datasets under torchrun: this rank's equal slice of each global batch."""

    def _set_world(self, batch_size: int, world: int, rank: int) -> None:
        if batch_size % world:
            raise ValueError(f"dataset.batch_size={batch_size} must be divisible by the {world} processes")
        self.world, self.rank = world, rank

    def _slice(self, x, y):
        if self.world == 1:
            return x, y
        n = len(x) // self.world
        return x[self.rank * n : (self.rank + 1) * n], y[self.rank * n : (self.rank + 1) * n]


@DATASETS.register("mnist")
class MnistData(_RankSlice):
    """All of MNIST as uint8 on the training device; fixed order (``seed`` unused), drop-last batches."""

    num_classes = 10

    def __init__(self, device, seed, world, rank, root, batch_size, eval_batch_size, train_subset, test_subset,
                 mean, std, download=True):
        checks.positive_int("dataset.batch_size", batch_size)
        checks.positive_int("dataset.eval_batch_size", eval_batch_size)
        checks.positive_int("dataset.train_subset", train_subset, allow_none=True)
        checks.positive_int("dataset.test_subset", test_subset, allow_none=True)
        self._set_world(batch_size, world, rank)
        d = load_mnist(root, device, download)
        self.device = torch.device(device)
        self.train_x, self.train_y = d["train_x"][:train_subset], d["train_y"][:train_subset]
        self.test_x, self.test_y = d["test_x"][:test_subset], d["test_y"][:test_subset]
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.steps_per_epoch = len(self.train_x) // batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"dataset.batch_size={batch_size} exceeds the {len(self.train_x)} training examples")
        self.mean, self.std = mean, std

    def _prep(self, x):
        return ((x.float() / 255 - self.mean) / self.std).unsqueeze(1)

    def batch(self, step: int):
        i = (step % self.steps_per_epoch) * self.batch_size
        return self._slice(self._prep(self.train_x[i : i + self.batch_size]), self.train_y[i : i + self.batch_size])

    def test_batches(self):
        for i in range(0, len(self.test_x), self.eval_batch_size):
            yield self._prep(self.test_x[i : i + self.eval_batch_size]), self.test_y[i : i + self.eval_batch_size]


@DATASETS.register("synthetic")
class SyntheticData(_RankSlice):
    """Random images generated on the device (``qatrun.data.synthetic``), for throughput checks."""

    def __init__(self, device, seed, world, rank, batch_size, eval_batch_size, num_classes, image_size, channels,
                 length, test_length, signal):
        from qatrun.data.synthetic import SyntheticImages

        self._set_world(batch_size, world, rank)
        self.num_classes, self.device = num_classes, torch.device(device)
        self.train = SyntheticImages(num_classes, image_size, channels, length, device, seed, signal, batch_size)
        self.test = SyntheticImages(num_classes, image_size, channels, test_length, device, seed + 1, signal,
                                    eval_batch_size)
        self.train.patterns = self.test.patterns = self.train.patterns  # one task: the same class patterns
        self.steps_per_epoch = self.train.num_batches(batch_size)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size

    def batch(self, step: int):
        return self._slice(*self.train.get_batch(step, self.batch_size))

    def test_batches(self):
        for i in range(self.test.num_batches(self.eval_batch_size)):
            yield self.test.get_batch(i, self.eval_batch_size)


@DATASETS.register("imagenet")
def imagenet(device, seed, world, rank, root, **options):
    """ImageNet in ImageFolder layout (``qatrun.data.imagenet``); ``root`` is required."""
    from qatrun.data.imagenet import ImageNetData

    if root is None:
        raise ValueError("dataset=imagenet needs dataset.root=/path/with/train/and/val")
    return ImageNetData(root=root, device=device, seed=seed, world=world, rank=rank, **options)


def build_data(name: str, device, seed: int = 0, world: int = 1, rank: int = 0, **options):
    """The dataset ``name`` with its config group's ``options``; with ``world > 1`` each rank gets its
    share of every global batch."""
    return DATASETS.build(name, device=device, seed=seed, world=world, rank=rank, **options)


__all__ = ["DATASETS", "DatasetError", "build_data", "MnistData", "SyntheticData"]
