"""The periodic estimators: STE, the adjusted STE (pwl), tanh (DSQ) and any user shape (custom).

Each is written as its bin ``shape`` and the antiderivative ``F`` of ``1 / shape``
(``base.PeriodicEstimator``; docs/method.md, "The class, the factor alpha and the mirror map M").
Pure torch: no I/O, no config.
"""

from __future__ import annotations

import importlib
import os
import sys
import math
from typing import Callable

import torch

from qatrun import checks
from qatrun.estimators.base import PeriodicEstimator, register
from qatrun.quant import Grid

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

    def mirror64(self, w64, m):
        return w64

    def inverse64(self, y64, m, iters: int = 64):
        return y64

    def mirror(self, w, m):
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
            alpha = TanhDSQ(grid, k=k).alpha
        if not (isinstance(alpha, (int, float)) and 0 < alpha <= 1e6 and math.isfinite(alpha)):
            raise ValueError(f"pwl: alpha must be a positive number, got {alpha!r}")
        self._alpha = float(alpha)

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

    def params(self):
        return {"k": self.k}

    def shape(self, f):
        return dsq_shape(f, self.e, self.s)

    def antiderivative(self, f):
        y = 2 * self.e * (f.to(torch.float64) - 0.5)
        return (y + torch.sinh(y) * torch.cosh(y)) / (4 * self.e**2 * self.s)

    @property
    def alpha(self) -> float:
        e = self.e
        return 2 * e**2 / math.tanh(e) / (e + math.sinh(e) * math.cosh(e))


def _import(mod_name: str):
    """Installed packages first, then the current directory (the user's own project, as
    ``python -m`` would see it; appended to the path, so it never shadows an installed module)."""
    try:
        return importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        top, cwd = mod_name.partition(".")[0], os.getcwd()
        if exc.name != top or cwd in sys.path or not any(os.path.exists(os.path.join(cwd, top + s)) for s in ("", ".py")):
            raise
        sys.path.append(cwd)
        return importlib.import_module(mod_name)


def _resolve_shape(shape) -> Callable:
    if callable(shape):
        return shape
    if not isinstance(shape, str) or "." not in shape:
        raise ValueError(f"custom: shape must be a callable or a dotted import path 'pkg.module.fn', got {shape!r}")
    mod_name, _, attr = shape.rpartition(".")
    try:
        mod = _import(mod_name)
    except ImportError as exc:
        raise ValueError(f"custom: cannot import module {mod_name!r} for shape {shape!r}: {exc}") from None
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise ValueError(f"custom: {shape!r} does not name a callable (module {mod_name!r} has no function {attr!r})")
    return fn


ZERO_RATIO = 1e-4


@register("custom")
class Custom(PeriodicEstimator):
    """Any user shape ``g = shape(u)`` on one bin, ``u`` in [0, 1) between two adjacent levels.

    alpha and M come from the cumulative integral of 1/shape on ``resolution`` cells (midpoint
    rule, fp64), interpolated linearly and anchored at the threshold u = 1/2, so thresholds are
    fixed exactly. A shape that reaches zero (or goes negative) inside the bin is outside the class.

    The shape is validated once, here, on the table's nodes (a tensor shaped like its input, finite):
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
        self._alpha = 1.0 / float(self._table[n] - self._table[0])

    def _call(self, u: torch.Tensor) -> torch.Tensor:
        try:
            out = self._fn(u)
        except Exception as exc:  # a user function: report what it raised, and where
            raise ValueError(f"custom: shape {self.shape_name!r} raised {type(exc).__name__}: {exc}") from None
        if not isinstance(out, torch.Tensor) or out.shape != u.shape:
            got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"custom: shape {self.shape_name!r} must return a tensor shaped like its input "
                f"{tuple(u.shape)}, got {got}"
            )
        if not torch.isfinite(out).all():
            raise ValueError(f"custom: shape {self.shape_name!r} returned NaN or Inf")
        return out.to(u.dtype)

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
        table = self.table(f.device)
        x = f.to(torch.float64).clamp(0, 1) * self._n
        j = torch.floor(x).clamp_(max=self._n - 1)
        t = x - j
        j = j.long()
        return table[j] * (1 - t) + table[j + 1] * t
