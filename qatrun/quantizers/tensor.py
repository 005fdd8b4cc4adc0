"""``tensor``: one fixed range per tensor, the paper's grid (arXiv 2405.05171's setting) and the default.

``m = sqrt(6 / fan_in)`` (He-uniform) on the ``he_uniform`` grid, the initial max-abs on ``symmetric``,
or a given ``scale``: exactly ``Grid.init_range``. ``range()`` is that Python float, so a layer using
this quantizer runs bit for bit the arithmetic of a fixed-range layer (``quant.Grid`` with a float ``m``). Pure torch: no I/O, no config.
"""

from __future__ import annotations

import torch

from qatrun.quant import Grid
from qatrun.quantizers.base import WeightQuantizer, register


@register("tensor")
class TensorRange(WeightQuantizer):
    """Fixed per-tensor range. State: the buffer ``qrange`` (fp64, 0-dim: the float ``m`` exactly)."""

    is_learned, is_fixed, in_theorem, per_channel = False, True, True, False

    def __init__(self, grid: Grid, weight: torch.Tensor, scale: float | None = None):
        super().__init__(grid)
        self._m = grid.init_range(weight, scale)
        self.register_buffer("qrange", torch.tensor(self._m, dtype=torch.float64, device=weight.device))

    def range(self, weight: torch.Tensor | None = None) -> float:
        return self._m

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._m = float(self.qrange)  # the float the forward uses follows the loaded buffer (fp64: exact)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, m={self._m:.4g}"
