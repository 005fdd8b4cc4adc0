"""Weight-level figures of a pair: quantized agreement and alignment of the two runs' quantized weights.

The alignment error compares ``map(w_est)`` with ``w_twin`` (``map`` = the mirror map ``M`` when
the twin was warped, arXiv 2405.05171; the identity otherwise) relative to the distance the twin
travelled. Everything stays on the device; ``compute`` returns 0-dim tensors.
"""

from __future__ import annotations

import torch


class WeightComparer:
    """Quantized agreement and alignment between two runs' quantized weights, all on the device.

    ``init_map`` is the map the twin's init went through (``M`` or identity); the alignment error
    is ``sum |map(w_est) - w_twin| / m`` over the twin's distance travelled,
    ``sum_t sum |w_twin(t+1) - w_twin(t)| / m``, which ``accumulate`` adds every step. ``to_twin``
    (a function of an estimator-run layer) replaces ``map`` when given: for an A-B pair it is
    ``M_B^{-1}(M_A(w_est))``, so both sides are in the twin's own coordinates.
    """

    def __init__(self, est_layers, twin_layers, use_mirror: bool, to_twin=None):
        self.names = [n for n, _ in est_layers]
        self.est = [l for _, l in est_layers]
        self.twin = [l for _, l in twin_layers]
        self.use_mirror = use_mirror
        self.to_twin = to_twin  # layer -> its weights in the twin's coordinates (an A-B pair's M_B^{-1}(M_A(w)))
        dev = self.twin[0].weight.device
        self.inv_m = [1.0 / l.m for l in self.twin]
        self.travelled = torch.zeros((), dtype=torch.float64, device=dev)
        self._prev = [l.weight.detach().clone() for l in self.twin]

    @torch.no_grad()
    def accumulate(self):
        """Add this step's twin movement to the distance travelled (no host sync)."""
        cur = [l.weight.detach() for l in self.twin]
        diffs = torch._foreach_sub(cur, self._prev)
        torch._foreach_abs_(diffs)
        norms = torch._foreach_norm(diffs, 1)
        self.travelled += torch.stack([n.double() * s for n, s in zip(norms, self.inv_m)]).sum()
        torch._foreach_copy_(self._prev, cur)

    def mapped(self, layer) -> torch.Tensor:
        w = layer.weight.detach()
        if self.to_twin is not None:
            return self.to_twin(layer)
        return layer.estimator.mirror(w, layer.m) if self.use_mirror else w

    @torch.no_grad()
    def compute(self) -> dict[str, torch.Tensor]:
        """0-dim tensors: overall and per-layer agreement, alignment distance and error."""
        out, agree, total, dist = {}, 0, 0, 0
        for name, le, lt, inv_m in zip(self.names, self.est, self.twin, self.inv_m):
            g = le.grid
            same = (g.level_index(le.weight, le.m) == g.level_index(lt.weight, lt.m)).sum()
            d = (self.mapped(le).double() - lt.weight.double()).abs().sum() * inv_m
            out[f"layers/{name}/quantized_agreement"] = same / le.weight.numel()
            agree, total, dist = agree + same, total + le.weight.numel(), dist + d
        out["pair/quantized_agreement"] = agree / total
        out["pair/alignment_distance"] = dist
        out["pair/distance_travelled"] = self.travelled.clone()
        out["pair/alignment_error"] = torch.where(self.travelled > 0, dist / self.travelled, torch.zeros_like(dist))
        return out

    @torch.no_grad()
    def residuals(self) -> dict[str, torch.Tensor]:
        """Per layer ``map(w_est) - w_twin`` (for histograms)."""
        return {n: (self.mapped(le) - lt.weight.detach()).flatten() for n, le, lt in zip(self.names, self.est, self.twin)}

    def state_tensors(self):
        """The tensors kept between steps (the distance so far and the twin's previous weights)."""
        return [self.travelled, *self._prev]

    def state_dict(self):
        return {"travelled": self.travelled.clone(), "prev": [p.clone() for p in self._prev]}

    def load_state_dict(self, state):
        self.travelled.copy_(state["travelled"])
        for p, s in zip(self._prev, state["prev"]):
            p.copy_(s)
