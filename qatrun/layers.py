"""Quantized Conv2d / Linear: float latent weights, forward with Q(w), backward with g(w); optionally
quantized inputs.

Each quantized layer holds its weight quantizer as the child module ``wq`` (``qatrun.quantizers``: how
its range ``m`` is set, fixed, learned or recomputed; ``tensor``, the paper's fixed per-tensor range, by
default) and, for every quantized layer but the first, may hold an activation quantizer ``aq`` applied to
its input. ``quantize_model`` swaps the Conv2d/Linear layers of any module in place (the classifier, i.e.
the last Linear, is skipped by default) and returns the quantized layers with their names.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from qatrun import quantizers
from qatrun.estimators import Estimator
from qatrun.quant import Grid, he_uniform_range
from qatrun.quantizers.base import RangeQuantize


def he_uniform_(weight: torch.Tensor, generator: torch.Generator | None = None) -> None:
    """The authors' init: uniform in ``[-m, m]`` with ``m = sqrt(6 / fan_in)``, in place."""
    with torch.no_grad():
        weight.uniform_(-he_uniform_range(weight.shape), he_uniform_range(weight.shape), generator=generator)


def quantize_weight(w: torch.Tensor, m, estimator: Estimator) -> torch.Tensor:
    """``Q(w)`` on a range ``m`` that gets no gradient, backward ``g(w) * upstream`` (``RangeQuantize``)."""
    return RangeQuantize.apply(w, m, estimator)


class QuantMixin:
    """Shared by the quantized layers: the estimator, the weight quantizer ``wq`` and the current range ``m``
    (a float for a fixed per-tensor range, else a detached tensor: 0-dim or ``(out, 1, ...)``)."""

    estimator: Estimator

    def _setup_quant(self, estimator: Estimator, quantizer: str, options: dict):
        self.estimator = estimator
        self.wq = quantizers.create(quantizer, estimator.grid, self.weight, **options)

    @property
    def m(self):
        return self.wq.range(self.weight)

    @property
    def grid(self) -> Grid:
        return self.estimator.grid

    def quantized_weight(self) -> torch.Tensor:
        return self.wq(self.weight, self.estimator)

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        aq = self._modules.get("aq")
        return x if aq is None else aq(x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A checkpoint written before the layers held a weight quantizer kept the fixed range as ``qrange`` on
        # the layer: the range is rebuilt from the seed exactly as it was, so the record is dropped.
        if prefix + "qrange" in state_dict and prefix + "wq.qrange" not in state_dict:
            state_dict.pop(prefix + "qrange")
            state_dict[prefix + "wq.qrange"] = self.wq.qrange.detach().clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self):
        return f"{super().extra_repr()}, estimator={self.estimator}"


class QuantConv2d(QuantMixin, nn.Conv2d):
    def forward(self, x):
        return self._conv_forward(self.quantized_input(x), self.quantized_weight(), self.bias)


class QuantLinear(QuantMixin, nn.Linear):
    def forward(self, x):
        return F.linear(self.quantized_input(x), self.quantized_weight(), self.bias)


_SWAP = {nn.Conv2d: QuantConv2d, nn.Linear: QuantLinear}


def _convert(module: nn.Module, estimator: Estimator, quantizer: str, options: dict) -> nn.Module:
    new_cls = _SWAP[type(module)]
    new = new_cls.__new__(new_cls)
    new.__dict__ = module.__dict__.copy()  # keeps the same Parameters (weight, bias) and hooks
    new._parameters = module._parameters.copy()
    new._buffers = module._buffers.copy()
    new._modules = module._modules.copy()
    new._setup_quant(estimator, quantizer, options)
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
    quantizer: str = "tensor",
    quantizer_options: dict | None = None,
) -> list[tuple[str, QuantMixin]]:
    """Swap every Conv2d/Linear of ``model`` (in place) for its quantized version.

    ``skip`` names modules left float (default: the classifier, see ``default_skip``).
    ``estimator`` carries the grid; ``quantizer`` (``qatrun.quantizers``, with its ``quantizer_options``)
    sets each layer's range from its weight after any re-init; ``scale`` fixes the ``tensor`` quantizer's
    range (default: He-uniform, or the initial max-abs on the symmetric grid).
    ``reinit`` re-draws the quantized latent weights He-uniform in ``[-m, m]`` (authors' protocol).
    Returns ``[(name, layer), ...]`` for the quantized layers, in module order.
    """
    options = dict(quantizer_options or {})
    if scale is not None:
        options["scale"] = scale
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
        try:
            q = _convert(mod, estimator, quantizer, options)
        except ValueError as exc:  # say which layer (an all-zero output channel, say)
            raise ValueError(f"layer {name}: {exc}") from None
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


def quantize_inputs(layers, name: str, bits: int, **options) -> list[str]:
    """Give every quantized layer but the first an activation quantizer ``aq`` on its input (``name``:
    ``qatrun.quantizers`` activation member, ``bits`` 1-8); returns the names of the layers whose inputs are
    quantized. The first layer sees the data itself, which stays float."""
    out = []
    for lname, layer in layers[1:]:
        layer.aq = quantizers.create_activation(name, bits, **options).to(layer.weight.device)
        out.append(lname)
    return out
