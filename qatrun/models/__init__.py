"""The model registry: name -> builder of a plain float ``nn.Module``, and the one quantization rule.

A model is one file here: its builder, registered where it is defined (``@MODELS.register("name")``,
``qatrun.models.base``), plus ``configs/model/<name>.yaml`` for its options; the package imports its
modules by name (``qatrun.registry.discover``), so no import line elsewhere names it.

Every builder takes ``num_classes`` and ``input_shape`` ``(channels, height, width)`` (both from the
data: the run passes what its dataset states) plus its own keyword options, the keys of its YAML file
in ``configs/model/``, and returns an untrained float model whose classifier is its last ``nn.Linear``.

Which layers a run quantizes is one rule for every model (``quantized_names``): every ``nn.Conv2d``,
and with ``quantize_linear`` every other ``nn.Linear``; the classifier stays float, as in the paper,
where the dense layers are kept in float. ``float_names`` is the complement, the ``skip`` argument of
``qatrun.layers.quantize_model``::

    model = build_model("resnet50", 1000, bn_momentum=0.9)
    layers = quantize_model(model, estimator, skip=float_names(model), reinit=True)
    assert [n for n, _ in layers] == quantized_names(model)

(Call both on the float model, before ``quantize_model`` swaps the layer types.) ``check_model``
builds a model on the meta device and runs one forward pass of the data's shape: preflight's way of
refusing a model that cannot take the data, in one line, before anything is created.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from qatrun.models.base import MODELS, SUPPLIED
from qatrun.registry import discover


def model_names() -> list[str]:
    return MODELS.names()


def build_model(name: str, num_classes: int, input_shape=None, **kwargs) -> nn.Module:
    """Build the float model ``name`` with ``num_classes`` outputs for ``input_shape`` (C, H, W) inputs
    (default: the builder's own) and its own keyword options."""
    if input_shape is not None:
        kwargs["input_shape"] = tuple(int(s) for s in input_shape)
    return MODELS.build(name, num_classes=num_classes, **kwargs)


def classifier_name(model: nn.Module) -> str:
    """Module name of the classifier: the last ``nn.Linear`` (float or quantized)."""
    names = [n for n, mod in model.named_modules() if isinstance(mod, nn.Linear)]
    if not names:
        last = next((type(m).__name__ for _, m in reversed(list(model.named_modules())) if not list(m.children())), "?")
        raise ValueError(f"the model has no nn.Linear classifier (its last layer is a {last}); qatrun keeps the "
                         "classifier, the last nn.Linear, in float: end the model with an nn.Linear")
    return names[-1]


def quantized_names(model: nn.Module, quantize_linear: bool = False) -> list[str]:
    """The layers a run quantizes, in module order: every Conv2d, and with ``quantize_linear`` every
    Linear but the classifier."""
    head = classifier_name(model)
    kinds = (nn.Conv2d, nn.Linear) if quantize_linear else (nn.Conv2d,)
    return [n for n, mod in model.named_modules() if type(mod) in kinds and n != head]


def float_names(model: nn.Module, quantize_linear: bool = False) -> list[str]:
    """The Conv2d/Linear layers that stay float: the ``skip`` list for ``quantize_model``."""
    q = set(quantized_names(model, quantize_linear))
    return [n for n, mod in model.named_modules() if type(mod) in (nn.Conv2d, nn.Linear) and n not in q]


def check_model(name: str, options: dict, input_shape, num_classes: int, quantize_linear: bool = False) -> list[str]:
    """Build ``name`` on the meta device (no memory, no time) and run one forward pass of a batch shaped
    like the data: a model that cannot take it, or has no classifier, or no layer to quantize, is a
    ``ValueError`` in one line. Returns the names of the layers a run would quantize."""
    shape = "x".join(map(str, input_shape))
    label = f"model={name}" + (f" model.arch={options['arch']}" if "arch" in options else "")

    def forward(device):  # a build error (unknown arch, bad option) is the user's: it propagates
        with torch.device(device), torch.no_grad():
            model = build_model(name, num_classes, input_shape, **options)
            model.eval()
            try:
                return model, model(torch.empty(2, *input_shape).uniform_()), None
            except Exception as exc:
                return model, None, exc

    model, out, err = forward("meta")
    if err is not None:  # a user's model may do what the meta device cannot (.item(), a numpy round trip)
        model, out, err = forward("cpu")
    if err is not None:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{label} cannot take this dataset's {shape} inputs ({msg}); choose another model or "
                         "larger images (dataset.image_size, where the dataset has it)")
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{label} must return logits shaped (batch, {num_classes}) for this dataset, got {got}")
    names = quantized_names(model, quantize_linear)
    if not names:
        raise ValueError(f"{label} has no Conv2d{'/Linear' if quantize_linear else ''} layer to quantize besides "
                         "its classifier" + ("" if quantize_linear else "; try model.quantize_linear=true"))
    return names


discover(__name__)  # every module here registers its own builders: a new model is one new file

__all__ = ["MODELS", "SUPPLIED", "build_model", "check_model", "model_names", "quantized_names", "float_names",
           "classifier_name"]
