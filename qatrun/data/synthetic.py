"""Synthetic images generated on the device: for throughput benchmarks and smoke runs.

``SyntheticImages.get_batch(step, batch_size)`` draws the batch with a ``torch.Generator`` that
lives on the target device and is re-seeded from ``(seed, step mod num_batches)``: no host->device
transfer, no stored pool, and the same ``(seed, batch_size, step)`` always gives the same batch
on the same device (CPU and CUDA generators give different numbers for the same seed). The
"dataset" has ``length`` samples, i.e. ``length // batch_size`` distinct batches per epoch
(``drop_last``); step ``s`` and ``s + num_batches`` return the same batch, like a dataset seen
in a fixed order every epoch.

Images are ``N(0, 1)`` (the scale of normalized data), labels uniform in ``[0, num_classes)``.
With ``signal > 0`` each image also gets ``signal * pattern[label]`` added, a fixed random
per-class pattern, so a model can actually learn the labels (smoke tests of a training loop).
"""

from __future__ import annotations

from typing import Iterator

import torch

from qatrun import checks
from qatrun.data.base import DATASETS, DataShape, RankSlice

_MIX = 1_000_003  # odd multiplier to spread (seed, step) over the 63-bit seed space


def _positive_int(key: str, val) -> int:
    return checks.positive_int(f"SyntheticImages: {key}", val)


class SyntheticImages:
    def __init__(
        self,
        num_classes: int,
        image_size: int,
        channels: int = 3,
        length: int = 50_000,
        device: str | torch.device = "cpu",
        seed: int = 0,
        signal: float = 0.0,
        batch_size: int | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        self.num_classes = _positive_int("num_classes", num_classes)
        self.image_size = _positive_int("image_size", image_size)
        self.channels = _positive_int("channels", channels)
        self.length = _positive_int("length", length)
        self.device = torch.device(device)
        self.seed = int(seed)
        self.signal = float(signal)
        self.batch_size = None if batch_size is None else _positive_int("batch_size", batch_size)
        self.dtype = dtype
        self.patterns = None
        if self.signal:
            g = self._generator(-1)
            self.patterns = torch.randn(
                (num_classes, channels, image_size, image_size), generator=g, device=self.device, dtype=dtype
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    def num_batches(self, batch_size: int) -> int:
        """Distinct batches per epoch (``length // batch_size``, the last partial batch dropped)."""
        n = self.length // _positive_int("batch_size", batch_size)
        if n == 0:
            raise ValueError(f"SyntheticImages: batch_size {batch_size} exceeds length {self.length}")
        return n

    def _generator(self, index: int) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed((self.seed * _MIX + index + 1) % (2**63))
        return g

    def get_batch(self, step: int, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``step`` (taken modulo ``num_batches``): ``x [B, C, H, W]``, ``y [B]`` (int64)."""
        bs = self.batch_size if batch_size is None else batch_size
        if bs is None:
            raise ValueError("SyntheticImages.get_batch: give batch_size (or set it in the constructor)")
        return self.batch_at(int(step) % self.num_batches(bs), bs)

    def batch_at(self, index: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``size`` samples drawn from batch ``index``'s generator: a full batch, or the short last one of an
        evaluation that covers every sample (its first ``size`` samples differ from a full batch's)."""
        g = self._generator(index)
        x = torch.randn((size, *self.shape), generator=g, device=self.device, dtype=self.dtype)
        y = torch.randint(0, self.num_classes, (size,), generator=g, device=self.device)
        if self.patterns is not None:
            x.add_(self.patterns[y], alpha=self.signal)
        return x, y

    def __len__(self) -> int:
        """Batches per epoch (needs ``batch_size`` set in the constructor)."""
        if self.batch_size is None:
            raise TypeError("len(SyntheticImages) needs batch_size set in the constructor")
        return self.num_batches(self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of batches, like a DataLoader (needs ``batch_size`` set in the constructor)."""
        for step in range(len(self)):
            yield self.get_batch(step)

    def __repr__(self):
        return (
            f"SyntheticImages(num_classes={self.num_classes}, shape={self.shape}, length={self.length}, "
            f"device={self.device}, seed={self.seed}, signal={self.signal})"
        )


@DATASETS.register("synthetic")
class SyntheticData(RankSlice):
    """``dataset=synthetic``: random images generated on the device (``SyntheticImages``), for throughput checks."""

    @staticmethod
    def shape(batch_size: int, eval_batch_size: int, num_classes: int, image_size: int, channels: int,
              length: int, test_length: int, **_) -> DataShape:
        for key, v in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size),
                       ("num_classes", num_classes), ("image_size", image_size), ("channels", channels),
                       ("length", length), ("test_length", test_length)):
            checks.positive_int(f"dataset.{key}", v)
        if batch_size > length:  # the test set needs no such bound: it is evaluated in full, its last batch short
            raise ValueError(f"dataset.batch_size={batch_size} exceeds dataset.length={length}, the training set "
                             "(batches drop their remainder): valid is a batch_size of at most the length")
        return DataShape((channels, image_size, image_size), num_classes)

    def __init__(self, device, seed, world, rank, shape: DataShape, batch_size: int, eval_batch_size: int,
                 num_classes: int, image_size: int, channels: int, length: int, test_length: int, signal: float):
        self.input_shape = shape.input_shape
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
        """Every test sample once, as MNIST and ImageFolder evaluate: full batches, the last one short."""
        n, bs = self.test.length, self.eval_batch_size
        for i in self._shard(-(-n // bs)):
            yield self.test.batch_at(i, min(bs, n - i * bs))
