"""Optimizers (one registry) and the authors' schedule: linear warm-up from 0, then cosine to 0.

Each optimizer is registered with ``warps``: whether the theorem (arXiv 2405.05171) asks for a
warped twin under it. For SGD (with momentum and weight decay: linear in the gradient) an
estimator ``g`` is the STE at ``alpha * lr`` from ``M(w0)``; Adam's per-weight normalization
cancels ``g``, so its twin is the plain STE. ``pair.twin=auto`` reads this.
"""

from __future__ import annotations

import math

import torch

from qatrun import checks
from qatrun.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")


@OPTIMIZERS.register("sgd", warps=True)
def sgd(groups, lr, momentum, nesterov, weight_decay):
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


@OPTIMIZERS.register("adam", warps=False)
def adam(groups, lr, betas, eps, weight_decay):
    return torch.optim.Adam(groups, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


@OPTIMIZERS.register("adamw", warps=False)
def adamw(groups, lr, betas, eps, weight_decay):
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


def warps(name: str) -> bool:
    """Does ``pair.twin=auto`` warp the twin (``M(w0)``, ``alpha * lr``) under this optimizer?"""
    return OPTIMIZERS.meta(name)["warps"]


def build_optimizer(name: str, groups, lr: float, **params) -> torch.optim.Optimizer:
    """``name``'s optimizer over ``groups`` at peak ``lr``; ``params``: its own options by name."""
    OPTIMIZERS.get(name)
    checks.positive("optimizer.lr", lr)
    checks.in_range("optimizer.weight_decay", params.get("weight_decay", 0.0), 0, math.inf)
    return OPTIMIZERS.build(name, groups, lr=lr, **params)


def warmup_cosine(step: int, total: int, warmup_frac: float) -> float:
    """lr multiplier at ``step``: 0 -> 1 linearly over ``warmup_frac * total`` steps, then cosine to 0."""
    warm = int(round(warmup_frac * total))
    if step < warm:
        return step / warm
    if total <= warm:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(step - warm, total - warm) / (total - warm)))


def build_scheduler(optimizer, total_steps: int, warmup_frac: float):
    checks.in_range("trainer.warmup_frac", warmup_frac, 0, 1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, total_steps, warmup_frac))
