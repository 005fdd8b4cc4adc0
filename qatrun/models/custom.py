"""The user's own model (``model=custom model.target=pkg.module:build``)."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch.nn as nn

from qatrun.models.base import MODELS
from qatrun.userimport import build_with


@MODELS.register("custom")
def custom_model(num_classes: int = 10, input_shape: Tuple[int, int, int] = (1, 28, 28), target: str | None = None,
                 options: Dict[str, Any] | None = None) -> nn.Module:
    """The user's own builder ``target`` (``pkg.module:build``), called with whichever of ``num_classes``,
    ``input_shape``, ``in_channels`` and ``image_size`` it accepts, plus ``options``."""
    if not target:
        raise ValueError("model=custom needs model.target=pkg.module:build, a function returning your nn.Module")
    given = {"num_classes": num_classes, "input_shape": tuple(input_shape), "in_channels": input_shape[0],
             "image_size": input_shape[1]}
    model = build_with(target, "model.target", given, options)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model.target={target} must return an nn.Module, got {type(model).__name__}")
    return model
