"""``channel``: one fixed range per output channel, set once from the initial weight.

``m_c`` = the ``percentile`` of ``|w|`` over output channel ``c`` (nearest rank; 100 = max-abs, the
default observer of per-channel fake quantization in torchao / MQBench). The theorem of
arXiv 2405.05171 applies channel by channel: ``g``, ``alpha`` and ``M`` live in bin coordinates, so
each channel's ``M`` maps it on its own range (``ranges.warp``). A channel whose range is 0 (all its
weights zero) is refused, naming the channel index. Pure torch: no I/O, no config.
"""

from __future__ import annotations

import torch

from qatrun.quant import Grid
from qatrun.quantizers.base import WeightQuantizer, register
from qatrun.quantizers.ranges import channel_max_abs, check_percentile


@register("channel")
class ChannelRange(WeightQuantizer):
    """Fixed per-channel range. State: the buffer ``qrange`` ``(out, 1, ...)`` in the weight's math dtype."""

    is_learned, is_fixed, in_theorem, per_channel = False, True, True, True

    def __init__(self, grid: Grid, weight: torch.Tensor, percentile: float = 100.0):
        super().__init__(grid)
        self.percentile = check_percentile(percentile)
        self.register_buffer("qrange", channel_max_abs(weight, self.percentile))

    def range(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        return self.qrange

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, percentile={self.percentile:g}"
