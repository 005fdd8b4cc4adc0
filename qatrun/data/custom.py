"""``dataset=custom``: the user's own dataset object, built by ``dataset.target=pkg.module:build``."""

from __future__ import annotations

from typing import Optional

import torch

from qatrun import checks
from qatrun.data.base import DATASETS, DataShape
from qatrun.userimport import build_with


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
    def shape(target: Optional[str], options: Optional[dict], **_) -> DataShape:
        data = CustomData.make(target, options)
        return DataShape(tuple(data.input_shape), int(data.num_classes))

    def __new__(cls, device, seed, world, rank, shape: DataShape, target: Optional[str], options: Optional[dict]):
        return _OnDevice(cls.make(target, options, seed, world, rank), device)
