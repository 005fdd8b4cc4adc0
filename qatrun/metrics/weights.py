"""Weight-level figures of a pair: quantized agreement and alignment of the two runs' quantized weights.

The alignment error compares ``map(w_est)`` with ``w_twin`` (``map`` = the mirror map ``M`` when
the twin was warped, arXiv 2405.05171; the identity otherwise) relative to the distance the twin
travelled. Everything stays on the device; ``compute`` returns 0-dim tensors.
"""

from __future__ import annotations

import torch

from qatrun.metrics.base import METRICS, Figure, PairMetric


def _range64(layer) -> torch.Tensor:
    """A layer's current range as an fp64 tensor that broadcasts over its weight (per tensor or per channel)."""
    return torch.as_tensor(layer.m, dtype=torch.float64, device=layer.weight.device)


class WeightComparer:
    """Quantized agreement and alignment between two runs' quantized weights, all on the device.

    The alignment error is ``sum |map(w_est) - w_twin| / m`` over the twin's distance travelled,
    ``sum_t sum |w_twin(t+1) - w_twin(t)| / m``, which ``accumulate`` adds every step. ``to_twin``
    (layer -> its weights in the twin's coordinates: ``M(w)`` for an STE twin, ``M_B^{-1}(M_A(w))``
    for an A-B pair; None when no map exists) is the "mirror" map; ``use_mirror`` says whether the
    twin's init went through it (then it is the headline map, else the identity is).
    """

    def __init__(self, est_layers, twin_layers, use_mirror: bool, to_twin=None, fixed: bool = True):
        self.names = [n for n, _ in est_layers]
        self.est = [l for _, l in est_layers]
        self.twin = [l for _, l in twin_layers]
        self.use_mirror = use_mirror
        self.to_twin = to_twin
        if use_mirror and to_twin is None:
            raise ValueError("a warped twin needs its map (to_twin)")
        dev = self.twin[0].weight.device
        # Fixed per-tensor ranges (floats): one scale per layer. A range per channel, or one that moves, divides
        # each weight by its own current range. Where a grid moves the alignment is not defined (``fixed``).
        self.fixed = fixed
        self.scalar = fixed and all(isinstance(l.m, float) for l in self.twin)
        self.inv_m = [1.0 / l.m for l in self.twin] if self.scalar else None
        self.travelled = torch.zeros((), dtype=torch.float64, device=dev)
        self._prev = [l.weight.detach().clone() for l in self.twin]

    @torch.no_grad()
    def accumulate(self):
        """Add this step's twin movement to the distance travelled (no host sync)."""
        cur = [l.weight.detach() for l in self.twin]
        diffs = torch._foreach_sub(cur, self._prev)
        torch._foreach_abs_(diffs)
        if self.scalar:
            norms = torch._foreach_norm(diffs, 1)
            self.travelled += torch.stack([n.double() * s for n, s in zip(norms, self.inv_m)]).sum()
        else:
            self.travelled += torch.stack([(d.double() / _range64(l)).sum() for d, l in zip(diffs, self.twin)]).sum()
        torch._foreach_copy_(self._prev, cur)

    def mapped(self, layer) -> torch.Tensor:
        """``map(w)`` of an estimator-run layer: the init map the twin went through."""
        return self._map(layer, self.use_mirror)

    def _map(self, layer, mirror: bool) -> torch.Tensor:
        return self.to_twin(layer) if mirror else layer.weight.detach()

    @torch.no_grad()
    def compute(self) -> dict[str, torch.Tensor]:
        """0-dim tensors: overall and per-layer agreement, alignment distance and error.

        ``pair/alignment_error`` (the headline) goes through the map the twin's init went through.
        Where the estimator has a mirror map, both versions are given under their own names,
        ``pair/alignment_error_mirror`` (through ``M``) and ``pair/alignment_error_identity``, so a
        warped pair and its no-warp control can be compared on the same quantity.
        """
        maps = {"identity": False, "mirror": True} if self.to_twin is not None else {"identity": False}
        out, agree, total = {}, 0, 0
        dist = {k: 0 for k in maps}
        for i, (name, le, lt) in enumerate(zip(self.names, self.est, self.twin)):
            g = le.grid
            same = (g.level_index(le.weight, le.m) == g.level_index(lt.weight, lt.m)).sum()
            out[f"layers/{name}/quantized_agreement"] = same / le.weight.numel()
            agree, total = agree + same, total + le.weight.numel()
            for k, mirror in maps.items():
                gap = (self._map(le, mirror).double() - lt.weight.double()).abs()
                dist[k] = dist[k] + (gap.sum() * self.inv_m[i] if self.scalar else (gap / _range64(lt)).sum())
        out["pair/quantized_agreement"] = agree / total
        out["pair/quantized_mismatches"] = total - agree  # an integer: the step-0 check needs no division
        out["pair/distance_travelled"] = self.travelled.clone()
        # over zero distance travelled the error is 0/0: NaN (null in summary.json), never a perfect 0.0
        defined = self.travelled > 0 if self.fixed else torch.zeros((), dtype=torch.bool, device=self.travelled.device)
        error = lambda d: torch.where(defined, d / self.travelled, torch.full_like(d, float("nan")))
        for k in maps:
            out[f"pair/alignment_distance_{k}"] = dist[k]
            out[f"pair/alignment_error_{k}"] = error(dist[k])
        headline = "mirror" if self.use_mirror else "identity"
        out["pair/alignment_distance"] = dist[headline]
        out["pair/alignment_error"] = error(dist[headline])
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


@METRICS.register("weights")
class WeightAgreement(PairMetric):
    """Quantized agreement and alignment (``WeightComparer``), with the step-0 invariant of a fixed grid: a
    twin starts on the estimator run's levels and at its mapped weights, or its init map is wrong. Where a
    grid moves the alignment through M is not defined (null, never 0)."""

    section = "accumulate"
    figures = (
        Figure("pair/quantized_agreement", "log", True, "pair/quantized_agreement_untrained",
               ("Quantized agreement", "frac", 60), order=0),
        Figure("pair/alignment_error", "log", True, order=100),
        Figure("pair/alignment_error_mirror", "log", True, column=("Alignment error through M", "err", 80), order=110),
        Figure("pair/alignment_error_identity", "log", True, column=("Alignment error, identity", "err", 90),
               order=120),
    )

    def __init__(self, view):
        super().__init__(view)
        self.comparer = WeightComparer(view.est_layers, view.twin_layers, view.use_mirror, view.to_twin, view.fixed)

    def update(self, step: int) -> None:
        self.comparer.accumulate()

    def compute(self, per_layer: bool = False) -> dict[str, torch.Tensor]:
        return self.comparer.compute()

    def start_problem(self, figures: dict) -> str | None:
        if not self.view.fixed:  # a range recomputed from each run's own weights (absmean) differs from the start
            return None
        if figures["pair/quantized_mismatches"] == 0 and figures["pair/alignment_distance"] == 0.0:  # in integers
            return None
        return (f"quantized agreement {figures['pair/quantized_agreement']} (must be 1) and alignment distance "
                f"{figures['pair/alignment_distance']} (must be 0)")

    def histograms(self) -> dict[str, torch.Tensor]:
        return {f"layers/{n}/alignment_residual": r for n, r in self.comparer.residuals().items()}

    def state_dict(self) -> dict:
        return self.comparer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.comparer.load_state_dict(state)

    def resident(self) -> list[torch.Tensor]:
        return list(self.comparer.state_tensors())
