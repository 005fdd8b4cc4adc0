"""The periodic estimators: STE, the adjusted STE (pwl), tanh (DSQ) and any user shape (custom).

Each is written as its bin ``shape`` and the antiderivative ``F`` of ``1 / shape``
(``base.PeriodicEstimator``; docs/method.md, "The class, the factor alpha and the mirror map M").
Pure torch, no config; the one outside thing is a user's shape, imported by path (``qatrun.userimport``)
and timed once on the validation points (``SHAPE_BUDGET_S``).
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable

import torch

from qatrun import checks
from qatrun.estimators.alpha import ALPHA_CEILING, ALPHA_FLOOR, check_alpha
from qatrun.estimators.base import PeriodicEstimator, check_extension, register
from qatrun.quant import Grid
from qatrun.userimport import one_line, resolve, where

# The sharpness the authors used for the tanh (DSQ) estimator, per bit width.
TANH_DEFAULT_K = {1: 2.0, 2: 5.5, 4: 18.0}

@register("ste")
class STE(PeriodicEstimator):
    """Clipped straight-through estimator: g = 1 inside [-m, m]; alpha = 1, M = identity."""

    def shape(self, f):
        return torch.ones_like(f)

    def antiderivative(self, f):
        return f.to(torch.float64) - 0.5

    is_identity = True

    @property
    def alpha(self) -> float:
        return 1.0

    def mirror64(self, w64, m, extension: str = "shift"):
        check_extension(extension)  # the identity continues as itself either way
        return w64

    def inverse64(self, y64, m, extension: str = "shift", iters: int = 64):
        check_extension(extension)
        return y64

    def mirror(self, w, m, extension: str = "shift"):
        check_extension(extension)
        return w.detach().clone()


@register("pwl")
class PWL(STE):
    """The adjusted STE written as an estimator (authors' code): g = alpha * 1{|w| <= m}.

    ``alpha`` is given, or taken from the tanh estimator with sharpness ``k`` on the same grid.
    Its own twin is plain STE at lr factor alpha, init unchanged (M is the identity).
    """

    def __init__(self, grid: Grid, alpha: float | None = None, k: float | None = None):
        super().__init__(grid)
        if alpha is None:
            alpha = TanhDSQ(grid, k=k).alpha  # a k whose alpha is below ALPHA_FLOOR is refused there
        if not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool)):
            raise ValueError(f"pwl: alpha must be a number in [{ALPHA_FLOOR:g}, {ALPHA_CEILING:g}], got {alpha!r}")
        self._alpha = check_alpha("pwl", float(alpha), f"use an alpha in [{ALPHA_FLOOR:g}, {ALPHA_CEILING:g}]")

    def params(self):
        return {"alpha": self._alpha}

    def shape(self, f):
        return torch.full_like(f, self._alpha)

    def antiderivative(self, f):
        return (f.to(torch.float64) - 0.5) / self._alpha

    @property
    def alpha(self) -> float:
        return self._alpha


def dsq_shape(f: torch.Tensor, e, s) -> torch.Tensor:
    """The tanh (DSQ) bin shape ``e s sech^2(2e (f - 1/2))``, ``s = coth(e)`` (mean 1 over a bin);
    ``e = k / n_bins`` and ``s`` are floats or 0-dim tensors (an annealed k)."""
    return e * s / torch.cosh(2 * e * (f - 0.5)) ** 2


@register("tanh")
class TanhDSQ(PeriodicEstimator):
    """DSQ (Gong et al. 2019) as the authors wrote it, closed forms derived in docs/method.md.

    With ``kt = k / m`` and ``e = kt * Delta / 2 = k / (n - 1)``, ``s = 1 / tanh(e)``:
    ``g = e * s * sech^2(2e (f - 1/2))`` (mean 1 over a bin),
    ``F(f) = (y + sinh y cosh y) / (4 e^2 s)`` with ``y = 2e (f - 1/2)``,
    ``alpha = 2 e^2 coth(e) / (e + sinh e cosh e)``.
    """

    def __init__(self, grid: Grid, k: float | None = None):
        super().__init__(grid)
        if k is None:
            if grid.bits not in TANH_DEFAULT_K:
                known = ", ".join(f"{b} bits: k={v}" for b, v in TANH_DEFAULT_K.items())
                raise ValueError(f"tanh: no default sharpness k for {grid.bits} bits ({known}); pass k explicitly")
            k = TANH_DEFAULT_K[grid.bits]
        checks.positive("tanh: sharpness k", k)
        self.k = float(k)
        self.e = self.k / grid.n_bins
        self.s = 1.0 / math.tanh(self.e)
        bits = f"{grid.bits} bit{'s' if grid.bits > 1 else ''}"
        e_floor = tanh_floor_e()
        check_alpha(f"tanh: sharpness k={self.k:g} on {bits}", self.alpha,
                    f"use k below {e_floor * grid.n_bins:.3g} on {bits} (alpha reaches the floor at k = "
                    f"{e_floor:.4g} x the number of bins)")

    def params(self):
        return {"k": self.k}

    def shape(self, f):
        return dsq_shape(f, self.e, self.s)

    def antiderivative(self, f):
        y = 2 * self.e * (f.to(torch.float64) - 0.5)
        return (y + torch.sinh(y) * torch.cosh(y)) / (4 * self.e**2 * self.s)

    @property
    def alpha(self) -> float:
        return tanh_alpha(self.e)


def tanh_alpha(e: float) -> float:
    """tanh's alpha ``2 e^2 coth(e) / (e + sinh e cosh e)``; for large e its limit ``8 e^2 exp(-2e)`` (no
    overflow: it underflows to 0)."""
    if e > 300:
        return 8 * e**2 * math.exp(-2 * e)
    return 2 * e**2 / math.tanh(e) / (e + math.sinh(e) * math.cosh(e))


def tanh_floor_e() -> float:
    """The e = k / n_bins where tanh's alpha (decreasing in e) reaches ALPHA_FLOOR (bisection)."""
    lo, hi = 1e-3, 400.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if tanh_alpha(mid) >= ALPHA_FLOOR else (lo, mid)
    return lo


