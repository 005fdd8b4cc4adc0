"""``lsq``: a learned step size (Esser et al., ICLR 2020, "Learned Step Size Quantization"), per tensor
or per output channel, on both of qatrun's grids.

**The mapping.** LSQ quantizes ``v`` with step ``s`` to ``s * round(clip(v / s, -Q_N, Q_P))``. qatrun's
grids have ``Delta = 2m / n_bins``; take ``Delta = s``, so ``m = c * s`` with ``c = n_bins / 2``:

* ``symmetric`` (``n = 2^b - 1`` levels, one at zero): ``c = 2^(b-1) - 1 = Q_N = Q_P``, levels ``k * s``;
  ``Q(w)`` is LSQ's quantizer (ties aside: qatrun rounds ``(w + m) / Delta``, LSQ ``v / s``).
* ``he_uniform`` (``n = 2^b`` levels, none at zero): ``c = (2^b - 1) / 2``, levels ``(j - (n-1)/2) * s``:
  half-integer multiples of ``s``; LSQ on the half-integer grid, ``c`` playing ``Q_P``.

**The gradient.** With the rounding passed straight through (LSQ's eq. 3), ``Q = m * (2 r / n_bins - 1)``,
``r = round((clip(w) + m) / Delta)``, gives ``dQ/dm = (Q(w) - w) / m`` inside ``(-m, m)`` and ``sign(w)``
outside, so

    dQ/ds = c * dQ/dm = (Q(w) - w) / s = round(w / s) - w / s   inside       (LSQ eq. 3)
                      = -Q_N  (w <= -m),   +Q_P  (w >= m)         outside,

times the gradient scale ``g = 1 / sqrt(N * Q_P)`` (LSQ sec. 2.2; ``N`` weights in the tensor or in
the channel; ``Q_P := c`` on ``he_uniform``), which ``grad_scale=False`` turns off. The weight's own
gradient is the estimator's ``g(w)`` in the current grid's bin coordinates: ``estimator.grad(w, m, up)``.

**The state.** ``step`` (``nn.Parameter``), and the buffers ``step_ref``, ``m_ref`` set at creation;
``m = m_ref + c * (step - step_ref)`` (fp64), so ``dm/ds = c`` exactly and, while ``step`` has not
moved, ``m`` is ``m_ref`` bit for bit: with ``init="fixed"`` step 0 is the ``tensor`` / ``channel``
grid exactly (``m_ref - c * step_ref`` is under one ulp of ``m``: the effective step is ``m / c``).
Like MQBench, the range is floored (``RANGE_FLOOR``) so a step pushed below zero leaves a valid grid.
Pure torch: no I/O, no config.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from qatrun.estimators.base import Estimator
from qatrun.quant import Grid, _math_dtype
from qatrun.quantizers.base import WeightQuantizer, check_scope, register, weight_backward, weight_forward
from qatrun.quantizers.ranges import RANGE_FLOOR, channel_max_abs, channel_shape

INITS = ("lsq", "fixed")


def step_factor(grid: Grid) -> float:
    """``c = m / s = n_bins / 2``: ``Q_P`` on ``symmetric``, ``(2^b - 1) / 2`` on ``he_uniform``."""
    return grid.n_bins / 2


def lsq_grad_scale(grid: Grid, weight: torch.Tensor, per_channel: bool) -> float:
    """LSQ's ``g = 1 / sqrt(N * Q_P)``, ``N`` the weights sharing one step."""
    n = weight[0].numel() if per_channel else weight.numel()
    return 1.0 / math.sqrt(n * step_factor(grid))


def lsq_range(step, step_ref, m_ref, c: float, like: torch.Tensor) -> torch.Tensor:
    """``m = m_ref + c * (step - step_ref)`` (detached, fp64), floored; a per-channel range is cast to
    ``like``'s math dtype (``ranges``), a per-tensor one stays a 0-dim fp64 tensor (a Python float's twin)."""
    with torch.no_grad():
        m = m_ref.double() + c * (step.detach().double() - step_ref.double())
        m = m.clamp_min(RANGE_FLOOR)
        return m.to(_math_dtype(like)) if m.dim() > 0 else m


def lsq_range_grad(w: torch.Tensor, m, q: torch.Tensor) -> torch.Tensor:
    """``dQ/dm`` with the rounding passed straight through: ``(Q - w) / m`` inside ``(-m, m)``,
    ``sign(w)`` at or beyond the ends (LSQ eq. 3 divided by ``c``), in ``w``'s dtype."""
    inside = w.abs() < m
    return torch.where(inside, (q - w) / m, torch.sign(w))


