"""The two runs' models: the estimator run built from its seed, the twin made from it, the optimizer's
parameter groups, and the activation ranges both share.

The twin (arXiv 2405.05171; docs/configuration.md, "pair.twin") is a copy of the estimator run with the
twin's estimator and init (``M_B^{-1}(M_A(w0))`` when warped, each layer on its own range: per channel
where the range is). Its quantized weights train in a parameter group of their own (``param_groups``):
scaling the learning rate, not the gradient, keeps momentum and Adam's moments right. Everything that is
not a quantized weight (biases, float layers, batch-norm, learned ranges and clips) starts identical and
keeps the same lr in both runs.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from qatrun import dist
from qatrun.estimators import Estimator
from qatrun.layers import quant_layers, quantize_inputs, quantize_model, set_estimator
from qatrun.models import build_model, float_names
from qatrun.quantizers import ActivationQuantizer
from qatrun.twin import TwinSpec


def autocast(precision: str, device: torch.device):
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def build_run(model: str, num_classes: int, estimator: Estimator, seed: int, he_init: bool = True,
              input_shape=None, quantize_linear: bool = False, *, quantizer: str = "tensor",
              quantizer_options: dict | None = None, activation: str | None = None,
              activation_options: dict | None = None, **model_kwargs) -> nn.Module:
    """The estimator run's model: built from ``seed`` for ``input_shape`` (C, H, W; default: the model's
    own) inputs, its quantized layers (``qatrun.models.quantized_names``) swapped in with their weight
    ``quantizer``, He-uniform init, and with ``activation`` (an activation quantizer's name) the inputs of
    every quantized layer but the first quantized too."""
    torch.manual_seed(seed)
    net = build_model(model, num_classes, input_shape, **model_kwargs)
    layers = quantize_model(net, estimator, skip=float_names(net, quantize_linear), reinit=he_init,
                            generator=torch.Generator().manual_seed(seed), quantizer=quantizer,
                            quantizer_options=quantizer_options)
    if activation is not None:
        quantize_inputs(layers, activation, **(activation_options or {}))
    return net


def activation_quantizers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, ActivationQuantizer)]


@torch.no_grad()
def calibrate(models: list[nn.Module], x, precision: str) -> None:
    """Take the activation ranges from the first batch once, on the estimator run, and give the twin the same:
    activations are a fixed part of the function both runs share. A forward of the estimator run in training
    mode, with its other buffers (batch-norm statistics) and the RNG restored after, so that nothing else
    changes; under torchrun rank 0's ranges are every rank's."""
    acts = activation_quantizers(models[0])
    if not acts or all(bool(a.calibrated) for a in acts):
        return
    own = {id(b) for a in acts for b in a.buffers()}
    saved = [(b, b.detach().clone()) for b in models[0].buffers() if id(b) not in own]
    rng = torch.get_rng_state(), (torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    with autocast(precision, x.device):
        models[0](x)
    for b, v in saved:
        b.copy_(v)
    torch.set_rng_state(rng[0])
    if rng[1] is not None:
        torch.cuda.set_rng_state_all(rng[1])
    for a in acts:
        dist.broadcast_([*a.parameters(), *a.buffers()])
        a.load_state_dict(a.state_dict())  # the host copies follow the (broadcast) buffers
    for twin in models[1:]:
        for a, b in zip(acts, activation_quantizers(twin)):
            b.load_state_dict(a.state_dict())


def make_twin(model: nn.Module, spec: TwinSpec) -> nn.Module:
    """A copy of the estimator run's model with the twin's estimator and init (``M_B^{-1}(M_A(w0))`` when warped)."""
    twin = copy.deepcopy(model)
    est_layers = dict(quant_layers(model))
    set_estimator(twin, spec.estimator)
    if spec.init == "mirror":
        with torch.no_grad():
            for name, layer in quant_layers(twin):
                src = est_layers[name]
                layer.weight.copy_(spec.to_twin(src.weight, src.m))
    return twin


def param_groups(model: nn.Module, lr: float, quant_factor: float = 1.0) -> list[dict]:
    """Two groups: quantized latent weights (lr * quant_factor) and everything else (lr)."""
    qw = [layer.weight for _, layer in quant_layers(model)]
    ids = {id(p) for p in qw}
    rest = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": qw, "lr": lr * quant_factor, "name": "quantized"}]
    if rest:
        groups.append({"params": rest, "lr": lr, "name": "float"})
    return groups