# The budget for one evaluation of a user shape on the validation points (the 2^18 table nodes by
# default). The backward of every quantized layer calls the shape on all its weights: one that takes
# seconds here would take as long in every step.
SHAPE_BUDGET_S = 5.0
# Below -NEGATIVE_TOL x its maximum a shape value is negative, not a rounding error around zero.
NEGATIVE_TOL = 1e-12
ZERO_RATIO = 1e-4


def _resolve_shape(shape) -> Callable:
    if callable(shape):
        return shape
    if not isinstance(shape, str):
        raise ValueError(f"custom: shape must be a callable or an import path 'pkg.module:fn' (or 'pkg.module.fn'), "
                         f"got {shape!r}")
    return resolve(shape, "estimator.shape")


def shape_budget() -> float:
    """Seconds a user shape may take on the validation points: SHAPE_BUDGET_S, or QATRUN_SHAPE_BUDGET_S."""
    text = os.environ.get("QATRUN_SHAPE_BUDGET_S")
    if text is None:
        return SHAPE_BUDGET_S
    try:
        budget = float(text)
    except ValueError:
        budget = math.nan
    if not budget > 0:
        raise ValueError(f"QATRUN_SHAPE_BUDGET_S must be a positive number of seconds, got {text!r}")
    return budget


@register("custom")
class Custom(PeriodicEstimator):
    """Any user shape ``g = shape(u)`` on one bin, ``u`` in [0, 1) between two adjacent levels.

    alpha and M come from the cumulative integral of 1/shape on ``resolution`` cells (midpoint
    rule, fp64), interpolated linearly and anchored at the threshold u = 1/2, so thresholds are
    fixed exactly. A shape that reaches zero inside the bin is outside the class; one that goes negative
    (anywhere on the nodes) is refused, whatever the twin: g is a gradient multiplier, a negative one
    makes those weights ascend the loss. So is an in-class shape whose alpha is outside [ALPHA_FLOOR, ALPHA_CEILING].

    The shape is validated once, here, on the table's nodes (a tensor shaped like its input, finite,
    within the time budget SHAPE_BUDGET_S or the environment's QATRUN_SHAPE_BUDGET_S; qatrun's own
    stand-in shapes, marked ``untimed``, are exempt):
    ``shape`` in the backward of every quantized layer calls it bare, with no host sync, so
    ``torch.compile`` keeps the layer in one graph. alpha is computed once, and the fp64 table is
    copied once to each device that asks for it.
    """

    def __init__(self, grid: Grid, shape=None, resolution: int = 2**18):
        super().__init__(grid)
        if shape is None:
            raise ValueError("custom: pass shape=<callable or 'pkg.module.fn'> giving g on one bin, u in [0, 1)")
        self.shape_name = shape if isinstance(shape, str) else getattr(shape, "__qualname__", repr(shape))
        self._fn = _resolve_shape(shape)
        n = int(resolution)
        if n < 16 or n % 2:
            raise ValueError(f"custom: resolution must be an even integer >= 16, got {resolution!r}")
        mid = (torch.arange(n, dtype=torch.float64) + 0.5) / n
        vals = self._call(mid)
        # Bounded away from zero, as the theorem needs; a shape that dips below this ratio of its
        # maximum is treated as reaching zero (1/g then blows up and alpha, M are meaningless).
        bad = ~(vals > ZERO_RATIO * vals.abs().max())
        if bad.any():
            u = float(mid[bad.nonzero()[0, 0]])
            self.in_class = False
            self.why_not_in_class = (
                f"its shape reaches zero (or below {ZERO_RATIO:g} x its maximum) at u={u:.4g} "
                "inside a bin, so 1/g is not integrable"
            )
            self._table = None
            return
        cum = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(1.0 / vals, 0) / n])
        self._table = cum - cum[n // 2]  # F at the nodes j/n, zero at the threshold u = 1/2
        self._n = n
        self._tables = {self._table.device: self._table}  # device -> the table there (shared by copies)
        self._alpha = check_alpha(f"custom: shape {self.shape_name!r}", 1.0 / float(self._table[n] - self._table[0]),
                                  "scale the shape up (its harmonic mean over the bin is alpha)",
                                  "scale the shape down (its harmonic mean over the bin is alpha)")

    def _call(self, u: torch.Tensor) -> torch.Tensor:
        budget = shape_budget()
        start = time.perf_counter()
        try:
            out = self._fn(u)
        except Exception as exc:  # a user function: report what it raised, and where
            raise ValueError(f"custom: {where(exc)}shape {self.shape_name!r} raised {type(exc).__name__}: "
                             f"{one_line(exc)}") from None
        took = time.perf_counter() - start
        if took > budget and not getattr(self._fn, "untimed", False):
            raise ValueError(f"custom: shape {self.shape_name!r} took {took:.1f} s on {u.numel()} points, more than "
                             f"the {budget:g} s budget; make it vectorized or raise QATRUN_SHAPE_BUDGET_S")
        if not isinstance(out, torch.Tensor) or out.shape != u.shape:
            got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"custom: shape {self.shape_name!r} must return a tensor shaped like its input "
                f"{tuple(u.shape)}, got {got}"
            )
        if out.requires_grad:  # g is a gradient multiplier, applied inside backward: it must be data, not a graph
            raise ValueError(f"custom: shape {self.shape_name!r} returned a tensor that requires grad (built from a "
                             "parameter or a leaf with requires_grad=True); g must be a plain function of u: detach it")
        if not torch.isfinite(out).all():
            raise ValueError(f"custom: shape {self.shape_name!r} returned NaN or Inf")
        out = out.to(u.dtype)
        negative = out < -NEGATIVE_TOL * out.abs().max()
        if negative.any():
            i = negative.nonzero()[0, 0]
            raise ValueError(f"custom: shape {self.shape_name!r} is negative at u={float(u[i]):.4g} "
                             f"(g = {float(out[i]):.4g}): a gradient multiplier must be >= 0 on the whole bin")
        return out

    def params(self):
        return {"shape": self.shape_name}

    def shape(self, f):
        return self._fn(f).to(f.dtype)  # validated at construction (``_call``)

    @property
    def alpha(self) -> float:
        if not self.in_class:
            self._refuse("learning-rate factor alpha")
        return self._alpha

    def table(self, device: torch.device) -> torch.Tensor:
        """The fp64 table of ``F`` on ``device``, copied there once."""
        t = self._tables.get(device)
        if t is None:
            t = self._tables[device] = self._table.to(device)
        return t

    def antiderivative(self, f):
        if self._table is None:  # outside the class: no table (a host-side check, no sync)
            self._refuse("mirror map M")
        table = self.table(f.device)
        x = f.to(torch.float64).clamp(0, 1) * self._n
        j = torch.floor(x).clamp_(max=self._n - 1)
        t = x - j
        j = j.long()
        return table[j] * (1 - t) + table[j + 1] * t
