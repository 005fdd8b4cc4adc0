"""The estimator core: the registry, the base classes, and the exact warp between two estimators.

An estimator replaces dQ/dw by a multiplier g(w); the forward pass is always the hard quantizer Q
(``quant.Grid.quantize``). The paper (arXiv 2405.05171; docs/method.md): for g periodic with the
grid and bounded away from zero, with ``Delta`` the level spacing and ``c`` any rounding threshold,

    alpha = Delta / integral_bin du / g(u)            (harmonic mean of g over one bin)
    M(w)  = c + alpha * integral_c^w du / g(u)        (monotone, fixes every threshold)

and SGD with g, lr eta, init w0 matches STE with lr alpha * eta, init M(w0), to first order in eta.
Two estimators A and B of the class are then each other in disguise: A at lr eta from w0 trains
like B at lr ``(alpha_A / alpha_B) * eta`` from ``M_B^{-1}(M_A(w0))`` (``warp``).

Periodic estimators are written in bin coordinates: ``f = (w + m)/Delta - i`` in [0, 1] is the
position inside bin ``i`` and ``g(w) = shape(f)`` inside ``[-m, m]``, 0 outside. With
``F(f) = integral_{1/2}^f df' / shape(f')`` and ``J = F(1) - F(0)``:

    alpha = 1 / J,    M(w) = -m + Delta * (i + 1/2 + alpha * F(f))      (thresholds at f = 1/2)

Outside ``[-m, m]`` (where g = 0) M is extended one of two ways (``EXTENSIONS``):
``shift``, qatrun's default, continues it with slope 1 from ``M(-m)`` and ``M(m)``; ``periodic``, the authors'
remap, keeps the bin formula with the bin index ``i = floor((w + m) / Delta)`` unclamped, so that
``M(w + k Delta) = M(w) + k Delta``. Both are monotone, keep ``Q(M(w)) = Q(w)`` and agree on ``[-m, m]``.
Every map that lands in a weight dtype goes through ``Grid.same_level``, so ``Q(M(w)) == Q(w)``
holds bit for bit, ties included. Pure torch: no I/O, no config.
"""

from __future__ import annotations

import copy

import torch

from qatrun.quant import Grid
from qatrun.registry import Registry

ESTIMATORS: Registry = Registry("estimator", supplied=("grid",))  # the grid comes from bits and grid

# A mapped clipping edge closer than this (in units of m) to -m or m keeps the plain range [-m, m].
EDGE_TOL = 1e-9

# How M continues outside [-m, m]: ``shift`` (slope 1 from the clipping edges, qatrun's default) or ``periodic``
# (the bin formula with the bin index unclamped, as in the authors' code). docs/method.md, "Outside the range".
EXTENSIONS = ("shift", "periodic")


def check_extension(extension: str) -> str:
    if extension not in EXTENSIONS:
        raise ValueError(f"unknown mirror extension {extension!r}; valid: {', '.join(EXTENSIONS)}")
    return extension


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
    """Base: an estimator on a fixed grid. Subclasses define ``grad``; periodic ones also alpha, M.

    ``in_class``: the theorem covers it. An estimator outside the class may still name an in-class
    ``reference()`` whose alpha and M build its natural twin (e.g. an annealed estimator's initial
    shape); ``reference()`` raises ``NotInClassError`` where there is none.
    ``needs_progress``: g depends on the training progress; the pair binds a 0-dim device tensor
    (fraction of the steps done) with ``bind_progress`` and updates it in place every step.
    """

    name = "base"
    in_class = True
    why_not_in_class = ""
    needs_upstream = False  # True when g depends on the incoming gradient
    needs_progress = False  # True when g depends on the training progress

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

    def reference(self) -> "PeriodicEstimator":
        """The in-class estimator whose alpha and M build this one's twin (itself when in the class)."""
        if self.in_class:
            return self
        self._refuse("mirror map M (and no in-class stand-in)")

    def bind_progress(self, progress: torch.Tensor) -> None:
        """Give a progress-dependent estimator the pair's 0-dim progress tensor (no-op otherwise)."""

    def __repr__(self):
        p = ", ".join(f"{k}={v}" for k, v in self.params().items())
        return f"{self.name}(bits={self.bits}, grid={self.grid.kind}{', ' + p if p else ''})"


