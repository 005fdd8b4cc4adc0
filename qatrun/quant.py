"""The quantization grid: levels, Q(w), bin index and thresholds for one tensor.

A grid has ``n`` levels ``-m + j * Delta`` (``j = 0 .. n-1``), ``Delta = 2m / (n - 1)``, where
``m`` is the tensor's clipping range, fixed for the whole run (the theory of arXiv 2405.05171
needs a fixed grid). Rounding thresholds are the bin midpoints ``-m + (i + 1/2) Delta``.

* ``he_uniform`` (the authors' grid): ``n = 2^b``, ``m = sqrt(6 / fan_in)``; no level at zero.
* ``symmetric``: ``n = 2^b - 1`` (odd, so one level sits at zero), ``m`` fixed when the layer is
  created (initial max-abs or a given value). Needs at least 2 bits.

All grid arithmetic runs in fp32 (or fp64 if the input is fp64), whatever the weight dtype.
Pure torch: no I/O, no config.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

MIN_BITS, MAX_BITS = 1, 8
GRIDS = ("he_uniform", "symmetric")


def check_bits(bits) -> int:
    if not (isinstance(bits, int) and not isinstance(bits, bool)) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an integer from {MIN_BITS} to {MAX_BITS}, got {bits!r}")
    return bits


def fan_in(shape) -> int:
    """Inputs feeding one output: ``in_features`` for Linear, ``kh * kw * in_channels`` for conv."""
    if len(shape) < 2:
        raise ValueError(f"a quantized weight needs at least 2 dims (out, in, ...), got shape {tuple(shape)}")
    return int(math.prod(shape[1:]))


def he_uniform_range(shape) -> float:
    """The He-uniform bound ``m = sqrt(6 / fan_in)``: the authors' per-tensor range."""
    return math.sqrt(6.0 / fan_in(shape))


def _math_dtype(w: torch.Tensor) -> torch.dtype:
    return torch.float64 if w.dtype == torch.float64 else torch.float32


