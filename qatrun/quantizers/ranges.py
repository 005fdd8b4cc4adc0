"""Range math shared by the quantizers: per-tensor or per-output-channel ranges ``m`` and the grid
operations that ``quant.Grid`` does only for one float ``m``.

A range is either a float / 0-dim tensor (one ``m`` per tensor) or a tensor of shape
``(out, 1, 1, ...)`` that broadcasts against the weight (one ``m`` per output channel, dim 0).
``Grid.position``, ``quantize``, ``level_index``, ``bin_index`` and the estimators' ``grad`` and
``mirror64`` are elementwise in ``m`` and already broadcast; ``Grid.thresholds``, ``levels``,
``level_bounds``, ``same_level`` and ``estimators.warp`` take one float ``m``: their per-channel
versions are here, built channel by channel on the per-tensor ones (so each channel is exactly the
per-tensor math on its own range, and a 0-dim range falls through to them unchanged).

Per-channel ranges are kept in the weight's math dtype (fp32, fp64 for fp64 weights): a per-channel
fp32 ``m`` then runs the same fp32 arithmetic as the float ``m`` of the same value (``2m`` is exact and
``2m / n_bins`` is correctly rounded either way), so one range on every channel equals ``tensor`` bit
for bit. An fp64 ``(out, 1, ...)`` tensor would instead promote fp32 weights to fp64.

Percentiles are nearest-rank (an element of the data, so ``p = 100`` is the max-abs exactly).
Pure torch: no I/O, no config.
"""

from __future__ import annotations

import math

import torch

from qatrun.estimators.base import PeriodicEstimator, check_extension
from qatrun.estimators.base import warp as warp_tensor
from qatrun.quant import Grid, _math_dtype, bisect_levels

# The smallest range a recomputed or learned m may take: BitNet b1.58's reference code clamps its
# absmean scale at 1e-5 (and MQBench clamps a learned scale at eps); a floor keeps 1/Delta finite.
RANGE_FLOOR = 1e-5


def check_percentile(p) -> float:
    """A percentile in ``(0, 100]`` (a ValueError saying what is valid otherwise)."""
    ok = isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) and 0 < p <= 100
    if not ok:
        raise ValueError(f"percentile must be a number in (0, 100] (100 = max-abs), got {p!r}")
    return float(p)


def is_per_channel(m) -> bool:
    return isinstance(m, torch.Tensor) and m.dim() > 0


def channel_shape(weight: torch.Tensor) -> tuple[int, ...]:
    """``(out, 1, 1, ...)``: the shape of a per-output-channel range for ``weight``."""
    if weight.dim() < 2:
        raise ValueError(f"a quantized weight needs at least 2 dims (out, in, ...), got shape {tuple(weight.shape)}")
    return (weight.shape[0],) + (1,) * (weight.dim() - 1)


