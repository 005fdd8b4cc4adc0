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

import torch.nn as nn
import torchvision

from qatrun import checks

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


def _build(arch: str, num_classes: int, bn_momentum: float, zero_init_residual: bool) -> nn.Module:
    checks.positive_int(f"{arch}: num_classes", num_classes)
    to_torch_momentum(bn_momentum)  # validate before building
    model = getattr(torchvision.models, arch)(
        weights=None, num_classes=num_classes, zero_init_residual=bool(zero_init_residual)
    )
    set_batchnorm(model, bn_momentum)
    return model


def resnet50(num_classes: int = 1000, bn_momentum: float = 0.9, zero_init_residual: bool = False) -> nn.Module:
    """torchvision ResNet-50 (v1.5), ``weights=None``; ``bn_momentum`` in the Flax convention."""
    return _build("resnet50", num_classes, bn_momentum, zero_init_residual)


def resnet18(num_classes: int = 1000, bn_momentum: float = 0.9, zero_init_residual: bool = False) -> nn.Module:
    """torchvision ResNet-18, ``weights=None``; ``bn_momentum`` in the Flax convention."""
    return _build("resnet18", num_classes, bn_momentum, zero_init_residual)
