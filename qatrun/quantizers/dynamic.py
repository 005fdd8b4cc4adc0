"""``dynamic``: the range recomputed from the current weights at every forward, with no gradient
through it (the statistic is taken on ``w.detach()`` under ``no_grad``), per tensor or per channel.

* ``max_abs``: ``m = max |w|`` (the min-max observer of most fake-quant stacks, updated every step).
* ``absmean``: ``m = c * mean |w|``. With ``c = 1`` (the default) on the ``symmetric`` 2-bit grid this is
  BitNet b1.58's ternary weight quantizer exactly (Ma et al. 2024, eq. 1-3):
  ``W~ = RoundClip(W / gamma, -1, 1) * gamma``, ``gamma = mean |W|``: levels ``-gamma, 0, gamma``,
  thresholds ``+-gamma / 2``. On more bits ``c`` sets where the clip sits in units of ``mean |w|``.

Both are floored at ``RANGE_FLOOR`` (BitNet's reference code clamps gamma at 1e-5). The range moves
with the weights, so the pair is outside the theorem's fixed grid (``in_theorem = False``). State: the
buffer ``qrange``, the last range used (saved for the weight sample; the forward recomputes it).
Pure torch: no I/O, no config.
"""

from __future__ import annotations

import torch

from qatrun import checks
from qatrun.quant import Grid, _math_dtype
from qatrun.quantizers.base import WeightQuantizer, check_scope, register
from qatrun.quantizers.ranges import RANGE_FLOOR, channel_shape

STATS = ("max_abs", "absmean")


def dynamic_range(w: torch.Tensor, stat: str, per_channel: bool, c: float = 1.0) -> torch.Tensor:
    """The recomputed range of ``w`` (no gradient): 0-dim, or ``(out, 1, ...)`` per channel."""
    with torch.no_grad():
        a = w.detach().to(_math_dtype(w)).abs()
        a = a.reshape(a.shape[0], -1) if per_channel else a.reshape(-1)
        m = a.amax(dim=-1) if stat == "max_abs" else c * a.mean(dim=-1)
        m = m.clamp_min(RANGE_FLOOR)
        return m.reshape(channel_shape(w)) if per_channel else m


@register("dynamic")
class DynamicRange(WeightQuantizer):
    """Range recomputed every forward from the current weights (``stat``, ``scope``, ``c``)."""

    is_learned, is_fixed, in_theorem = False, False, False

    def __init__(self, grid: Grid, weight: torch.Tensor, stat: str = "absmean", scope: str = "tensor",
                 c: float = 1.0):
        super().__init__(grid)
        self.stat = checks.one_of("dynamic stat", stat, STATS, suggest=True)
        self.per_channel = check_scope(scope) == "channel"
        self.c = float(checks.positive("dynamic: absmean factor c", c))
        self.register_buffer("qrange", dynamic_range(weight, self.stat, self.per_channel, self.c))

    def range(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        if weight is None:
            return self.qrange
        m = dynamic_range(weight, self.stat, self.per_channel, self.c)
        with torch.no_grad():
            self.qrange.copy_(m)  # the last range used, for the checkpoint and the weight sample
        return m

    def extra_repr(self) -> str:
        c = f", c={self.c:g}" if self.stat == "absmean" else ""
        return f"{super().extra_repr()}, stat={self.stat}{c}"
