"""Datasets (one registry): each entry is built from its config group's keys, by name.

Every entry states its shape before any data is read: ``describe(**options)`` returns a
``DataShape`` (``input_shape`` ``(channels, height, width)`` and ``num_classes``), which the run
builds its model from and preflight checks the model against. Interface of a built dataset:
``num_classes``, ``input_shape``, ``device``, ``steps_per_epoch``, ``batch(step) -> (x, y)`` on the
device (the batch is a function of the step, so both runs and a resumed run see the same data;
under torchrun this rank's equal slice of the global batch), and ``test_batches()`` yielding
``(x, y)``. Every builder takes ``device, seed, world, rank`` plus the keys of its YAML file in
``configs/dataset/`` (``name`` selects the entry).
"""

from __future__ import annotations

import torch

import os
from typing import NamedTuple, Optional, Tuple

from qatrun import checks
from qatrun.data.mnist import DatasetError, load_mnist
from qatrun.registry import Registry

# The builder parameters the run supplies (not config keys).
DATASETS: Registry = Registry("dataset", supplied=("device", "seed", "world", "rank"))


class DataShape(NamedTuple):
    input_shape: Tuple[int, int, int]  # (channels, height, width) of one example, as the model sees it
    num_classes: int


def describe(name: str, **options) -> DataShape:
    """What dataset ``name`` with these options feeds the model, without reading the data (errors: one line)."""
    cls = DATASETS.get(name)
    fields = DATASETS.options(name)
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ValueError(f"dataset {name!r}: unknown options {', '.join(unknown)}; it takes {', '.join(fields)}")
    return cls.describe(**options)


class _RankSlice:
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


@DATASETS.register("mnist")
class MnistData(_RankSlice):
    """All of MNIST as uint8 on the training device; fixed order (``seed`` unused), drop-last batches."""

    num_classes, input_shape = 10, (1, 28, 28)

    @staticmethod
    def describe(batch_size: int, eval_batch_size: int, train_subset: Optional[int], test_subset: Optional[int],
                 **_) -> DataShape:
        checks.positive_int("dataset.batch_size", batch_size)
        checks.positive_int("dataset.eval_batch_size", eval_batch_size)
        checks.positive_int("dataset.train_subset", train_subset, allow_none=True)
        checks.positive_int("dataset.test_subset", test_subset, allow_none=True)
        return DataShape(MnistData.input_shape, MnistData.num_classes)

    def __init__(self, device, seed, world, rank, root: Optional[str], batch_size: int, eval_batch_size: int,
                 train_subset: Optional[int], test_subset: Optional[int], mean: float, std: float,
                 download: bool = True):
        self.describe(batch_size, eval_batch_size, train_subset, test_subset)
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
        for b in self._shard(-(-len(self.test_x) // self.eval_batch_size)):
            i = b * self.eval_batch_size
            yield self._prep(self.test_x[i : i + self.eval_batch_size]), self.test_y[i : i + self.eval_batch_size]


@DATASETS.register("synthetic")
class SyntheticData(_RankSlice):
    """Random images generated on the device (``qatrun.data.synthetic``), for throughput checks."""

    @staticmethod
    def describe(batch_size: int, eval_batch_size: int, num_classes: int, image_size: int, channels: int,
                 length: int, test_length: int, **_) -> DataShape:
        for key, v in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size),
                       ("num_classes", num_classes), ("image_size", image_size), ("channels", channels),
                       ("length", length), ("test_length", test_length)):
            checks.positive_int(f"dataset.{key}", v)
        return DataShape((channels, image_size, image_size), num_classes)

    def __init__(self, device, seed, world, rank, batch_size: int, eval_batch_size: int, num_classes: int,
                 image_size: int, channels: int, length: int, test_length: int, signal: float):
        from qatrun.data.synthetic import SyntheticImages

        self.input_shape = self.describe(batch_size, eval_batch_size, num_classes, image_size, channels, length,
                                         test_length).input_shape
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
        for i in self._shard(self.test.num_batches(self.eval_batch_size)):
            yield self.test.get_batch(i, self.eval_batch_size)


