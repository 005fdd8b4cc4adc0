"""``dataset=imagefolder`` (and its preset ``dataset=imagenet``): a class-per-folder image tree, read by
``qatrun.data.imagenet``'s loaders."""

from __future__ import annotations

import os
from typing import Optional

from qatrun import checks
from qatrun.data.base import DATASETS, DataShape
from qatrun.data.imagenet import DECODE_PATHS, ImageNetData, check_imagenet_root


class ImageFolderData:
    """Any class-per-folder tree ``root/train/<class>/*`` and ``root/val/<class>/*``
    (``qatrun.data.imagenet``: RandomResizedCrop + flip for training, Resize + CenterCrop for
    evaluation, ImageNet's normalisation); ``root`` is required. ``dataset=imagenet`` is its preset.
    ``decode``: ``cpu`` (PIL in the DataLoader workers), ``device`` (the workers read the bytes, the
    run's device decodes and augments) or ``auto`` (the device on CUDA)."""

    @staticmethod
    def shape(root: Optional[str], batch_size: int, eval_batch_size: int, workers: int, image_size: int,
              resize: int, train_subset: Optional[int], test_subset: Optional[int], decode: str, **_) -> DataShape:
        for key, v in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size),
                       ("image_size", image_size), ("resize", resize)):
            checks.positive_int(f"dataset.{key}", v)
        checks.positive_int("dataset.workers", workers, minimum=0)
        checks.positive_int("dataset.train_subset", train_subset, allow_none=True)
        checks.positive_int("dataset.test_subset", test_subset, allow_none=True)
        checks.one_of("dataset.decode", decode, DECODE_PATHS, suggest=True)
        if root is None:
            raise ValueError("dataset.root is not set: this dataset reads a folder holding train/<class>/ and "
                             "val/<class>/; give dataset.root=DIR")
        return DataShape((3, image_size, image_size), len(check_imagenet_root(os.path.expanduser(root))))

    def __new__(cls, device, seed, world, rank, shape: DataShape, root: Optional[str], batch_size: int,
                eval_batch_size: int, workers: int, image_size: int, resize: int, train_subset: Optional[int],
                test_subset: Optional[int], decode: str):
        data = ImageNetData(root=os.path.expanduser(root), device=device, seed=seed, world=world, rank=rank,
                            batch_size=batch_size, eval_batch_size=eval_batch_size, workers=workers,
                            image_size=image_size, resize=resize, train_subset=train_subset, test_subset=test_subset,
                            decode=decode)
        data.input_shape = shape.input_shape
        return data


DATASETS.register("imagefolder")(ImageFolderData)
DATASETS.register("imagenet", preset_of="imagefolder")(ImageFolderData)  # the same tree reader, ImageNet's values
