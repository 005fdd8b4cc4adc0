"""Any torchvision classification model (``model=torchvision model.arch=NAME``), untrained, its first
convolution adapted to the data's channels."""

from __future__ import annotations

import difflib
from typing import Tuple

import torch.nn as nn

from qatrun.models.base import MODELS

# torchvision builders that need options to return plain logits (no auxiliary heads in training mode).
_TV_EXTRA = {"googlenet": {"aux_logits": False, "init_weights": True},
             "inception_v3": {"aux_logits": False, "init_weights": True}}


def torchvision_archs() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _first_conv_in(model: nn.Module, in_channels: int) -> None:
    """Give the model's first Conv2d ``in_channels`` inputs (a new, untrained layer of the same kind)."""
    name, conv = next(((n, m) for n, m in model.named_modules() if type(m) is nn.Conv2d), (None, None))
    if conv is None or conv.in_channels == in_channels:
        return
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups if conv.groups == 1 else in_channels, conv.bias is not None, conv.padding_mode,
                    device=conv.weight.device)
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


@MODELS.register("torchvision")
def torchvision_model(num_classes: int = 1000, input_shape: Tuple[int, int, int] = (3, 224, 224),
                      arch: str = "resnet18") -> nn.Module:
    """Any torchvision classification builder, untrained (``weights=None``), its first convolution
    adapted to the data's channels (ViTs also to its image size)."""
    import torchvision

    archs = torchvision_archs()
    if arch not in archs:
        near = difflib.get_close_matches(str(arch).lower(), archs, n=3)
        hint = f"did you mean {', '.join(near)}? " if near else ""
        raise ValueError(f"unknown model.arch {arch!r}; {hint}valid: any torchvision classification model "
                         f"({len(archs)}: {', '.join(archs[:6])}, ...; torchvision.models.list_models())")
    extra = dict(_TV_EXTRA.get(arch, {}))
    if arch.startswith("vit_"):
        extra["image_size"] = input_shape[1]
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **extra)
    _first_conv_in(model, input_shape[0])
    return model
