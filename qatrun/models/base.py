"""The model registry, apart from the package so that each builder's module can register itself without
importing the package it is part of: ``@MODELS.register("name")`` above a builder of a float ``nn.Module``."""

from __future__ import annotations

from qatrun.registry import Registry

# The builder parameters the run fills in from the data (not config keys).
SUPPLIED = ("num_classes", "input_shape")
MODELS: Registry = Registry("model", supplied=SUPPLIED)
