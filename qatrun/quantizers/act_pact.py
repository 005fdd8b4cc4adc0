"""``pact`` activation quantizer (Choi et al. 2018, "PACT: Parameterized Clipping Activation"):

    y = clip(x, 0, alpha),  y_q = round(y * (2^b - 1) / alpha) * alpha / (2^b - 1)      (PACT eq. 1-2)
    dy_q/dalpha = 1 where x >= alpha, else 0;   dy_q/dx = 1 on [0, alpha), else 0      (eq. 3-4, STE)

``alpha`` is an ``nn.Parameter`` trained with the weights (PACT adds an L2 penalty on it: the optimizer's
weight decay). On signed data the clip is symmetric, ``clip(x, -alpha, alpha)`` with ``dy/dalpha = -1``
where ``x < -alpha`` (``act``). ``init_alpha``: a positive number (PACT initialises at a constant), or
``None`` to take the ``percentile`` of ``|x|`` on the first batch. A learned clip is a float parameter both
runs train alike, so the pair stays inside the theorem. State: the parameter ``alpha``, with ``signed`` and
``calibrated``. Pure torch.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from qatrun.quantizers.act import ActivationQuantizer
from qatrun.quantizers.base import ACTIVATIONS, register
from qatrun.quantizers.ranges import RANGE_FLOOR


@register("pact", family=ACTIVATIONS)
class PACT(ActivationQuantizer):
    """``bits``-bit activations under a learned clip ``alpha``."""

    is_learned, is_fixed, in_theorem = True, False, True

    def __init__(self, bits: int, init_alpha: float | None = None, percentile: float = 100.0, estimator="ste"):
        super().__init__(bits, percentile, estimator)
        if init_alpha is not None:
            ok = isinstance(init_alpha, (int, float)) and not isinstance(init_alpha, bool)
            if not (ok and math.isfinite(init_alpha) and init_alpha > 0):
                raise ValueError(f"pact: init_alpha must be a positive number or null (from the first batch), "
                                 f"got {init_alpha!r}")
        self.init_alpha = init_alpha
        # Created now (the optimizer must see it), filled on the first batch when init_alpha is None.
        self.alpha = nn.Parameter(torch.tensor(float(init_alpha if init_alpha is not None else 1.0)))

    def clip(self) -> torch.Tensor:
        return self.alpha.clamp_min(RANGE_FLOOR)  # a clip driven to <= 0 would make Delta 0 (no gradient below)

    def _set_range(self, a: torch.Tensor) -> None:
        if self.init_alpha is None:
            with torch.no_grad():
                self.alpha.copy_(a)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, init_alpha={self.init_alpha}"
