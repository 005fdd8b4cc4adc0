"""The weight quantizer base: registries, the forward/backward for a range without a gradient, and
the ``WeightQuantizer`` module every member subclasses.

A weight quantizer owns how a layer's range ``m`` is set (fixed, learned or recomputed), per tensor
(float or 0-dim) or per output channel (``(out, 1, ...)``, see ``ranges``). The forward is always the
hard quantizer ``Q(w) = Grid.quantize(w, m)``; the weight's backward is the estimator's
``g(w) * upstream`` with ``g`` evaluated in the current grid's bin coordinates
(``estimator.grad(w, m, upstream)``), as in arXiv 2405.05171. Pure torch: no I/O, no config.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from qatrun.estimators.base import Estimator
from qatrun.quant import Grid
from qatrun.registry import Registry

# ``grid`` and ``weight`` come from the layer, not from the quantizer's config keys.
QUANTIZERS: Registry = Registry("quantizer", supplied=("grid", "weight"))
# ``bits`` comes from the run; ``signed`` is chosen from the data, never configured.
ACTIVATIONS: Registry = Registry("activation quantizer")

SCOPES = ("tensor", "channel")


def check_scope(scope) -> str:
    if scope not in SCOPES:
        raise ValueError(f"unknown range scope {scope!r}; valid: {', '.join(SCOPES)}")
    return scope


def register(name: str, family: Registry = QUANTIZERS):
    """Class decorator: register a quantizer under ``name`` (also its ``.name``), with its facts
    (``is_learned``, ``is_fixed``, ``in_theorem``) as the registry's meta."""
    def deco(cls):
        cls.name = name
        meta = {"is_learned": cls.is_learned, "is_fixed": cls.is_fixed, "in_theorem": cls.in_theorem}
        return family.register(name, **meta)(cls)

    return deco


def weight_forward(grid: Grid, w: torch.Tensor, m) -> torch.Tensor:
    """``Q(w)`` on ``grid`` with range ``m`` (float, 0-dim, or per channel), pinned to ``w``'s strides
    (a no-op view in eager; under torch.compile it keeps the float weight's layout, so the backward copies
    no activation gradient for a strided weight)."""
    q = grid.quantize(w, m)
    return q.as_strided(w.size(), w.stride()) if q.stride() == w.stride() else q


def weight_backward(estimator: Estimator, w: torch.Tensor, m, upstream: torch.Tensor) -> torch.Tensor:
    """``g(w) * upstream``: the estimator's multiplier in the bin coordinates of the range ``m``."""
    return estimator.grad(w, m, upstream) * upstream


class RangeQuantize(torch.autograd.Function):
    """``Q(w)`` forward, ``g(w) * upstream`` backward; the range gets no gradient (fixed or recomputed)."""

    @staticmethod
    def forward(ctx, w, m, estimator):
        ctx.save_for_backward(w)
        ctx.m, ctx.estimator = m, estimator
        return weight_forward(estimator.grid, w, m)

    @staticmethod
    def backward(ctx, upstream):
        (w,) = ctx.saved_tensors
        return weight_backward(ctx.estimator, w, ctx.m, upstream), None, None


class WeightQuantizer(nn.Module):
    """Base: the range of one weight tensor on ``grid``, built from the initial weight.

    ``range()`` is the current ``m`` (a float, or a detached tensor: 0-dim or ``(out, 1, ...)``);
    ``forward(w, estimator)`` returns ``Q(w)`` with the right backward. Facts, also the registry meta:
    ``is_learned`` (the range is an ``nn.Parameter`` the optimizer trains), ``is_fixed`` (set once at
    creation, never changed) and ``in_theorem`` (the paper's fixed-grid theorem covers the pair).
    """

    name = "base"
    is_learned = False
    is_fixed = True
    in_theorem = True
    per_channel = False

    def __init__(self, grid: Grid):
        super().__init__()
        self.grid = grid

    def range(self, weight: torch.Tensor | None = None):
        raise NotImplementedError

    def forward(self, weight: torch.Tensor, estimator: Estimator) -> torch.Tensor:
        if estimator.grid != self.grid:
            raise ValueError(f"quantizer {self.name!r}: the estimator's grid {estimator.grid} differs from {self.grid}")
        return RangeQuantize.apply(weight, self.range(weight), estimator)

    def extra_repr(self) -> str:
        return f"grid={self.grid.kind}, bits={self.grid.bits}, per_channel={self.per_channel}"
