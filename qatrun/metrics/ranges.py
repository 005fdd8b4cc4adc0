"""The ``ranges`` pair metric: how far the two runs' quantization ranges drifted apart, where they can move.

With a learned (``lsq``) or recomputed (``dynamic``) range each run trains or recomputes its own grid, so
agreeing on a level index means agreeing on a position in a grid that may have moved. ``range_drift`` is
``mean |log(m_est / m_twin)|`` over a layer's ranges (its channels, or its one range), per layer and
averaged over the layers: 0 while both runs keep the same grid, ``log 2`` (0.69) when one run's range is
twice the other's. Fixed ranges never move, so the metric is built only for pairs whose grids can
(``applies``). Pure torch: no I/O, no config.
"""

from __future__ import annotations

import torch

from qatrun.metrics.base import METRICS, Figure, PairMetric


def _log_range(layer) -> torch.Tensor:
    return torch.as_tensor(layer.m, dtype=torch.float64, device=layer.weight.device).log()


@METRICS.register("ranges")
class RangeDrift(PairMetric):
    figures = (Figure("pair/range_drift", "log", True, column=("Range drift |log m ratio|", "err", 95),
                      order=125),)

    @classmethod
    def applies(cls, view) -> bool:
        return not view.fixed

    def compute(self, per_layer: bool = False) -> dict[str, torch.Tensor]:
        per = {name: (_log_range(a) - _log_range(b)).abs().mean()
               for (name, a), (_, b) in zip(self.view.est_layers, self.view.twin_layers)}
        out = {"pair/range_drift": torch.stack(list(per.values())).mean()}
        if per_layer:
            out |= {f"layers/{name}/range_drift": v for name, v in per.items()}
        return out