class PeriodicEstimator(Estimator):
    """g(w) = shape(f) inside [-m, m], 0 outside; f the position inside the bin.

    ``clip = (lo, hi)`` (units of m, default (-1, 1)) is the range where g passes gradients. A twin
    warped from an estimator whose M moves the clipping edges (a shape not symmetric on its bin) gets
    ``[M^{-1}(M_A(-m)), M^{-1}(M_A(m))]`` (``with_clip``); between ``[-m, m]`` and that range g keeps
    ``M' g = alpha`` for the extension of M the warp used: ``alpha`` where M is a shift, ``shape(f)`` (the bin
    position unclamped) where it is periodic.
    """

    clip = (-1.0, 1.0)
    is_identity = False  # True for the STE family: M is the identity

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
        g = torch.where(inside, self.shape(f), torch.zeros_like(f))
        if self.clip != (-1.0, 1.0):
            passes = (w >= self.clip[0] * m) & (w <= self.clip[1] * m)
            g = torch.where(passes, torch.where(inside, g, self._gap_grad(w, m, g)), torch.zeros_like(g))
        return g.to(w.dtype)

    def _gap_grad(self, w, m, like):
        """g between ``[-m, m]`` and the clip: ``M' g = alpha`` for the extension the warp used."""
        if self._clip_extension == "shift":  # M' = 1
            return torch.full_like(like, self._clip_alpha)
        pos = (w.to(like.dtype) + m) / self.grid.delta(m)  # periodic: M' = alpha / shape(f), f unclamped
        return self.reference().shape(pos - torch.floor(pos)).to(like.dtype)

    def with_clip(self, lo: float, hi: float, extension: str = "shift") -> "PeriodicEstimator":
        """A copy that passes gradients on ``[lo * m, hi * m]`` (the plain range when within EDGE_TOL of it),
        with the edges carried by the map with ``extension`` (``EXTENSIONS``). alpha (g between ``[-m, m]`` and
        the clip under ``shift``) is computed here once, not in every backward."""
        check_extension(extension)
        out = copy.copy(self)
        out.clip = (-1.0, 1.0) if abs(lo + 1) < EDGE_TOL and abs(hi - 1) < EDGE_TOL else (float(lo), float(hi))
        if out.clip != (-1.0, 1.0):  # an estimator outside the class (qnet at 2+ bits) uses its stand-in's alpha
            out._clip_alpha = float(out.reference().alpha)
            out._clip_extension = extension
        return out

    @property
    def alpha(self) -> float:
        if not self.in_class:
            self._refuse("learning-rate factor alpha")
        return 1.0 / self.bin_integral

    def _in_bin(self, i: torch.Tensor, f: torch.Tensor, m) -> torch.Tensor:
        """``-m + Delta * (i + 1/2 + alpha * F(f))``: M at position ``f`` of bin ``i`` (fp64)."""
        return -m + self.grid.delta(m) * (i + 0.5 + self.alpha * self.antiderivative(f))

    def mirror64(self, w64: torch.Tensor, m, extension: str = "shift") -> torch.Tensor:
        """M in fp64 (no rounding to the weight dtype), continued outside ``[-m, m]`` by ``extension``:
        ``shift`` adds ``w - clip(w)`` to ``M(clip(w))``; ``periodic`` takes the bin index unclamped there."""
        if not self.in_class:
            self._refuse("mirror map M")
        check_extension(extension)
        i, f = self._bin_coords(w64, m)
        inner = self._in_bin(i, f, m)
        if extension == "shift":
            return inner + (w64 - w64.clamp(-m, m))
        pos = (w64 + m) / self.grid.delta(m)
        j = torch.floor(pos)
        return torch.where(w64.abs() <= m, inner, self._in_bin(j, pos - j, m))

    def inverse64(self, y64: torch.Tensor, m, extension: str = "shift", bisect: int = 8,
                  newton: int = 12) -> torch.Tensor:
        """``M^{-1}`` in fp64: the mapped bin from ``y``, then ``F(f) = target`` solved inside it (F is
        increasing, ``F' = 1 / shape``): ``bisect`` halvings of [0, 1], then Newton steps kept inside the
        bracket (clamped to it). Outside ``[M(-m), M(m)]`` the inverse of ``extension``: ``shift`` solves at
        the nearer end and adds the rest; ``periodic`` solves in the mapped bin with its index unclamped."""
        if not self.in_class:
            self._refuse("mirror map M")
        check_extension(extension)
        ends = self.mirror64(torch.tensor([-m, m], dtype=torch.float64, device=y64.device), m)
        delta, alpha = self.grid.delta(m), self.alpha
        F0 = float(self.antiderivative(torch.zeros(1, dtype=torch.float64))[0])
        yc = torch.minimum(torch.maximum(y64, ends[0]), ends[1]) if extension == "shift" else y64
        u = (yc + m) / delta
        i = torch.floor(u - 0.5 - alpha * F0)
        if extension == "shift":
            i = i.clamp_(0, self.grid.n_bins - 1)
        else:  # inside, the same (clamped) bins as shift; outside, the index unclamped
            i = torch.where((y64 >= ends[0]) & (y64 <= ends[1]), i.clamp(0, self.grid.n_bins - 1), i)
        target = (u - i - 0.5) / alpha
        lo, hi = torch.zeros_like(u), torch.ones_like(u)
        for _ in range(bisect):
            mid = (lo + hi) / 2
            below = self.antiderivative(mid) < target
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        f = (lo + hi) / 2
        for _ in range(newton):
            r = self.antiderivative(f) - target
            lo, hi = torch.where(r < 0, f, lo), torch.where(r < 0, hi, f)
            step = f - r * self.shape(f).to(torch.float64)
            f = torch.minimum(torch.maximum(step, lo), hi)
        return -m + delta * (i + f) + (y64 - yc)

    def mirror(self, w, m, extension: str = "shift"):
        return warp(w, m, self, None, extension)


