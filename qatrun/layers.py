"""Quantized Conv2d / Linear: float latent weights, forward with Q(w), backward with g(w).

``QuantizeWeight`` is a thin autograd wrapper over the pure functions of ``quant`` and
``estimators``: forward ``Q(w)`` (grid math in fp32), backward ``g(w) * upstream``.
``quantize_model`` swaps the Conv2d/Linear layers of any module in place (the classifier, i.e.
the last Linear, is skipped by default) and returns the quantized layers with their names.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from qatrun.estimators import Estimator
from qatrun.quant import Grid, he_uniform_range


def he_uniform_(weight: torch.Tensor, generator: torch.Generator | None = None) -> None:
    """The authors' init: uniform in ``[-m, m]`` with ``m = sqrt(6 / fan_in)``, in place."""
    with torch.no_grad():
        weight.uniform_(-he_uniform_range(weight.shape), he_uniform_range(weight.shape), generator=generator)


class QuantizeWeight(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, m, estimator):
        ctx.save_for_backward(w)
        ctx.m = m
        ctx.estimator = estimator
        q = estimator.grid.quantize(w, m)
        # Q(w) pinned to w's own strides (a no-op view in eager, where they are already equal): otherwise
        # torch.compile lays this computed weight out as it likes, which the float weight (a graph input)
        # never is. On the CPU the first conv of the MNIST CNN (one input channel) then copied its
        # activation gradient in every backward (~50 ms per step at batch 600, measured).
        return q.as_strided(w.size(), w.stride()) if q.stride() == w.stride() else q

    @staticmethod
    def backward(ctx, upstream):
        (w,) = ctx.saved_tensors
        g = ctx.estimator.grad(w, ctx.m, upstream)
        return g * upstream, None, None


def quantize_weight(w: torch.Tensor, m: float, estimator: Estimator) -> torch.Tensor:
    return QuantizeWeight.apply(w, m, estimator)


class QuantMixin:
    """Shared by the quantized layers: the fixed range ``m`` (a float, also kept as a buffer)."""

    estimator: Estimator

    def _setup_quant(self, estimator: Estimator, scale: float | None):
        self.estimator = estimator
        self.m = estimator.grid.init_range(self.weight, scale)
        # Saved with the state dict so a checkpoint records the grid it was trained on.
        # On the weight's device: quantize_model applied to a model already on the GPU (or on meta) keeps it there.
        self.register_buffer("qrange", torch.tensor(self.m, dtype=torch.float32, device=self.weight.device),
                             persistent=True)

    @property
    def grid(self) -> Grid:
        return self.estimator.grid

    def quantized_weight(self) -> torch.Tensor:
        return quantize_weight(self.weight, self.m, self.estimator)

    def extra_repr(self):
        return f"{super().extra_repr()}, estimator={self.estimator}, m={self.m:.4g}"


class QuantConv2d(QuantMixin, nn.Conv2d):
    def forward(self, x):
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class QuantLinear(QuantMixin, nn.Linear):
    def forward(self, x):
        return F.linear(x, self.quantized_weight(), self.bias)


_SWAP = {nn.Conv2d: QuantConv2d, nn.Linear: QuantLinear}


def _convert(module: nn.Module, estimator: Estimator, scale: float | None) -> nn.Module:
    new_cls = _SWAP[type(module)]
    new = new_cls.__new__(new_cls)
    new.__dict__ = module.__dict__.copy()  # keeps the same Parameters (weight, bias) and hooks
    new._parameters = module._parameters.copy()
    new._buffers = module._buffers.copy()
    new._modules = module._modules.copy()
    new._setup_quant(estimator, scale)
    return new


def default_skip(model: nn.Module) -> list[str]:
    """The classifier: the last ``nn.Linear`` in module order (none if the model has no Linear)."""
    linears = [n for n, mod in model.named_modules() if type(mod) is nn.Linear]
    return linears[-1:]


def quantize_model(
    model: nn.Module,
    estimator: Estimator,
    skip: list[str] | None = None,
    scale: float | None = None,
    reinit: bool = False,
    generator: torch.Generator | None = None,
) -> list[tuple[str, QuantMixin]]:
    """Swap every Conv2d/Linear of ``model`` (in place) for its quantized version.

    ``skip`` names modules left float (default: the classifier, see ``default_skip``).
    ``estimator`` carries the grid; ``scale`` fixes the symmetric grid's range (default max-abs).
    ``reinit`` re-draws the quantized latent weights He-uniform in ``[-m, m]`` (authors' protocol).
    Returns ``[(name, layer), ...]`` for the quantized layers, in module order.
    """
    skip = default_skip(model) if skip is None else list(skip)
    names = {n for n, _ in model.named_modules()}
    unknown = [s for s in skip if s not in names]
    if unknown:
        raise ValueError(f"quantize_model: skip names {unknown} are not modules of the model")
    out = []
    for name, mod in list(model.named_modules()):
        if type(mod) not in _SWAP or name in skip:
            continue
        if reinit:
            he_uniform_(mod.weight, generator)
        q = _convert(mod, estimator, scale)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, q)
        out.append((name, q))
    if not out:
        raise ValueError("quantize_model: the model has no Conv2d/Linear layer to quantize (after skip)")
    return out


def quant_layers(model: nn.Module) -> list[tuple[str, QuantMixin]]:
    """The quantized layers of a model, with their names, in module order."""
    return [(n, mod) for n, mod in model.named_modules() if isinstance(mod, QuantMixin)]


def set_estimator(model: nn.Module, estimator: Estimator) -> None:
    """Give every quantized layer a new estimator on the same grid (used to make the STE twin)."""
    for _, layer in quant_layers(model):
        if layer.estimator.grid != estimator.grid:
            raise ValueError("set_estimator: the new estimator's grid differs from the layer's")
        layer.estimator = estimator
