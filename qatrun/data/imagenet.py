"""ImageNet (ILSVRC-2012) from an ImageFolder tree, with the standard ResNet transforms.

Expected layout (the raw validation set, which ships as one flat folder, must first be sorted
into class folders, e.g. with the usual ``valprep.sh``)::

    root/train/<class>/*.JPEG
    root/val/<class>/*.JPEG

Train: RandomResizedCrop(image_size) + RandomHorizontalFlip + ToTensor + Normalize.
Val:   Resize(resize) (shorter side) + CenterCrop(image_size) + ToTensor + Normalize.

``ImageNetData`` (what training reads) has a second path, ``decode="device"``: the workers read
the encoded bytes, the batch is decoded and augmented on the run's device with the same
transforms (``qatrun.data.encoded``, ``qatrun.data.devicedecode``).

Reproducibility (``build_imagenet_loaders``): the train order comes from a ``torch.Generator``
seeded with ``seed`` (single process) or from ``DistributedSampler(seed=seed)`` (the caller calls
``sampler.set_epoch``); the same generator also seeds the DataLoader workers, so with ``workers > 0``
the augmentations are reproducible too (with ``workers=0`` they use the global torch RNG of the main process).
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from torchvision import datasets, transforms

from qatrun import checks
from qatrun.data.devicedecode import IMAGENET_MEAN, IMAGENET_STD, DeviceDecoder
from qatrun.data.encoded import EncodedImages, collate_encoded
from qatrun.data.mnist import DatasetError  # one error type for every dataset of the package
from qatrun.data.samplers import ShardSampler, StepBatchSampler

SPLITS = ("train", "val")
LAYOUT = "expected layout: root/train/<class>/*.JPEG and root/val/<class>/*.JPEG (same class folders in both)"


def train_transform(image_size: int = 224) -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def val_transform(image_size: int = 224, resize: int = 256) -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.Resize(resize),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def _short_list(items: Sequence[str], n: int = 8) -> str:
    items = list(items)
    head = ", ".join(items[:n])
    return head + (f", ... ({len(items)} in all)" if len(items) > n else "")


def _class_folders(split_dir: str, split: str) -> list[str]:
    """Sorted class folder names of one split (the order ImageFolder uses), with clear errors."""
    with os.scandir(split_dir) as it:
        entries = list(it)
    classes = sorted(e.name for e in entries if e.is_dir())
    if not classes:
        images = [e.name for e in entries if e.is_file() and e.name.lower().endswith(datasets.folder.IMG_EXTENSIONS)]
        hint = (
            f"; it holds {len(images)} images directly: sort them into one folder per class "
            f"(the raw ImageNet val set ships flat, see valprep.sh)"
            if images
            else ""
        )
        raise DatasetError(f"the {split} split {split_dir} has no class folders{hint}; {LAYOUT}")
    return classes


def check_imagenet_root(root) -> list[str]:
    """Check the folder layout (not every file); returns the class names, sorted."""
    if root is None or str(root) == "":
        raise DatasetError(f"no dataset.root given; {LAYOUT}")
    root = os.fspath(root)
    if not os.path.exists(root):
        raise DatasetError(f"dataset.root={root} does not exist; {LAYOUT}")
    if not os.path.isdir(root):
        raise DatasetError(f"dataset.root={root} is not a directory; {LAYOUT}")
    found = {}
    for split in SPLITS:
        split_dir = os.path.join(root, split)
        if not os.path.isdir(split_dir):
            there = sorted(os.listdir(root))
            raise DatasetError(
                f"dataset.root={root} has no {split}/ folder (it holds: {_short_list(there) or 'nothing'}); {LAYOUT}"
            )
        found[split] = _class_folders(split_dir, split)
    train, val = found["train"], found["val"]
    if train != val:
        missing, extra = sorted(set(train) - set(val)), sorted(set(val) - set(train))
        parts = []
        if missing:
            parts.append(f"{len(missing)} train classes missing from val/ ({_short_list(missing)})")
        if extra:
            parts.append(f"{len(extra)} val classes not in train/ ({_short_list(extra)})")
        raise DatasetError(
            f"dataset.root={root}: train/ has {len(train)} classes and val/ has {len(val)}, "
            f"the class lists differ: {'; '.join(parts)}; {LAYOUT}"
        )
    return train


def _image_folder(root: str, split: str, transform) -> datasets.ImageFolder:
    split_dir = os.path.join(root, split)
    try:
        ds = datasets.ImageFolder(split_dir, transform=transform)
    except FileNotFoundError as e:  # a class folder without any image file
        raise DatasetError(f"the {split} split {split_dir}: {e}; {LAYOUT}") from e
    if len(ds) == 0:
        raise DatasetError(f"the {split} split {split_dir} has no images; {LAYOUT}")
    return ds


class _ClassSubset(Subset):
    """A ``Subset`` that keeps the parent's ``classes`` / ``class_to_idx``."""

    @property
    def classes(self):
        return self.dataset.classes

    @property
    def class_to_idx(self):
        return self.dataset.class_to_idx