def warp(w: torch.Tensor, m, source: PeriodicEstimator, target: PeriodicEstimator | None,
         extension: str = "shift") -> torch.Tensor:
    """``M_target^{-1}(M_source(w))`` in ``w``'s dtype, with ``Q(result) == Q(w)`` bit for bit; both maps
    continued outside ``[-m, m]`` by ``extension`` (``EXTENSIONS``).

    ``target=None`` (or the STE) is the identity inverse, so ``warp(w, m, A, None) = M_A(w)``: the STE
    twin's init. Computed in fp64, rounded once, then held on ``w``'s level (``Grid.same_level``).
    """
    w = w.detach()
    y = source.mirror64(w.to(torch.float64), m, extension)
    if target is not None and not target.is_identity:
        y = target.inverse64(y, m, extension)
    return source.grid.same_level(y.to(w.dtype), w, m)


def edges(source: PeriodicEstimator, target: PeriodicEstimator | None,
          extension: str = "shift") -> tuple[float, float]:
    """The clipping edges ``-m, m`` carried into the target's coordinates, in units of m (fp64); the
    extension matters only where the source's edge lands outside the target's ``[M(-m), M(m)]``."""
    y = source.mirror64(torch.tensor([-1.0, 1.0], dtype=torch.float64), 1.0, extension)
    if target is not None and not target.is_identity:
        y = target.inverse64(y, 1.0, extension)
    return float(y[0]), float(y[1])


def describe(est: Estimator) -> str:
    """A short name with the parameters, e.g. ``tanh(k=5.5)``."""
    p = ", ".join(f"{k}={v}" for k, v in est.params().items())
    return f"{est.name}({p})" if p else est.name

