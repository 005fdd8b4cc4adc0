"""Deterministic stand-ins for the pooling layers whose CUDA backward has no deterministic kernel.

With ``deterministic=true`` (``torch.use_deterministic_algorithms(True)``) PyTorch raises a
``RuntimeError`` at the first backward through ``nn.AdaptiveAvgPool2d`` on a CUDA tensor
(``adaptive_avg_pool2d_backward_cuda``, listed in that function's documentation): every torchvision
ResNet ends with one, so a deterministic ResNet run on a GPU could not take a step.
``deterministic_pooling(model)`` swaps each such layer for ``DeterministicAdaptiveAvgPool2d``, the
same average computed with ops whose backward is deterministic: the mean over height and width for
a 1x1 output, ``avg_pool2d`` with kernel = stride = input / output where the sizes divide, and the
original op otherwise (torch's own error then names it). The forward values are those of
``adaptive_avg_pool2d`` up to float rounding (checked in ``tests/test_models.py``). Training calls it
only for deterministic runs on CUDA, so CPU runs compute exactly what they did before.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _pair(size) -> tuple:
    return tuple(size) if isinstance(size, (tuple, list)) else (size, size)


class DeterministicAdaptiveAvgPool2d(nn.Module):
    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        oh, ow = (o if o is not None else d for o, d in zip(_pair(self.output_size), (h, w)))
        if (oh, ow) == (1, 1):
            return x.mean((-2, -1), keepdim=True)
        if h % oh == 0 and w % ow == 0:
            return F.avg_pool2d(x, (h // oh, w // ow))
        return F.adaptive_avg_pool2d(x, (oh, ow))

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


def deterministic_pooling(model: nn.Module) -> list[str]:
    """Swap every ``nn.AdaptiveAvgPool2d`` of ``model`` in place; returns the swapped modules' names."""
    swapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.AdaptiveAvgPool2d:
                setattr(module, child_name, DeterministicAdaptiveAvgPool2d(child.output_size))
                swapped.append(f"{name}.{child_name}" if name else child_name)
    return swapped
