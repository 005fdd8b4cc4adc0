"""ResNet-18 / ResNet-50 (v1.5: stride on the 3x3 conv, torchvision's layout), float, untrained.

Batch norm follows the authors' setting (arXiv 2405.05171: batch-norm momentum 0.9, eps 1e-5), given in
the Flax/Keras convention, where momentum is the weight of the *old* running statistic:

    Flax:    running = bn_momentum * running + (1 - bn_momentum) * batch
    PyTorch: running = (1 - momentum) * running + momentum * batch

so ``torch_momentum = 1 - bn_momentum`` (Flax 0.9 is PyTorch 0.1, PyTorch's default).

All convolutions (53 in ResNet-50, 20 in ResNet-18, downsample 1x1 convs included) are what the
runner quantizes; the classifier ``fc`` stays float.
"""

from __future__ import annotations

from typing import Tuple

import torch.nn as nn
import torchvision

from qatrun import checks
from qatrun.models.base import MODELS

BN_EPS = 1e-5


def to_torch_momentum(bn_momentum: float) -> float:
    """Flax/Keras batch-norm momentum (weight of the old running value) -> PyTorch's."""
    checks.in_range("bn_momentum (the Flax/Keras momentum: weight of the old running statistic)", bn_momentum, 0, 1)
    return 1.0 - float(bn_momentum)


def set_batchnorm(model: nn.Module, bn_momentum: float = 0.9, eps: float = BN_EPS) -> int:
    """Set every BatchNorm's eps and momentum (Flax convention, converted); returns the count."""
    momentum = to_torch_momentum(bn_momentum)
    n = 0
    for mod in model.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.eps = eps
            mod.momentum = momentum
            n += 1
    return n


STEMS = ("auto", "imagenet", "small")
SMALL_SIDE = 64  # stem=auto: images smaller than this get the small stem


def _build(arch: str, num_classes: int, input_shape, bn_momentum: float, zero_init_residual: bool,
           stem: str) -> nn.Module:
    checks.positive_int(f"{arch}: num_classes", num_classes)
    checks.one_of("model.stem", stem, STEMS)
    to_torch_momentum(bn_momentum)  # validate before building
    in_channels, height, width = (int(s) for s in input_shape)
    model = getattr(torchvision.models, arch)(
        weights=None, num_classes=num_classes, zero_init_residual=bool(zero_init_residual)
    )
    if stem == "small" or (stem == "auto" and min(height, width) < SMALL_SIDE):
        # small images (MNIST, CIFAR): a 3x3 stride-1 stem and no max-pool, as usual for 32x32 ResNets
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    set_batchnorm(model, bn_momentum)
    return model


@MODELS.register("resnet50")
def resnet50(num_classes: int = 1000, input_shape: Tuple[int, int, int] = (3, 224, 224), bn_momentum: float = 0.9,
             zero_init_residual: bool = False, stem: str = "auto") -> nn.Module:
    """torchvision ResNet-50 (v1.5), ``weights=None``; ``bn_momentum`` in the Flax convention; ``stem``:
    ``imagenet`` (7x7 stride 2 + max-pool), ``small`` (3x3 stride 1, no pool) or ``auto`` (small below 64 px)."""
    return _build("resnet50", num_classes, input_shape, bn_momentum, zero_init_residual, stem)


@MODELS.register("resnet18")
def resnet18(num_classes: int = 1000, input_shape: Tuple[int, int, int] = (3, 224, 224), bn_momentum: float = 0.9,
             zero_init_residual: bool = False, stem: str = "auto") -> nn.Module:
    """torchvision ResNet-18, ``weights=None``; options as ``resnet50``."""
    return _build("resnet18", num_classes, input_shape, bn_momentum, zero_init_residual, stem)
