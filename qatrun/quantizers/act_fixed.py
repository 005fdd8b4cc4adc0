"""``fixed`` activation quantizer: the range ``a`` calibrated once, on the first batch, as the
``percentile`` of ``|x|`` (nearest rank; 100 = max-abs), then fixed. A fixed part of the function both
runs of a pair share, so the pair stays inside the theorem of arXiv 2405.05171.
State: the buffer ``arange`` (0-dim fp32), with ``signed`` and ``calibrated``. Pure torch.
"""

from __future__ import annotations

import torch

from qatrun.quantizers.act import ActivationQuantizer
from qatrun.quantizers.base import ACTIVATIONS, register


@register("fixed", family=ACTIVATIONS)
class FixedActivation(ActivationQuantizer):
    """``bits``-bit activations on a range set from the first batch (``percentile``), then fixed."""

    is_learned, is_fixed, in_theorem = False, True, True

    def __init__(self, bits: int, percentile: float = 100.0, estimator="ste"):
        super().__init__(bits, percentile, estimator)
        self.register_buffer("arange", torch.ones(()))

    def clip(self) -> torch.Tensor:
        return self.arange

    def _set_range(self, a: torch.Tensor) -> None:
        with torch.no_grad():
            self.arange.copy_(a)
