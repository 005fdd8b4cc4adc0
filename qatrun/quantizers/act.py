"""Activation quantization math: a uniform grid of ``b`` bits (1-8) on ``[0, a]`` (unsigned, for
non-negative inputs such as ReLU outputs) or ``[-a, a]`` (signed), the sign chosen from the data.

* unsigned: ``2^b`` levels ``k * Delta``, ``Delta = a / (2^b - 1)`` (PACT's grid, Choi et al. 2018, eq. 2).
* signed, ``b >= 2``: ``2^b - 1`` levels ``k * Delta``, ``Delta = a / (2^(b-1) - 1)``, one at zero (qatrun's
  ``symmetric`` grid: zero inputs, e.g. padding, stay exact); ``b = 1``: the two levels ``+-a`` (sign).

``y = clip(x, lo, a)`` then rounded to the grid. The backward:

* to ``x``: an activation estimator ``est(x, lo, hi) -> multiplier`` (registry ``ACT_ESTIMATORS``); the
  default ``ste`` is the straight-through estimator clipped at the range: 1 on ``[lo, hi)``, 0 elsewhere
  (PACT eq. 4: ``dy/dx = 1`` for ``0 <= x < alpha``).
* to the clip ``a`` (learned by PACT): ``dy/da = 1`` where ``x >= a`` (PACT eq. 3, the rounding passed
  straight through), ``-1`` where ``x < -a`` on the signed grid (the symmetric clip), 0 inside.

Pure torch: no I/O, no config.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from qatrun.quant import check_bits
from qatrun.quantizers.ranges import check_percentile, percentile_abs
from qatrun.registry import Registry

ACT_ESTIMATORS: Registry = Registry("activation estimator")


@ACT_ESTIMATORS.register("ste")
def ste_clipped(x: torch.Tensor, lo, hi) -> torch.Tensor:
    """The clipped STE: ``dy/dx = 1`` on ``[lo, hi)``, 0 elsewhere (PACT eq. 4)."""
    return ((x >= lo) & (x < hi)).to(x.dtype)


def act_delta(a, bits: int, signed: bool):
    """The level spacing on ``[0, a]`` (unsigned) or ``[-a, a]`` (signed)."""
    if not signed:
        return a / (2**bits - 1)
    return 2 * a if bits == 1 else a / (2 ** (bits - 1) - 1)


def act_quantize(x: torch.Tensor, a: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    """``Delta * round(clip(x, lo, a) / Delta)`` (``lo = -a`` signed, 0 unsigned); signed 1-bit rounds on the
    half-integer grid, so its levels are ``+-a``."""
    a = a.to(x.dtype)
    y = torch.minimum(x, a)
    y = torch.maximum(y, -a) if signed else y.clamp_min(0)
    d = act_delta(a, bits, signed)
    if signed and bits == 1:
        return d * (torch.round(y / d - 0.5) + 0.5)
    return d * torch.round(y / d)


def clip_grad(x: torch.Tensor, a: torch.Tensor, signed: bool) -> torch.Tensor:
    """``dy/da`` of ``y = clip(x, lo, a)`` (PACT eq. 3): 1 where ``x >= a``, -1 where ``x < -a`` (signed)."""
    a = a.to(x.dtype)
    up = (x >= a).to(x.dtype)
    return up - (x < -a).to(x.dtype) if signed else up


def act_backward(x, a, signed: bool, upstream, est, learned: bool):
    """``(dL/dx, dL/da or None)``: ``est(x, lo, a) * upstream``, and PACT's clip gradient summed."""
    a_x = a.to(x.dtype)
    lo = -a_x if signed else torch.zeros_like(a_x)
    gx = est(x, lo, a_x) * upstream
    ga = (clip_grad(x, a, signed) * upstream).sum().to(a.dtype).reshape(a.shape) if learned else None
    return gx, ga


class ActQuantize(torch.autograd.Function):
    """Thin wrapper: ``act_quantize`` forward, ``act_backward`` backward (``a`` learned or not)."""

    @staticmethod
    def forward(ctx, x, a, bits, signed, est, learned):
        ctx.save_for_backward(x, a)
        ctx.signed, ctx.est, ctx.learned = signed, est, learned
        return act_quantize(x, a, bits, signed)

    @staticmethod
    def backward(ctx, upstream):
        x, a = ctx.saved_tensors
        gx, ga = act_backward(x, a, ctx.signed, upstream, ctx.est, ctx.learned)
        return gx, ga, None, None, None, None


def resolve_estimator(estimator):
    """An activation estimator by registry name, or a callable ``est(x, lo, hi) -> multiplier``."""
    return estimator if callable(estimator) else ACT_ESTIMATORS.get(estimator)


class ActivationQuantizer(nn.Module):
    """Base: quantizes its input on a ``bits``-bit grid whose sign (and, for ``fixed``, range) is taken from
    the first batch it sees (``calibrate``). State: the buffers ``signed`` and ``calibrated`` (bool); members
    add the range. The integration must make the first batch the same on every rank (or all-reduce)."""

    name = "base"
    is_learned, is_fixed, in_theorem = False, True, True

    def __init__(self, bits: int, percentile: float = 100.0, estimator="ste"):
        super().__init__()
        self.bits = check_bits(bits)
        self.percentile = check_percentile(percentile)
        self.estimator_name = estimator if isinstance(estimator, str) else getattr(estimator, "__name__", "custom")
        self.est = resolve_estimator(estimator)
        self.register_buffer("signed", torch.tensor(False))
        self.register_buffer("calibrated", torch.tensor(False))
        self._signed, self._calibrated = False, False  # host copies: no device sync in the forward

    def calibrate(self, x: torch.Tensor) -> torch.Tensor:
        """Choose the sign from ``x`` and return the ``percentile`` of ``|x|`` (0-dim, no gradient)."""
        with torch.no_grad():
            self._signed = bool((x < 0).any())
            a = percentile_abs(x, self.percentile).float()
            if not float(a) > 0:
                raise ValueError(f"activation quantizer {self.name!r}: the {self.percentile:g}th percentile of |x| "
                                 "on the first batch is 0, so it gives no range; use a larger percentile")
            self.signed.fill_(self._signed)
            self.calibrated.fill_(True)
            self._calibrated = True
        return a

    def clip(self) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._calibrated:
            self._set_range(self.calibrate(x))
        return ActQuantize.apply(x, self.clip(), self.bits, self._signed, self.est, self.is_learned)

    def _set_range(self, a: torch.Tensor) -> None:
        raise NotImplementedError

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._signed, self._calibrated = bool(self.signed), bool(self.calibrated)

    def extra_repr(self) -> str:
        sign = ("signed" if self._signed else "unsigned") if self._calibrated else "uncalibrated"
        return f"bits={self.bits}, {sign}, percentile={self.percentile:g}, estimator={self.estimator_name}"
