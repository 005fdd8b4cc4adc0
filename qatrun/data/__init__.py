"""Datasets (one registry): each builder returns an object the lockstep loop reads from.

Interface: ``num_classes``, ``device``, ``steps_per_epoch``, ``batch(step) -> (x, y)`` on the
device (the batch is a function of the step, so both runs and a resumed run see the same data),
and ``test_batches()`` yielding ``(x, y)``.
"""

from __future__ import annotations

import torch

from qatrun.data.mnist import DatasetError, load_mnist


class MnistData:
    """All of MNIST as uint8 on the training device; fixed order, drop-last batches, no PIL."""

    num_classes = 10

    def __init__(self, root, device, batch_size, eval_batch_size, train_subset, test_subset, mean, std, download=True):
        for key, v in (("dataset.batch_size", batch_size), ("dataset.eval_batch_size", eval_batch_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{key} must be a positive integer, got {v!r}")
        for key, v in (("dataset.train_subset", train_subset), ("dataset.test_subset", test_subset)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{key} must be a positive integer or null (all), got {v!r}")
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
        return self._prep(self.train_x[i : i + self.batch_size]), self.train_y[i : i + self.batch_size]

    def test_batches(self):
        for i in range(0, len(self.test_x), self.eval_batch_size):
            yield self._prep(self.test_x[i : i + self.eval_batch_size]), self.test_y[i : i + self.eval_batch_size]


class SyntheticData:
    """Random images generated on the device (``qatrun.data.synthetic``), for throughput checks."""

    def __init__(self, device, seed, batch_size, eval_batch_size, num_classes, image_size, channels, length,
                 test_length, signal):
        from qatrun.data.synthetic import SyntheticImages

        self.num_classes, self.device = num_classes, torch.device(device)
        self.train = SyntheticImages(num_classes, image_size, channels, length, device, seed, signal, batch_size)
        self.test = SyntheticImages(num_classes, image_size, channels, test_length, device, seed + 1, signal,
                                    eval_batch_size)
        self.train.patterns = self.test.patterns = self.train.patterns  # one task: the same class patterns
        self.steps_per_epoch = self.train.num_batches(batch_size)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size

    def batch(self, step: int):
        return self.train.get_batch(step, self.batch_size)

    def test_batches(self):
        for i in range(self.test.num_batches(self.eval_batch_size)):
            yield self.test.get_batch(i, self.eval_batch_size)


class RankShard:
    """Under torchrun: this rank's equal slice of each global batch (tensor-backed datasets)."""

    def __init__(self, data, world: int, rank: int):
        if data.batch_size % world:
            raise ValueError(f"dataset.batch_size={data.batch_size} must be divisible by the {world} processes")
        self.data, self.world, self.rank = data, world, rank
        self.num_classes, self.device, self.steps_per_epoch = data.num_classes, data.device, data.steps_per_epoch

    def batch(self, step: int):
        x, y = self.data.batch(step)
        n = len(x) // self.world
        return x[self.rank * n : (self.rank + 1) * n], y[self.rank * n : (self.rank + 1) * n]

    def test_batches(self):
        return self.data.test_batches()


def _imagenet(cfg, device, seed, world=1, rank=0):
    from qatrun.data.imagenet import ImageNetData

    if cfg.root is None:
        raise ValueError("dataset=imagenet needs dataset.root=/path/with/train/and/val")
    return ImageNetData(cfg.root, device, cfg.batch_size, cfg.eval_batch_size, cfg.workers, cfg.image_size,
                        cfg.resize, cfg.train_subset, cfg.test_subset, seed, world, rank)


def _mnist(cfg, device, seed, world=1, rank=0):
    data = MnistData(cfg.root, device, cfg.batch_size, cfg.eval_batch_size, cfg.train_subset, cfg.test_subset,
                     cfg.mean, cfg.std, cfg.download)
    return RankShard(data, world, rank) if world > 1 else data


def _synthetic(cfg, device, seed, world=1, rank=0):
    data = SyntheticData(device, seed, cfg.batch_size, cfg.eval_batch_size, cfg.num_classes, cfg.image_size,
                         cfg.channels, cfg.length, cfg.test_length, cfg.signal)
    return RankShard(data, world, rank) if world > 1 else data


DATASETS = {"mnist": _mnist, "synthetic": _synthetic, "imagenet": _imagenet}


def build_data(cfg, device, seed: int, world: int = 1, rank: int = 0):
    """``cfg``: the dataset config group. With ``world > 1`` each rank gets its share of every global batch."""
    if cfg.name not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.name!r}; valid datasets: {', '.join(sorted(DATASETS))}")
    return DATASETS[cfg.name](cfg, device, seed, world, rank)


__all__ = ["DATASETS", "DatasetError", "build_data", "MnistData", "SyntheticData"]