def _subset(ds: datasets.ImageFolder, n, split: str) -> Dataset:
    """``n`` samples evenly spaced over the (class-sorted) sample list, so every class is hit."""
    if n is None:
        return ds
    checks.positive_int(f"{split}_subset", n)
    if n >= len(ds):
        return ds
    return _ClassSubset(ds, [i * len(ds) // n for i in range(n)])


def _world(num_replicas, rank) -> tuple[int, int]:
    if num_replicas is None or rank is None:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise RuntimeError("distributed=True needs an initialized process group (or num_replicas and rank)")
        num_replicas = torch.distributed.get_world_size() if num_replicas is None else num_replicas
        rank = torch.distributed.get_rank() if rank is None else rank
    return num_replicas, rank


def build_imagenet_loaders(
    root,
    batch_size: int,
    workers: int,
    image_size: int = 224,
    resize: int = 256,
    distributed: bool = False,
    seed: int = 0,
    train_subset: int | None = None,
    val_subset: int | None = None,
    pin_memory: bool = True,
    num_replicas: int | None = None,
    rank: int | None = None,
) -> tuple[DataLoader, DataLoader, int]:
    """Train and val loaders over ``root/{train,val}`` and the number of classes.

    ``batch_size`` is per process. Train: shuffled (seeded), ``drop_last=True``. Val: in order,
    every sample once. With ``distributed`` the train loader uses
    ``DistributedSampler(shuffle=True, seed=seed, drop_last=True)`` (call ``set_epoch`` each
    epoch) and val a ``ShardSampler``; ``num_replicas``/``rank`` default to the process group's.
    ``train_subset``/``val_subset`` keep that many samples, evenly spaced over the classes.
    The datasets are ``loader.dataset`` (``.classes`` lists the class folder names).
    """
    for key, val in (("batch_size", batch_size), ("image_size", image_size), ("resize", resize)):
        checks.positive_int(f"build_imagenet_loaders: {key}", val)
    checks.positive_int("build_imagenet_loaders: workers", workers, minimum=0)
    if resize < image_size:
        raise ValueError(f"build_imagenet_loaders: resize ({resize}) must be >= image_size ({image_size})")
    classes = check_imagenet_root(root)
    root = os.fspath(root)
    train_ds = _subset(_image_folder(root, "train", train_transform(image_size)), train_subset, "train")
    val_ds = _subset(_image_folder(root, "val", val_transform(image_size, resize)), val_subset, "val")

    common = dict(num_workers=workers, pin_memory=pin_memory, persistent_workers=workers > 0)
    if distributed:
        world, rk = _world(num_replicas, rank)
        train_sampler = DistributedSampler(
            train_ds, num_replicas=world, rank=rk, shuffle=True, seed=seed, drop_last=True
        )
        per_rank = len(train_sampler)
        val_sampler = ShardSampler(val_ds, world, rk)
        shuffle_kw = dict(sampler=train_sampler)
        gen = torch.Generator().manual_seed(seed + rk)  # worker seeds only
    else:
        per_rank = len(train_ds)
        val_sampler = None
        gen = torch.Generator().manual_seed(seed)
        shuffle_kw = dict(shuffle=True)
    if per_rank < batch_size:
        raise DatasetError(
            f"ImageNet train split has {per_rank} samples per process, fewer than one batch of "
            f"{batch_size} (drop_last=True would give no batch)"
        )
    train_loader = DataLoader(
        train_ds, batch_size=batch_size, drop_last=True, generator=gen, **shuffle_kw, **common
    )
    val_loader = DataLoader(
        val_ds, batch_size=batch_size, shuffle=False, sampler=val_sampler, drop_last=False, **common
    )
    return train_loader, val_loader, len(classes)


DECODE_PATHS = ("auto", "cpu", "device")


def decode_path(decode: str, device) -> str:
    """``cpu`` or ``device`` for ``dataset.decode`` on ``device`` (``auto``: the device on CUDA)."""
    checks.one_of("dataset.decode", decode, DECODE_PATHS)
    if decode == "auto":
        return "device" if torch.device(device).type == "cuda" else "cpu"
    return decode


def _split(root: str, split: str, transform, subset, encoded: bool) -> Dataset:
    """One split: ImageFolder with ``transform`` (PIL path) or ``EncodedImages`` of the same samples."""
    ds = _image_folder(root, split, None if encoded else transform)
    picked = _subset(ds, subset, split)
    if not encoded:
        return picked
    keep = picked.indices if isinstance(picked, Subset) else range(len(ds))
    return EncodedImages([ds.samples[i] for i in keep], ds.classes)


class ImageNetData:
    """The lockstep loop's view of ImageNet: ``batch(step)`` for this rank, ``test_batches()``.

    ``decode="cpu"``: PIL decodes and torchvision's PIL transforms augment in the DataLoader
    workers; the data order is exact on resume (``StepBatchSampler``), the random crops/flips after a
    resume come from fresh worker seeds. ``decode="device"``: the workers read the encoded bytes and
    the batch is decoded and augmented on ``device`` (``qatrun.data.devicedecode``), its crops and
    flips a function of ``(seed, step)``, so a resumed run sees exactly the batches of an
    uninterrupted one. ``auto``: the device on CUDA, else the CPU path.
    """

    def __init__(self, root, device, batch_size, eval_batch_size, workers, image_size, resize, train_subset,
                 test_subset, seed, world=1, rank=0, decode="cpu"):
        self.classes = check_imagenet_root(root)
        self.num_classes, self.device = len(self.classes), torch.device(device)
        self.decode = decode_path(decode, self.device)
        encoded, root = self.decode == "device", os.fspath(root)
        train_ds = _split(root, "train", train_transform(image_size), train_subset, encoded)
        val_ds = _split(root, "val", val_transform(image_size, resize), test_subset, encoded)
        self.sampler = StepBatchSampler(len(train_ds), batch_size, seed, world, rank)
        self.steps_per_epoch, self.seed, self.global_batch = self.sampler.steps_per_epoch, seed, batch_size
        self.decoder = None
        common = dict(num_workers=workers, pin_memory=self.device.type == "cuda", persistent_workers=workers > 0)
        if encoded:  # the bytes go to the decoder as they are: nothing worth pinning
            self.decoder = DeviceDecoder(self.device, image_size, resize)
            common.update(pin_memory=False, collate_fn=collate_encoded)
        self.train_loader = DataLoader(train_ds, batch_sampler=self.sampler,
                                       generator=torch.Generator().manual_seed(seed + rank), **common)
        shard = ShardSampler(val_ds, world, rank) if world > 1 else None  # each rank evaluates its shard
        self.val_loader = DataLoader(val_ds, batch_size=eval_batch_size, shuffle=False, sampler=shard, **common)
        self._it, self._next = None, None

    def _to_device(self, x, y):
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def batch(self, step: int):
        if step != self._next or step % self.steps_per_epoch == 0:
            self.sampler.start(step)
            self._it = iter(self.train_loader)
        self._next = step + 1
        if self.decoder is None:
            return self._to_device(*next(self._it))
        return self.decoder.train_batch(next(self._it), self.train_loader.dataset, self.seed, step,
                                        self.global_batch, self.sampler.rank)

    def test_batches(self):
        for b in self.val_loader:
            yield self._to_device(*b) if self.decoder is None else self.decoder.eval_batch(b, self.val_loader.dataset)


__all__ = [
    "ImageNetData", "StepBatchSampler", "DatasetError", "IMAGENET_MEAN", "IMAGENET_STD", "ShardSampler", "build_imagenet_loaders",
    "check_imagenet_root", "decode_path", "train_transform", "val_transform",
]
