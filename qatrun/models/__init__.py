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


import torch.nn as nn

from qatrun.models.resnet import resnet18, resnet50
from qatrun.models.small_cnn import small_cnn
from qatrun.registry import Registry


def _conv_names(model: nn.Module) -> list[str]:
    return [n for n, mod in model.named_modules() if isinstance(mod, nn.Conv2d)]


# name -> builder; meta: the input shape (C, H, W) the model was designed for (the data pipeline
# decides the real one) and ``quantized(model)``, the module names to quantize, in module order.
MODELS: Registry = Registry("model")
MODELS.register("small_cnn", input_shape=(1, 28, 28), quantized=_conv_names)(small_cnn)
MODELS.register("resnet18", input_shape=(3, 224, 224), quantized=_conv_names)(resnet18)
MODELS.register("resnet50", input_shape=(3, 224, 224), quantized=_conv_names)(resnet50)


def model_names() -> list[str]:
    return MODELS.names()


def input_shape(name: str) -> tuple[int, int, int]:
    return MODELS.meta(name)["input_shape"]


def build_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build the float model ``name`` with ``num_classes`` outputs and its own keyword options."""
    return MODELS.build(name, num_classes=num_classes, **kwargs)


def quantized_names(name: str, model: nn.Module) -> list[str]:
    """Names (in module order) of the layers of ``model`` that the paper quantizes."""
    return MODELS.meta(name)["quantized"](model)


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
    "MODELS", "build_model", "input_shape", "model_names", "quantized_names",
    "float_names", "classifier_name", "small_cnn", "resnet18", "resnet50",
]
