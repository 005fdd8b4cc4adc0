"""Optimizers (one registry) and the authors' schedule: linear warm-up from 0, then cosine to 0.

Each optimizer is registered with its ``twin_rule``, what the theorem (arXiv 2405.05171) predicts the
estimator's twin to be under it, and a one-line ``why`` (``qatrun --help`` and the docs show both):

* ``warp``: the update is linear in the gradient, so an estimator ``g`` is the STE at ``alpha * lr``
  from ``M(w0)`` (SGD, momentum, Nesterov);
* ``identity``: per-coordinate normalisation cancels the slowly varying factor ``g(w)`` (when ``eps``
  is small against the gradient's scale), so the twin is the plain STE from ``w0`` at the same lr;
* ``exact``: the update uses only the gradient's sign, which ``g > 0`` never changes: the plain STE
  twin should match step for step.

``pair.twin=auto`` reads the rule. Adding an optimizer is one builder here (its signature, with type
hints, is the schema of its YAML file) plus ``configs/optimizer/<name>.yaml`` with its values.
"""

from __future__ import annotations

import math
from typing import List

import torch

from qatrun import checks
from qatrun.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer", supplied=("groups",))
RULES = ("warp", "identity", "exact")
LINEAR = "the update is linear in the gradient: g is the STE at alpha x lr from M(w0)"
NORMALISED = "per-coordinate normalisation cancels the slowly varying g(w): the plain STE at the same lr"
SIGN = "the update uses only the gradient's sign, which g > 0 never changes: the plain STE, step for step"


@OPTIMIZERS.register("sgd", twin_rule="warp", why=LINEAR)
def sgd(groups, lr: float, momentum: float, nesterov: bool, weight_decay: float):
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


def _moments(cls):
    """The builder of an Adam-family optimizer ``cls`` (betas, eps, weight decay: its YAML's keys)."""
    def build(groups, lr: float, betas: List[float], eps: float, weight_decay: float):
        return cls(groups, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)

    build.__name__ = build.__qualname__ = cls.__name__.lower()
    return build


for _name, _cls in (("adam", torch.optim.Adam), ("adamax", torch.optim.Adamax), ("nadam", torch.optim.NAdam),
                    ("radam", torch.optim.RAdam)):
    OPTIMIZERS.register(_name, twin_rule="identity", why=NORMALISED)(_moments(_cls))
OPTIMIZERS.register("adamw", twin_rule="identity",
                    why=NORMALISED + " (decoupled decay acts on both runs alike)")(_moments(torch.optim.AdamW))


@OPTIMIZERS.register("rmsprop", twin_rule="identity", why=NORMALISED)
def rmsprop(groups, lr: float, alpha: float, eps: float, momentum: float, centered: bool, weight_decay: float):
    return torch.optim.RMSprop(groups, lr=lr, alpha=alpha, eps=eps, momentum=momentum, centered=centered,
                               weight_decay=weight_decay)


@OPTIMIZERS.register("adagrad", twin_rule="identity", why=NORMALISED)
def adagrad(groups, lr: float, lr_decay: float, eps: float, weight_decay: float):
    return torch.optim.Adagrad(groups, lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay)


@OPTIMIZERS.register("adadelta", twin_rule="identity", why=NORMALISED)
def adadelta(groups, lr: float, rho: float, eps: float, weight_decay: float):
    return torch.optim.Adadelta(groups, lr=lr, rho=rho, eps=eps, weight_decay=weight_decay)


# ``lr_at_first_step``: the optimizer reads the lr once, at its first step (Rprop's initial step size), where the
# warm-up has it at 0: with trainer.warmup_frac > 0 optimizer.lr has no effect (qatrun.spec says so at start).
@OPTIMIZERS.register("rprop", twin_rule="exact", why=SIGN, lr_at_first_step=True)
def rprop(groups, lr: float, etas: List[float], step_sizes: List[float]):
    return torch.optim.Rprop(groups, lr=lr, etas=tuple(etas), step_sizes=tuple(step_sizes))


class SignSGD(torch.optim.Optimizer):
    """signSGD (Bernstein et al., 2018): ``w -= lr * sign(grad)``, no state."""

    def __init__(self, params, lr: float):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(torch.sign(p.grad), alpha=-group["lr"])


@OPTIMIZERS.register("signsgd", twin_rule="exact", why=SIGN)
def signsgd(groups, lr: float):
    return SignSGD(groups, lr=lr)


def twin_rule(name: str) -> str:
    """``warp``, ``identity`` or ``exact``: the twin the theorem predicts under this optimizer."""
    return OPTIMIZERS.meta(name)["twin_rule"]


def warps(name: str) -> bool:
    """Does ``pair.twin=auto`` warp the twin (``M(w0)``, ``alpha * lr``) under this optimizer?"""
    return twin_rule(name) == "warp"


def build_optimizer(name: str, groups, lr: float, **params) -> torch.optim.Optimizer:
    """``name``'s optimizer over ``groups`` at peak ``lr``; ``params``: its own options by name."""
    OPTIMIZERS.get(name)
    checks.positive("optimizer.lr", lr)
    if "weight_decay" in params:
        checks.in_range("optimizer.weight_decay", params["weight_decay"], 0, math.inf)
    try:
        return OPTIMIZERS.build(name, groups, lr=lr, **params)
    except ValueError as exc:  # torch's own range checks ("Invalid beta parameter at index 1: 1.5")
        msg = str(exc)
        raise ValueError(msg if msg.startswith(("optimizer", "unknown")) else f"optimizer={name}: {msg}") from None


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
