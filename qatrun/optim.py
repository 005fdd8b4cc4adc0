"""Optimizers (one registry) and the authors' schedule: linear warm-up from 0, then cosine to 0."""

from __future__ import annotations

import math

import torch

# Config keys that describe how qatrun uses the optimizer rather than the optimizer itself.
_NOT_KWARGS = ("name", "lr", "twin_warp")


def _sgd(groups, lr, momentum, nesterov, weight_decay):
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


def _adam(groups, lr, betas, eps, weight_decay):
    return torch.optim.Adam(groups, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


def _adamw(groups, lr, betas, eps, weight_decay):
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


OPTIMIZERS = {"sgd": _sgd, "adam": _adam, "adamw": _adamw}


def build_optimizer(opt_cfg, groups) -> torch.optim.Optimizer:
    """``opt_cfg``: the optimizer config group (name, lr, and the optimizer's own keys)."""
    if opt_cfg.name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {opt_cfg.name!r}; valid optimizers: {', '.join(sorted(OPTIMIZERS))}")
    if not (opt_cfg.lr > 0 and math.isfinite(opt_cfg.lr)):
        raise ValueError(f"optimizer.lr must be a positive number, got {opt_cfg.lr}")
    if opt_cfg.weight_decay < 0:
        raise ValueError(f"optimizer.weight_decay must be >= 0, got {opt_cfg.weight_decay}")
    kwargs = {k: v for k, v in opt_cfg.items() if k not in _NOT_KWARGS}
    return OPTIMIZERS[opt_cfg.name](groups, lr=opt_cfg.lr, **kwargs)


def warmup_cosine(step: int, total: int, warmup_frac: float) -> float:
    """lr multiplier at ``step``: 0 -> 1 linearly over ``warmup_frac * total`` steps, then cosine to 0."""
    warm = int(round(warmup_frac * total))
    if step < warm:
        return step / warm
    if total <= warm:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(step - warm, total - warm) / (total - warm)))


def build_scheduler(optimizer, total_steps: int, warmup_frac: float):
    if not 0 <= warmup_frac < 1:
        raise ValueError(f"trainer.warmup_frac must be in [0, 1), got {warmup_frac}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, total_steps, warmup_frac))
