"""Weight gradient estimators: g(w), the twin's learning-rate factor alpha, the mirror map M.

The forward pass is always the hard quantizer Q (``quant.Grid.quantize``); an estimator only
replaces dQ/dw by a multiplier g(w). The paper (arXiv 2405.05171; docs/method.md): for g periodic with the
grid and bounded away from zero, with ``Delta`` the level spacing and ``c`` any rounding threshold,

    alpha = Delta / integral_bin du / g(u)            (harmonic mean of g over one bin)
    M(w)  = c + alpha * integral_c^w du / g(u)        (monotone, fixes every threshold)

and SGD with g, lr eta, init w0 matches STE with lr alpha * eta, init M(w0), to first order in eta.

Periodic estimators are written in bin coordinates: ``f = (w + m)/Delta - i`` in [0, 1] is the
position inside bin ``i`` and ``g(w) = shape(f)`` inside ``[-m, m]``, 0 outside. With
``F(f) = integral_{1/2}^f df' / shape(f')`` and ``J = F(1) - F(0)``:

    alpha = 1 / J,    M(w) = -m + Delta * (i + 1/2 + alpha * F(f))      (thresholds at f = 1/2)

Outside ``[-m, m]`` g = 0, so those weights never move; M is extended there by a shift, which
keeps it monotone and ``Q(M(w)) = Q(w)``. Pure torch: no I/O, no config.
"""

from __future__ import annotations

import importlib
import os
import sys
import math
from typing import Callable

import torch

from qatrun import checks
from qatrun.quant import Grid
from qatrun.registry import Registry

ESTIMATORS: Registry = Registry("estimator")

# The sharpness the authors used for the tanh (DSQ) estimator, per bit width.
TANH_DEFAULT_K = {1: 2.0, 2: 5.5, 4: 18.0}


def register(name: str):
    """Class decorator: register an estimator under ``name`` (also its ``.name``)."""
    def deco(cls):
        cls.name = name
        return ESTIMATORS.register(name)(cls)

    return deco


def names() -> list[str]:
    return ESTIMATORS.names()


def create(name: str, bits: int = 2, grid: str | Grid = "he_uniform", **params) -> "Estimator":
    """Build an estimator by registry name: ``create("tanh", bits=2, k=5.5)``."""
    ESTIMATORS.get(name)  # an unknown name fails here, listing the valid ones
    g = grid if isinstance(grid, Grid) else Grid(grid, bits)
    if g.bits != bits:
        raise ValueError(f"grid has {g.bits} bits but the estimator was asked for {bits}")
    return ESTIMATORS.build(name, g, **params)


class NotInClassError(ValueError):
    """alpha or M asked of an estimator the paper's theorem does not cover."""


class Estimator:
    """Base: an estimator on a fixed grid. Subclasses define ``grad``; periodic ones also alpha, M."""

    name = "base"
    in_class = True
    why_not_in_class = ""
    needs_upstream = False  # True when g depends on the incoming gradient

    def __init__(self, grid: Grid):
        self.grid = grid

    @property
    def bits(self) -> int:
        return self.grid.bits

    def params(self) -> dict:
        return {}

    def grad(self, w: torch.Tensor, m, upstream: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def _refuse(self, what: str):
        raise NotInClassError(
            f"estimator {self.name!r} is outside the paper's class ({self.why_not_in_class}), "
            f"so its {what} does not exist; pair it with a plain STE twin (pair.twin=ste)"
        )

    @property
    def alpha(self) -> float:
        self._refuse("learning-rate factor alpha")

    def mirror(self, w: torch.Tensor, m) -> torch.Tensor:
        self._refuse("mirror map M")

    def __repr__(self):
        p = ", ".join(f"{k}={v}" for k, v in self.params().items())
        return f"{self.name}(bits={self.bits}, grid={self.grid.kind}{', ' + p if p else ''})"


class PeriodicEstimator(Estimator):
    """g(w) = shape(f) inside [-m, m], 0 outside; f the position inside the bin."""

    def shape(self, f: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def antiderivative(self, f: torch.Tensor) -> torch.Tensor:
        """``F(f) = integral_{1/2}^f 1 / shape``, in fp64."""
        raise NotImplementedError

    @property
    def bin_integral(self) -> float:
        """``J = integral_0^1 df / shape(f)`` (dimensionless; the bin integral of 1/g is Delta * J)."""
        one = torch.tensor([0.0, 1.0], dtype=torch.float64)
        F = self.antiderivative(one)
        return float(F[1] - F[0])

    def _bin_coords(self, w, m):
        pos = self.grid.position(w, m)
        i = torch.floor(pos).clamp_(max=self.grid.n_bins - 1)
        return i, pos - i

    def grad(self, w, m, upstream=None):
        _, f = self._bin_coords(w, m)
        inside = w.abs() <= m
        return torch.where(inside, self.shape(f), torch.zeros_like(f)).to(w.dtype)

    @property
    def alpha(self) -> float:
        if not self.in_class:
            self._refuse("learning-rate factor alpha")
        return 1.0 / self.bin_integral

    def mirror(self, w, m):
        if not self.in_class:
            self._refuse("mirror map M")
        w64 = w.detach().to(torch.float64)
        i, f = self._bin_coords(w64, m)
        delta = self.grid.delta(m)
        inner = -m + delta * (i + 0.5 + self.alpha * self.antiderivative(f))
        return self._same_level((inner + (w64 - w64.clamp(-m, m))).to(w.dtype), w.detach(), m)

    def _same_level(self, out: torch.Tensor, w: torch.Tensor, m) -> torch.Tensor:
        """Keep ``Q(M(w)) == Q(w)`` exact in the weight's dtype: casting M(w) down can push a weight
        lying within an ulp of a threshold across it; step such values back toward ``w`` ulp by ulp."""
        target = self.grid.level_index(w, m)
        for _ in range(8):
            wrong = self.grid.level_index(out, m) != target
            if not wrong.any():
                break
            out = torch.where(wrong, torch.nextafter(out, w), out)
        return out


@register("ste")
class STE(PeriodicEstimator):
    """Clipped straight-through estimator: g = 1 inside [-m, m]; alpha = 1, M = identity."""

    def shape(self, f):
        return torch.ones_like(f)

    def antiderivative(self, f):
        return f.to(torch.float64) - 0.5

    @property
    def alpha(self) -> float:
        return 1.0

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
        return self.e * self.s / torch.cosh(2 * self.e * (f - 0.5)) ** 2

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
        return self._call(f)

    def antiderivative(self, f):
        table = self._table.to(f.device)
        x = f.to(torch.float64).clamp(0, 1) * self._n
        j = torch.floor(x).clamp_(max=self._n - 1)
        t = x - j
        j = j.long()
        return table[j] * (1 - t) + table[j + 1] * t


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