def lsq_backward(estimator: Estimator, w, m, upstream, step_shape, c: float, gscale: float):
    """``(dL/dw, dL/ds)``: the estimator's ``g(w) * upstream``, and LSQ's step gradient summed over the
    weights sharing each step, times ``c`` (``dm/ds``) and the gradient scale."""
    wm = w.to(_math_dtype(w))
    q = estimator.grid.quantize(wm, m)
    d_m = (upstream.to(wm.dtype) * lsq_range_grad(wm, m, q)).sum_to_size(step_shape)
    return weight_backward(estimator, w, m, upstream), d_m * (c * gscale)


class LSQQuantize(torch.autograd.Function):
    """``Q(w)`` on the range ``m`` (computed from ``step``); backward to ``w`` and to ``step``."""

    @staticmethod
    def forward(ctx, w, step, m, estimator, c, gscale):
        ctx.save_for_backward(w)
        ctx.m, ctx.estimator, ctx.c, ctx.gscale, ctx.step_shape = m, estimator, c, gscale, step.shape
        return weight_forward(estimator.grid, w, m)

    @staticmethod
    def backward(ctx, upstream):
        (w,) = ctx.saved_tensors
        gw, gs = lsq_backward(ctx.estimator, w, ctx.m, upstream, ctx.step_shape, ctx.c, ctx.gscale)
        return gw, gs, None, None, None, None


def initial_range(grid: Grid, weight: torch.Tensor, per_channel: bool, init) -> tuple[torch.Tensor, torch.Tensor]:
    """``(step_0, m_0)``: LSQ's ``2 mean|w| / sqrt(Q_P)``, the fixed grid's range (``"fixed"``), or a
    given positive step. ``m_0`` fp64 (0-dim) per tensor, the math dtype per channel."""
    c, dtype = step_factor(grid), _math_dtype(weight)
    w = weight.detach().to(dtype)
    if init == "fixed":
        m0 = channel_max_abs(w, 100.0) if per_channel else torch.tensor(grid.init_range(w), dtype=torch.float64)
        return (m0 / c).to(dtype), m0
    if init == "lsq":
        a = w.abs().reshape(w.shape[0], -1) if per_channel else w.abs().reshape(-1)
        s0 = 2 * a.mean(dim=-1) / math.sqrt(c)
        zero = (~(s0 > 0)).nonzero()
        if zero.numel():
            where = f"output channel {int(zero[0, 0])}" if per_channel else "the tensor"
            raise ValueError(f"lsq: {where} has all-zero weights, so LSQ's init 2 mean|w| / sqrt(Q_P) is 0; "
                             "give it nonzero weights or pass a positive initial step")
        s0 = s0.reshape(channel_shape(w)) if per_channel else s0
    else:
        ok = isinstance(init, (int, float)) and not isinstance(init, bool) and math.isfinite(init) and init > 0
        if not ok:
            raise ValueError(f"lsq: the initial step must be a positive number, 'lsq' or 'fixed', got {init!r}")
        s0 = torch.full(channel_shape(w) if per_channel else (), float(init), dtype=dtype)
    m0 = c * s0.double()
    return s0, (m0.to(dtype) if per_channel else m0)


@register("lsq")
class LSQ(WeightQuantizer):
    """Learned step size, per tensor or per channel (``scope``), LSQ's init or the fixed grid's (``init``),
    with or without LSQ's gradient scale (``grad_scale``)."""

    is_learned, is_fixed, in_theorem = True, False, False

    def __init__(self, grid: Grid, weight: torch.Tensor, scope: str = "tensor", init="lsq", grad_scale: bool = True):
        super().__init__(grid)
        self.per_channel = check_scope(scope) == "channel"
        self.init = init
        self.c = step_factor(grid)
        self.gscale = lsq_grad_scale(grid, weight, self.per_channel) if grad_scale else 1.0
        s0, m0 = initial_range(grid, weight, self.per_channel, init)
        self.step = nn.Parameter(s0.to(weight.device))
        self.register_buffer("step_ref", s0.detach().clone().to(weight.device))
        self.register_buffer("m_ref", m0.to(weight.device))

    def range(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        like = weight if weight is not None else self.step
        return lsq_range(self.step, self.step_ref, self.m_ref, self.c, like)

    def forward(self, weight: torch.Tensor, estimator: Estimator) -> torch.Tensor:
        if estimator.grid != self.grid:
            raise ValueError(f"quantizer 'lsq': the estimator's grid {estimator.grid} differs from {self.grid}")
        m = self.range(weight)
        return LSQQuantize.apply(weight, self.step, m, estimator, self.c, self.gscale)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, init={self.init!r}, grad_scale={self.gscale:.3g}"

