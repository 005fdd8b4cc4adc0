"""The model registry: name -> builder of a plain float ``nn.Module``.

Every builder takes ``num_classes`` plus its own keyword options and returns an untrained float
model whose classifier is its last ``nn.Linear`` (what ``qatrun.layers.default_skip`` finds).
Which layers a run quantizes is a property of the model, not of the runner:
``quantized_names(name, model)`` lists them (for every model here: all ``nn.Conv2d``; the paper
keeps the dense layers, classifier included, in float), and ``float_names(name, model)`` lists
the other Conv2d/Linear layers, i.e. the ``skip`` argument of ``qatrun.layers.quantize_model``::

    model = build_model("resnet50", 1000, bn_momentum=0.9)
    layers = quantize_model(model, estimator, skip=float_names("resnet50", model), reinit=True)
    assert [n for n, _ in layers] == quantized_names("resnet50", model)

(Call both on the float model, before ``quantize_model`` swaps the layer types.)
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from qatrun.models.resnet import resnet18, resnet50
from qatrun.models.small_cnn import small_cnn

MODELS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": small_cnn,
    "resnet18": resnet18,
    "resnet50": resnet50,
}

# Input shape (C, H, W) each model was designed for (the data pipeline decides the real one).
INPUT_SHAPES: dict[str, tuple[int, int, int]] = {
    "small_cnn": (1, 28, 28),
    "resnet18": (3, 224, 224),
    "resnet50": (3, 224, 224),
}


def _conv_names(model: nn.Module) -> list[str]:
    return [n for n, mod in model.named_modules() if isinstance(mod, nn.Conv2d)]


# name -> function(model) giving the module names to quantize, in module order.
QUANTIZED: dict[str, Callable[[nn.Module], list[str]]] = {
    "small_cnn": _conv_names,
    "resnet18": _conv_names,
    "resnet50": _conv_names,
}


def model_names() -> list[str]:
    return sorted(MODELS)


def _check_name(name: str) -> None:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(model_names())}")


def build_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build the float model ``name`` (see ``MODELS``) with ``num_classes`` outputs."""
    _check_name(name)
    try:
        return MODELS[name](num_classes=num_classes, **kwargs)
    except TypeError as e:  # an unknown keyword option
        raise ValueError(f"model {name!r}: bad options {sorted(kwargs)}: {e}") from e


def quantized_names(name: str, model: nn.Module) -> list[str]:
    """Names (in module order) of the layers of ``model`` that the paper quantizes."""
    _check_name(name)
    return QUANTIZED[name](model)


def float_names(name: str, model: nn.Module) -> list[str]:
    """The Conv2d/Linear layers that stay float: the ``skip`` list for ``quantize_model``."""
    q = set(quantized_names(name, model))
    return [n for n, mod in model.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear)) and n not in q]


def classifier_name(model: nn.Module) -> str:
    """Module name of the classifier: the last ``nn.Linear`` (float or quantized)."""
    names = [n for n, mod in model.named_modules() if isinstance(mod, nn.Linear)]
    if not names:
        raise ValueError("classifier_name: the model has no nn.Linear layer")
    return names[-1]


__all__ = [
    "MODELS", "INPUT_SHAPES", "QUANTIZED", "build_model", "model_names", "quantized_names",
    "float_names", "classifier_name", "small_cnn", "resnet18", "resnet50",
]