class ImageFolderData:
    """Any class-per-folder tree ``root/train/<class>/*`` and ``root/val/<class>/*``
    (``qatrun.data.imagenet``: RandomResizedCrop + flip for training, Resize + CenterCrop for
    evaluation, ImageNet's normalisation); ``root`` is required. ``dataset=imagenet`` is its preset."""

    @staticmethod
    def describe(root: Optional[str], batch_size: int, eval_batch_size: int, workers: int, image_size: int,
                 resize: int, train_subset: Optional[int], test_subset: Optional[int], **_) -> DataShape:
        from qatrun.data.imagenet import check_imagenet_root

        for key, v in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size),
                       ("image_size", image_size), ("resize", resize)):
            checks.positive_int(f"dataset.{key}", v)
        checks.positive_int("dataset.workers", workers, minimum=0)
        checks.positive_int("dataset.train_subset", train_subset, allow_none=True)
        checks.positive_int("dataset.test_subset", test_subset, allow_none=True)
        if root is None:
            raise ValueError("dataset.root is not set: this dataset reads a folder holding train/<class>/ and "
                             "val/<class>/; give dataset.root=DIR")
        return DataShape((3, image_size, image_size), len(check_imagenet_root(os.path.expanduser(root))))

    def __new__(cls, device, seed, world, rank, root: Optional[str], batch_size: int, eval_batch_size: int,
                workers: int, image_size: int, resize: int, train_subset: Optional[int], test_subset: Optional[int]):
        from qatrun.data.imagenet import ImageNetData

        shape = cls.describe(root, batch_size, eval_batch_size, workers, image_size, resize, train_subset, test_subset)
        data = ImageNetData(root=os.path.expanduser(root), device=device, seed=seed, world=world, rank=rank,
                            batch_size=batch_size, eval_batch_size=eval_batch_size, workers=workers,
                            image_size=image_size, resize=resize, train_subset=train_subset, test_subset=test_subset)
        data.input_shape = shape.input_shape
        return data


DATASETS.register("imagefolder")(ImageFolderData)
DATASETS.register("imagenet", preset_of="imagefolder")(ImageFolderData)  # the same tree reader, ImageNet's values


class _OnDevice:
    """A user's dataset object, its batches moved to the run's device."""

    def __init__(self, data, device):
        self.data, self.device = data, torch.device(device)
        self.num_classes, self.input_shape = int(data.num_classes), tuple(int(v) for v in data.input_shape)
        self.steps_per_epoch = int(data.steps_per_epoch)

    def batch(self, step: int):
        x, y = self.data.batch(step)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def test_batches(self):
        for x, y in self.data.test_batches():
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


REQUIRED = ("num_classes", "input_shape", "steps_per_epoch", "batch", "test_batches")


@DATASETS.register("custom")
class CustomData:
    """Your own data: ``dataset.target=pkg.module:build``, a function returning an object with
    ``num_classes``, ``input_shape`` (C, H, W), ``steps_per_epoch``, ``batch(step) -> (x, y)`` (a function
    of the step, so both runs and a resumed run see the same data) and ``test_batches()``. It is called
    with whichever of ``seed``, ``world``, ``rank`` it accepts, plus ``dataset.options``."""

    @staticmethod
    def make(target: Optional[str], options: Optional[dict], seed: int = 0, world: int = 1, rank: int = 0):
        from qatrun.userimport import build_with

        if not target:
            raise ValueError("dataset=custom needs dataset.target=pkg.module:build, a function returning your dataset")
        data = build_with(target, "dataset.target", {"seed": seed, "world": world, "rank": rank}, options)
        missing = [a for a in REQUIRED if not hasattr(data, a)]
        if missing:
            raise ValueError(f"dataset.target={target} returned a {type(data).__name__} without {', '.join(missing)}; "
                             f"a dataset has {', '.join(REQUIRED)}")
        shape = tuple(data.input_shape)
        if len(shape) != 3 or not all(isinstance(v, int) and v > 0 for v in shape):
            raise ValueError(f"dataset.target={target}: input_shape must be (channels, height, width), got {shape!r}")
        checks.positive_int("dataset: num_classes", data.num_classes, minimum=2)
        checks.positive_int("dataset: steps_per_epoch", data.steps_per_epoch)
        return data

    @staticmethod
    def describe(target: Optional[str], options: Optional[dict], **_) -> DataShape:
        data = CustomData.make(target, options)
        return DataShape(tuple(data.input_shape), int(data.num_classes))

    def __new__(cls, device, seed, world, rank, target: Optional[str], options: Optional[dict]):
        return _OnDevice(cls.make(target, options, seed, world, rank), device)


def build_data(name: str, device, seed: int = 0, world: int = 1, rank: int = 0, **options):
    """The dataset ``name`` with its config group's ``options``; with ``world > 1`` each rank gets its
    share of every global batch."""
    return DATASETS.build(name, device=device, seed=seed, world=world, rank=rank, **options)


__all__ = ["DATASETS", "DataShape", "DatasetError", "build_data", "describe", "MnistData", "SyntheticData",
           "ImageFolderData"]