@dataclass(frozen=True)
class Grid:
    """A fixed uniform grid with ``n_levels`` levels spanning ``[-m, m]`` (``m`` given per call)."""

    kind: str
    bits: int

    def __post_init__(self):
        check_bits(self.bits)
        if self.kind not in GRIDS:
            raise ValueError(f"unknown grid {self.kind!r}; valid grids: {', '.join(GRIDS)}")
        if self.kind == "symmetric" and self.bits < 2:
            raise ValueError("the symmetric grid (a level at zero) needs bits >= 2; use grid=he_uniform for 1 bit")

    @property
    def n_levels(self) -> int:
        return 2**self.bits if self.kind == "he_uniform" else 2**self.bits - 1

    @property
    def n_bins(self) -> int:
        return self.n_levels - 1

    def init_range(self, weight: torch.Tensor, scale: float | None = None) -> float:
        """The fixed range ``m`` of a weight tensor under this grid, chosen once at creation."""
        if scale is not None:
            if not scale > 0:
                raise ValueError(f"grid scale must be positive, got {scale}")
            return float(scale)
        if self.kind == "he_uniform":
            return he_uniform_range(weight.shape)
        m = float(weight.detach().abs().max())
        if not m > 0:
            raise ValueError("symmetric grid: the initial weight is all zeros, so max-abs gives no range; pass a scale")
        return m

    def delta(self, m):
        """Level spacing ``Delta = 2m / (n - 1)``."""
        return 2 * m / self.n_bins

    def position(self, w: torch.Tensor, m) -> torch.Tensor:
        """``(clip(w) + m) / Delta``: position in units of Delta, in ``[0, n-1]`` (fp32 math)."""
        w = w.to(_math_dtype(w))
        return (w.clamp(-m, m) + m) / self.delta(m)

    def level_index(self, w: torch.Tensor, m) -> torch.Tensor:
        """Index ``j`` of the level ``Q(w)`` (int64, 0 .. n-1)."""
        return torch.round(self.position(w, m)).long()

    def quantize(self, w: torch.Tensor, m) -> torch.Tensor:
        """``Q(w) = Delta * round((clip(w) + m) / Delta) - m`` in the dtype of ``w``."""
        q = torch.round(self.position(w, m)) * self.delta(m) - m
        return q.to(w.dtype)

    def bin_index(self, w: torch.Tensor, m) -> torch.Tensor:
        """Bin ``i`` holding ``w``: ``floor((w + m) / Delta)``, clamped to 0 .. n-2 (``w = m`` is in the last bin)."""
        return torch.floor(self.position(w, m)).clamp_(max=self.n_bins - 1).long()

    def thresholds(self, m) -> torch.Tensor:
        """The ``n - 1`` rounding thresholds (bin midpoints), fp64; a range tensor ``(out, 1)`` gives each
        channel's row, on its device."""
        i = torch.arange(self.n_bins, dtype=torch.float64, device=m.device if torch.is_tensor(m) else None)
        return -m + (i + 0.5) * self.delta(m)

    def levels(self, m) -> torch.Tensor:
        """The ``n`` levels, fp64."""
        return -m + torch.arange(self.n_levels, dtype=torch.float64) * self.delta(m)

    def level_bounds(self, m, dtype: torch.dtype, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lo, hi)``, each ``n`` values of ``dtype``: the smallest and largest value of that dtype whose
        ``level_index`` is ``j`` (``-inf`` / ``+inf`` at the ends). Exact for the arithmetic this device does
        (``level_index`` is monotone in ``w``, so each level owns one contiguous run of representable values).
        Computed once per (grid, m, dtype, device) by bisection over representable values."""
        return _level_bounds(self, float(m), dtype, str(torch.device(device or "cpu")))

    def same_level(self, out: torch.Tensor, w: torch.Tensor, m) -> torch.Tensor:
        """``out`` moved (within its dtype) to the nearest value whose level is ``w``'s: ``Q(result) == Q(w)``
        bit for bit. For a map that fixes every threshold (the mirror map), this only touches values that
        rounding pushed across a threshold, and it keeps a monotone map monotone."""
        lo, hi = self.level_bounds(m, out.dtype, out.device)
        j = self.level_index(w, m)
        return torch.minimum(torch.maximum(out, lo[j]), hi[j])


def bisect_levels(grid: Grid, below: torch.Tensor, above: torch.Tensor, m) -> tuple[torch.Tensor, torch.Tensor]:
    """From brackets ``below`` (at level <= i) and ``above`` (at level >= i + 1) of each threshold ``i`` (the last
    dim), the last value of their dtype at level i and the first at level i + 1, by bisection over representable
    values; ``m`` as ``level_index`` takes it (a float, or a tensor broadcasting over the brackets)."""
    target = torch.arange(1, grid.n_levels, device=below.device)
    for _ in range(4000):
        step = torch.nextafter(below, above)
        if bool((step == above).all()):
            break
        mid = ((below.double() + above.double()) / 2).to(below.dtype)
        mid = torch.where((mid == below) | (mid == above), step, mid)
        up = grid.level_index(mid, m) >= target
        below, above = torch.where(up, below, mid), torch.where(up, mid, above)
    else:  # pragma: no cover - the bracket halves every round
        raise RuntimeError("level_bounds: bisection did not converge")
    return below, above


@functools.lru_cache(maxsize=4096)
def _level_bounds(grid: Grid, m: float, dtype: torch.dtype, device: str):
    dev = torch.device(device)
    th = grid.thresholds(m).to(dev)
    d = grid.delta(m)
    below, above = (th - d / 2).to(dtype), (th + d / 2).to(dtype)  # levels i and i + 1: a bracket
    below, above = bisect_levels(grid, below, above, m)
    inf = torch.full((1,), math.inf, dtype=dtype, device=dev)
    return torch.cat([-inf, above]), torch.cat([below, inf])
