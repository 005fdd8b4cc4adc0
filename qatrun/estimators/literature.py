"""Estimators from the QAT literature, with their class membership decided (arXiv 2405.05171, docs/estimators.md,
"Estimators from the literature").

* ``qnet``: the sum-of-sigmoids soft quantizer of Quantization Networks: bounded away from zero
  but not periodic (the edge bins lack the neighbours beyond the grid): near the class, its twin
  is built from the shape of the middle bin.
* ``approxsign``: Bi-Real Net's ApproxSign (1 bit): vanishes at the clipping edges, outside.
* ``dsq_anneal``: DSQ with its sharpness k annealed over training: outside (g changes with time);
  its twin is the warp of the initial k.
* ``ewgs``: element-wise gradient scaling: g depends on the incoming gradient, outside.

Pure torch: no I/O, no config.
"""

from __future__ import annotations

import math

import torch

from qatrun import checks
from qatrun.estimators.base import Estimator, PeriodicEstimator, register
from qatrun.estimators.periodic import ZERO_RATIO, Custom, TanhDSQ, dsq_shape
from qatrun.quant import Grid

# sigmoid'(x) < 1e-13 beyond this |x|: farther thresholds are left out of the qnet sum.
SIGMOID_REACH = 30.0


def _dsigmoid(x: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(x)
    return s * (1 - s)


@register("qnet")
class QuantNet(PeriodicEstimator):
    """Quantization Networks (Yang et al., CVPR 2019): the soft quantizer is a sum of sigmoids, one
    step of height Delta at every rounding threshold ``c_j``,

        y(w) = -m + Delta * sum_j sigmoid(beta * ((w - c_j) / Delta)),
        g(w) = dy/dw = beta * sum_j sigmoid'(beta * (pos - j - 1/2)),   pos = (w + m) / Delta,

    with the temperature ``beta`` fixed (the paper raises it during training; that would be an
    annealed estimator like ``dsq_anneal``). Inside ``[-m, m]`` only; 0 outside like every qatrun
    estimator (the forward pass clips there). Over a whole period the sum has mean 1.

    Class: ``g > 0`` everywhere, but the sum runs over the grid's thresholds only, so a bin near the
    edge lacks the contributions of thresholds beyond the grid: not periodic for 2+ bits (for 1 bit the
    single bin is trivially periodic, and the estimator is in the class). The twin (``reference``) is
    the periodic estimator with the shape of the middle bin ``n_bins // 2``; ``alpha`` and ``M`` are
    that bin's, and the edge bins' mismatch is what a pair measures. Above a beta of about 21, g near the
    levels falls below ``ZERO_RATIO`` x its maximum (``1/g`` is not integrable): outside the class at any
    bit width, with no stand-in, so only a plain STE twin (``pair.twin=ste``) compares with it.
    """

    def __init__(self, grid: Grid, beta: float):
        super().__init__(grid)
        checks.positive("qnet: temperature beta", beta)
        self.beta = float(beta)
        self._reach = min(grid.n_bins, math.ceil(SIGMOID_REACH / self.beta) + 1)
        # the middle bin's shape (for 1 bit: the one bin's): the estimator itself, or its twin's stand-in
        middle = Custom(grid, shape=self.bin_shape(grid.n_bins // 2))
        self.in_class = grid.n_bins == 1 and middle.in_class
        if not middle.in_class:  # a large beta: g between two thresholds underflows (1 bit: beta above about 21)
            self.why_not_in_class = (f"at beta={self.beta:g} its g falls below {ZERO_RATIO:g} x its maximum near the "
                                     "levels, so 1/g is not integrable over a bin and no bin's shape can stand in "
                                     "for its twin")
            self._ref = None
        elif not self.in_class:
            self.why_not_in_class = (
                "its sigmoid sum covers the grid's thresholds only, so the edge bins differ from the interior ones "
                "(not periodic); its twin uses the middle bin's shape")
            self._ref = middle
        else:
            self._ref, self._one_bin = self, middle

    def params(self):
        return {"beta": self.beta}

    def _sum(self, pos: torch.Tensor) -> torch.Tensor:
        """``beta * sum_j sigmoid'(beta (pos - j - 1/2))`` over the thresholds within reach."""
        i = torch.floor(pos).clamp_(0, self.grid.n_bins - 1)
        out = torch.zeros_like(pos)
        for d in range(-self._reach, self._reach + 1):
            j = i + d
            term = self.beta * _dsigmoid(self.beta * (pos - j - 0.5))
            out = out + torch.where((j >= 0) & (j < self.grid.n_bins), term, torch.zeros_like(term))
        return out

    def bin_shape(self, i: int):
        """g on bin ``i`` as a function of ``u`` in [0, 1) (the stand-in shape when ``i`` is interior)."""
        def shape(u):
            return self._sum(u.to(torch.float64) + i).to(u.dtype)
        shape.__qualname__ = f"qnet_bin{i}(beta={self.beta})"
        shape.untimed = True  # qatrun's own code: the time budget is for a user's shape (many bins take long)
        return shape

    def grad(self, w, m, upstream=None):
        pos = self.grid.position(w, m)
        g = self._sum(pos)
        return torch.where(w.abs() <= m, g, torch.zeros_like(g)).to(w.dtype)

    def shape(self, f):  # only used when in the class (1 bit: one bin)
        return self._sum(f)

    def antiderivative(self, f):  # only used when in the class: the one bin's table
        if not self.in_class:
            self._refuse("mirror map M")
        return self._one_bin.antiderivative(f)

    def reference(self) -> PeriodicEstimator:
        if self._ref is None:
            self._refuse("mirror map M (and no in-class stand-in)")
        return self._ref


@register("approxsign")
class ApproxSign(PeriodicEstimator):
    """Bi-Real Net's ApproxSign (Liu et al., "Bi-Real Net", ECCV 2018), a 1-bit estimator: the sign is
    approximated in the backward pass by the piecewise quadratic

        ApproxSign(x) = -1 (x < -1),  2x + x^2 (-1 <= x < 0),  2x - x^2 (0 <= x < 1),  1 (x >= 1),

    so, with ``x = w / m`` on qatrun's 1-bit grid (levels -m, m), ``g(w) = 2 - 2 |w| / m`` inside
    ``[-m, m]``, 0 outside; in bin coordinates ``shape(f) = 2 - 2 |2f - 1|`` (mean 1).

    Class: outside. g vanishes at the clipping edges (which are the two levels), so ``1 / g`` is not
    integrable over the bin and M is unbounded: there is no alpha and no warped twin; compare it with a
    plain STE twin (``pair.twin=ste``).
    """

    in_class = False
    why_not_in_class = "its g = 2 - 2|w|/m vanishes at the clipping edges, so 1/g is not integrable and M is unbounded"

    def __init__(self, grid: Grid):
        super().__init__(grid)
        if grid.bits != 1:
            raise ValueError(f"approxsign: Bi-Real Net's ApproxSign is a 1-bit (sign) estimator; use bits=1, got {grid.bits}")

    def shape(self, f):
        return 2 - 2 * (2 * f - 1).abs()


@register("dsq_anneal")
class AnnealedDSQ(Estimator):
    """DSQ (Gong et al., "Differentiable Soft Quantization", ICCV 2019) with its sharpness annealed over
    training, the way soft quantizers are driven towards the hard one: the tanh shape of ``tanh``
    (``dsq_shape``) with ``k(t)`` going from ``k`` at the start to ``k_end`` at the end,

        geometric: k(t) = k * (k_end / k)^t,     linear: k(t) = k + (k_end - k) * t,

    ``t`` in [0, 1) the fraction of the training steps done (``bind_progress``: the pair's 0-dim device
    tensor, updated in place every step, so no host sync). Unbound, ``t = 0``.

    Class: outside (g changes over time). The natural twin is the warp of the initial sharpness:
    ``reference()`` is ``tanh`` with ``k``; how far the pair drifts as k moves is what it measures.
    """

    in_class = False
    needs_progress = True
    why_not_in_class = "its g changes over training (annealed sharpness k)"
    SCHEDULES = ("geometric", "linear")

    def __init__(self, grid: Grid, k: float | None, k_end: float, schedule: str):
        super().__init__(grid)
        self._start = TanhDSQ(grid, k=k)
        checks.positive("dsq_anneal: final sharpness k_end", k_end)
        checks.one_of("dsq_anneal: schedule", schedule, self.SCHEDULES)
        self.k, self.k_end, self.schedule = self._start.k, float(k_end), schedule
        self.progress: torch.Tensor | None = None

    def params(self):
        return {"k": self.k, "k_end": self.k_end, "schedule": self.schedule}

    def bind_progress(self, progress: torch.Tensor) -> None:
        self.progress = progress

    def k_at(self, t: torch.Tensor) -> torch.Tensor:
        """Sharpness at progress ``t`` (tensor in, tensor out)."""
        if self.schedule == "geometric":
            return self.k * (self.k_end / self.k) ** t
        return self.k + (self.k_end - self.k) * t

    def grad(self, w, m, upstream=None):
        t = self.progress if self.progress is not None else torch.zeros((), device=w.device)
        e = self.k_at(t.to(torch.float64)) / self.grid.n_bins
        pos = self.grid.position(w, m)
        f = pos - torch.floor(pos).clamp_(max=self.grid.n_bins - 1)
        g = dsq_shape(f.to(torch.float64), e, 1 / torch.tanh(e)).to(f.dtype)
        return torch.where(w.abs() <= m, g, torch.zeros_like(g)).to(w.dtype)

    def reference(self) -> PeriodicEstimator:
        return self._start


@register("ewgs")
class EWGS(Estimator):
    """Element-wise gradient scaling (Lee et al., CVPR 2021): ``g = 1 + delta sign(grad) (w - Q(w)) / Delta``.

    ``w - Q(w)`` is measured in units of Delta (the paper normalises weights to the grid), so
    ``delta`` is dimensionless. Depends on the incoming gradient: outside the theorem's class.
    """

    in_class = False
    needs_upstream = True
    why_not_in_class = "its g depends on the incoming gradient"

    def __init__(self, grid: Grid, delta: float = 0.2):
        super().__init__(grid)
        checks.in_range("ewgs: delta (g stays positive)", delta, 0, 2)
        self.delta = float(delta)

    def params(self):
        return {"delta": self.delta}

    def grad(self, w, m, upstream=None):
        if upstream is None:
            raise ValueError("ewgs: g depends on the incoming gradient; pass upstream=")
        r = (w.float() - self.grid.quantize(w, m).float()) / self.grid.delta(m)
        g = 1 + self.delta * torch.sign(upstream.float()) * r
        return torch.where(w.abs() <= m, g, torch.zeros_like(g)).to(w.dtype)