def per_channel(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``values`` (one per output channel) as a range broadcastable to ``weight``, in its math dtype."""
    return values.detach().to(_math_dtype(weight)).reshape(channel_shape(weight))


def percentile_abs(x: torch.Tensor, p: float, dim: int | None = None) -> torch.Tensor:
    """Nearest-rank ``p``-th percentile of ``|x|``: over all of ``x`` (0-dim) or along dim 1 of ``x``
    flattened to ``(x.shape[0], -1)`` (one per row) when ``dim=1``. ``kthvalue``, not ``quantile``:
    exact (an element of the data) and without ``quantile``'s 2^24-element limit."""
    p = check_percentile(p)
    a = x.detach().abs()
    a = a.reshape(a.shape[0], -1) if dim == 1 else a.reshape(-1)
    n = a.shape[-1]
    if p == 100:
        return a.amax(dim=-1)
    k = max(1, math.ceil(p / 100 * n))
    return a.kthvalue(k, dim=-1).values


def channel_max_abs(weight: torch.Tensor, percentile: float = 100.0) -> torch.Tensor:
    """Per-channel range: the ``percentile`` of ``|w|`` in each output channel (100 = max-abs), shaped
    ``(out, 1, ...)``. A channel whose range is 0 has no grid: ValueError naming the channel index."""
    m = percentile_abs(weight, percentile, dim=1)
    bad = (~(m > 0)).nonzero()
    if bad.numel():
        c = int(bad[0, 0])
        what = "all its weights are zero" if not bool(weight[c].any()) else f"its {percentile:g}th percentile of |w| is 0"
        raise ValueError(f"output channel {c}: {what}, so it has no range; give it nonzero weights "
                         f"or use a larger percentile (valid: (0, 100])")
    return per_channel(m, weight)


def channel_values(m, n_channels: int) -> list[float]:
    """The per-channel ranges as floats (a per-tensor ``m`` repeated)."""
    if is_per_channel(m):
        return [float(v) for v in m.reshape(-1)]
    return [float(m)] * n_channels


def thresholds(grid: Grid, m) -> torch.Tensor:
    """Rounding thresholds, fp64: ``(n - 1,)`` for a per-tensor ``m``, ``(out, n - 1)`` per channel."""
    if not is_per_channel(m):
        return grid.thresholds(float(m))
    return torch.stack([grid.thresholds(v) for v in channel_values(m, m.shape[0])])


def levels(grid: Grid, m) -> torch.Tensor:
    """The levels, fp64: ``(n,)`` per tensor, ``(out, n)`` per channel."""
    if not is_per_channel(m):
        return grid.levels(float(m))
    return torch.stack([grid.levels(v) for v in channel_values(m, m.shape[0])])


def level_bounds(grid: Grid, m, dtype: torch.dtype, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``Grid.level_bounds`` per channel: ``(lo, hi)`` each ``(out, n)`` (``(n,)`` per tensor)."""
    if not is_per_channel(m):
        return grid.level_bounds(float(m), dtype, device)
    return _channel_level_bounds(grid, m.detach().reshape(-1, 1).to(device or m.device), dtype)


def _channel_level_bounds(grid: Grid, m: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``Grid.level_bounds``'s bisection run for every channel at once (``m``: ``(out, 1)``): a layer has
    hundreds of channels, each its own range, and one bisection per channel cost seconds a layer. Elementwise
    the same arithmetic as the per-tensor one: ``level_index`` with ``m`` in its own dtype, thresholds in fp64."""
    m64 = m.double()
    th, d = grid.thresholds(m64), grid.delta(m64)
    below, above = (th - d / 2).to(dtype), (th + d / 2).to(dtype)  # levels i and i + 1: a bracket
    below, above = bisect_levels(grid, below, above, m)  # the per-tensor bisection, on every channel at once
    inf = torch.full((m.shape[0], 1), math.inf, dtype=dtype, device=m.device)
    return torch.cat([-inf, above], dim=1), torch.cat([below, inf], dim=1)


def same_level(grid: Grid, out: torch.Tensor, w: torch.Tensor, m) -> torch.Tensor:
    """``Grid.same_level`` with a per-channel ``m``: ``out`` held (within its dtype) on ``w``'s level of
    its own channel's grid, so ``Q(result) == Q(w)`` bit for bit under the per-channel ``quantize``."""
    if not is_per_channel(m):
        return grid.same_level(out, w, float(m))
    lo, hi = level_bounds(grid, m, out.dtype, out.device)
    j = grid.level_index(w, m).reshape(w.shape[0], -1)
    lo_j, hi_j = lo.gather(1, j).reshape(w.shape), hi.gather(1, j).reshape(w.shape)
    return torch.minimum(torch.maximum(out, lo_j), hi_j)


def warp(w: torch.Tensor, m, source: PeriodicEstimator, target: PeriodicEstimator | None,
         extension: str = "shift") -> torch.Tensor:
    """``estimators.warp`` with a per-channel ``m``: ``M_target^{-1}(M_source(w))`` channel by channel,
    each channel on its own range (its thresholds fixed), ``Q(result) == Q(w)`` bit for bit."""
    check_extension(extension)
    if not is_per_channel(m):
        return warp_tensor(w, float(m), source, target, extension)
    # ``estimators.warp`` on every channel at once: ``mirror64`` is elementwise in an fp64 ``m`` (the float
    # arithmetic of each channel's own range), the inverse takes one float range (channel by channel)
    w = w.detach()
    y = source.mirror64(w.to(torch.float64), m.detach().double(), extension)
    if target is not None and not target.is_identity:
        y = torch.stack([target.inverse64(y[c], v, extension) for c, v in enumerate(channel_values(m, w.shape[0]))])
    return same_level(source.grid, y.to(w.dtype), w, m)
