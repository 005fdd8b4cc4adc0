"""Datasets (one registry): each entry is built from its config group's keys, by name.

A dataset is one file here: a class registered where it is defined (``@DATASETS.register("name")``,
``qatrun.data.base``) plus ``configs/dataset/<name>.yaml`` for its options; the package imports its modules
by name (``qatrun.registry.discover``), so no import line elsewhere names it. The class's keyword
parameters are its options; its static ``shape(**options)`` checks them and states the shape before any
data is read: ``describe(name, **options)`` returns that ``DataShape`` (``input_shape`` ``(channels,
height, width)`` and ``num_classes``), which the run builds its model from and preflight checks the
model against. Interface of a built dataset: ``num_classes``, ``input_shape``, ``device``,
``steps_per_epoch``, ``batch(step) -> (x, y)`` on the device (the batch is a function of the step, so
both runs and a resumed run see the same data; under torchrun this rank's equal slice of the global
batch), and ``test_batches()`` yielding ``(x, y)``. Every builder takes ``device, seed, world, rank,
shape`` (``qatrun.data.base.SUPPLIED``) plus the keys of its YAML file (``name`` selects the entry).
"""

from __future__ import annotations

from qatrun.data.base import DATASETS, DataShape
from qatrun.data.mnist import DatasetError
from qatrun.registry import discover


def describe(name: str, **options) -> DataShape:
    """What dataset ``name`` with these options feeds the model, without reading the data (errors: one line)."""
    cls = DATASETS.get(name)
    fields = DATASETS.options(name)
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ValueError(f"dataset {name!r}: unknown options {', '.join(unknown)}; it takes {', '.join(fields)}")
    return cls.shape(**options)


def build_data(name: str, device, seed: int = 0, world: int = 1, rank: int = 0, **options):
    """The dataset ``name`` with its config group's ``options``, checked by its ``shape`` first; with
    ``world > 1`` each rank gets its share of every global batch."""
    shape = describe(name, **options)
    return DATASETS.build(name, device=device, seed=seed, world=world, rank=rank, shape=shape, **options)


discover(__name__)  # every module here registers its own datasets: a new dataset is one new file

__all__ = ["DATASETS", "DataShape", "DatasetError", "build_data", "describe"]
