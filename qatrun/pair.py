"""Build the estimator run and its twin, and the weight-level metrics that compare them.

The twin (PAPER.md, arXiv 2405.05171) is a clipped-STE run that should track the estimator run:
for SGD it starts at ``M(w0)`` and trains its quantized weights at ``alpha * lr`` (a parameter
group of their own: scaling the learning rate, not the gradient, keeps weight decay and momentum
right); for Adam it is plain STE with the same init and lr. Everything that is not a quantized
weight (biases, float layers, batch-norm) starts identical and keeps the same lr in both runs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn

from qatrun import estimators
from qatrun.estimators import Estimator
from qatrun.layers import quant_layers, set_estimator


@dataclass(frozen=True)
class TwinSpec:
    """How the twin differs from the estimator run."""

    mode: str
    estimator: Estimator | None  # None: no twin (pair.twin=none)
    init: str  # "mirror" (w0 -> M(w0)) or "identity"
    lr_factor: float  # multiplies the lr of the twin's quantized weights
    lr_scale: float  # multiplies the twin's whole lr (jitter: 1.01)


# pair.twin values: (twin estimator, init map, use alpha). "auto" asks the optimizer.
TWIN_MODES = {
    "full": ("ste", "mirror", True),  # warped init and lr factor, whatever the optimizer
    "ste": ("ste", "identity", False),  # the no-warp control
    "warp_init": ("ste", "mirror", False),  # ablation: warped init only
    "warp_lr": ("ste", "identity", True),  # ablation: lr factor only
    "self": ("same", "identity", False),  # the estimator against itself (jitter floor)
}
TWIN_CHOICES = ("auto", "none", *TWIN_MODES)


def resolve_twin(mode: str, estimator: Estimator, optimizer_warps: bool, lr_scale: float = 1.0) -> TwinSpec:
    """Turn ``pair.twin`` into a TwinSpec. ``optimizer_warps``: does ``auto`` warp (SGD family) or not (Adam)."""
    if mode not in TWIN_CHOICES:
        raise ValueError(f"unknown pair.twin {mode!r}; valid: {', '.join(TWIN_CHOICES)}")
    if not lr_scale > 0:
        raise ValueError(f"pair.twin_lr_scale must be positive, got {lr_scale}")
    if mode == "none":
        return TwinSpec(mode, None, "identity", 1.0, 1.0)
    if mode == "auto":
        mode_used = "full" if optimizer_warps else "ste"
    else:
        mode_used = mode
    est_name, init, use_alpha = TWIN_MODES[mode_used]
    if (init == "mirror" or use_alpha) and not estimator.in_class:
        raise ValueError(
            f"pair.twin={mode} needs the estimator's mirror map / alpha, but {estimator.name!r} is outside the "
            f"paper's class ({estimator.why_not_in_class}); use pair.twin=ste (plain STE twin) or pair.twin=self"
        )
    twin_est = estimator if est_name == "same" else estimators.create(est_name, bits=estimator.bits, grid=estimator.grid)
    factor = estimator.alpha if use_alpha else 1.0
    return TwinSpec(mode, twin_est, init, factor, float(lr_scale))


def make_twin(model: nn.Module, spec: TwinSpec) -> nn.Module:
    """A copy of the estimator run's model with the twin's estimator and init (M(w0) when warped)."""
    twin = copy.deepcopy(model)
    est_layers = dict(quant_layers(model))
    set_estimator(twin, spec.estimator)
    if spec.init == "mirror":
        with torch.no_grad():
            for name, layer in quant_layers(twin):
                src = est_layers[name]
                layer.weight.copy_(src.estimator.mirror(src.weight, src.m))
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


class WeightComparer:
    """Quantized agreement and alignment between two runs' quantized weights, all on the device.

    ``init_map`` is the map the twin's init went through (``M`` or identity); the alignment error
    is ``sum |map(w_est) - w_twin| / m`` over the twin's distance travelled,
    ``sum_t sum |w_twin(t+1) - w_twin(t)| / m``, which ``accumulate`` adds every step.
    """

    def __init__(self, est_layers, twin_layers, use_mirror: bool):
        self.names = [n for n, _ in est_layers]
        self.est = [l for _, l in est_layers]
        self.twin = [l for _, l in twin_layers]
        self.use_mirror = use_mirror
        dev = self.twin[0].weight.device
        self.inv_m = [1.0 / l.m for l in self.twin]
        self.travelled = torch.zeros((), dtype=torch.float64, device=dev)
        self._prev = [l.weight.detach().clone() for l in self.twin]

    @torch.no_grad()
    def accumulate(self):
        """Add this step's twin movement to the distance travelled (no host sync)."""
        cur = [l.weight.detach() for l in self.twin]
        diffs = torch._foreach_sub(cur, self._prev)
        torch._foreach_abs_(diffs)
        norms = torch._foreach_norm(diffs, 1)
        self.travelled += torch.stack([n.double() * s for n, s in zip(norms, self.inv_m)]).sum()
        torch._foreach_copy_(self._prev, cur)

    def mapped(self, layer) -> torch.Tensor:
        w = layer.weight.detach()
        return layer.estimator.mirror(w, layer.m) if self.use_mirror else w

    @torch.no_grad()
    def compute(self) -> dict[str, torch.Tensor]:
        """0-dim tensors: overall and per-layer agreement, alignment distance and error."""
        out, agree, total, dist = {}, 0, 0, 0
        for name, le, lt, inv_m in zip(self.names, self.est, self.twin, self.inv_m):
            g = le.grid
            same = (g.level_index(le.weight, le.m) == g.level_index(lt.weight, lt.m)).sum()
            d = (self.mapped(le).double() - lt.weight.double()).abs().sum() * inv_m
            out[f"layers/{name}/quantized_agreement"] = same / le.weight.numel()
            agree, total, dist = agree + same, total + le.weight.numel(), dist + d
        out["pair/quantized_agreement"] = agree / total
        out["pair/alignment_distance"] = dist
        out["pair/distance_travelled"] = self.travelled.clone()
        out["pair/alignment_error"] = torch.where(self.travelled > 0, dist / self.travelled, torch.zeros_like(dist))
        return out

    @torch.no_grad()
    def residuals(self) -> dict[str, torch.Tensor]:
        """Per layer ``map(w_est) - w_twin`` (for histograms)."""
        return {n: (self.mapped(le) - lt.weight.detach()).flatten() for n, le, lt in zip(self.names, self.est, self.twin)}

    def state_dict(self):
        return {"travelled": self.travelled.clone(), "prev": [p.clone() for p in self._prev]}

    def load_state_dict(self, state):
        self.travelled.copy_(state["travelled"])
        for p, s in zip(self._prev, state["prev"]):
            p.copy_(s)
