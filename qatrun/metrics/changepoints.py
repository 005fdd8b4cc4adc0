"""The ``changepoints`` pair metric: every weight's level sequence in both runs, online (arXiv 2405.05171's
change-point and sequence agreement; the tracker's math and rules are in ``qatrun.metrics.tracker``).

Besides the sequence figures it gives two families the verdicts rest on:

* **Movers**: weights whose level changed at least once in either run; the claim is about them (most
  weights of a short run never change level, and those agree trivially). ``mover_fraction``; over movers
  only: ``mover_agreement`` (same final level) and ``mover_sequence_agreement`` (identical exact
  sequences). The change-point error needs no mover version: a weight that never changed adds nothing
  to either of its sums.
* **Untrained-twin baselines**: what a twin that never trained would score (its levels stay the initial
  ones, which both runs share): ``quantized_agreement_untrained`` (run a's final level equals its initial
  level), ``sequence_agreement_untrained`` (run a never changed) and their mover versions.

Logged figures carry per-layer mover figures (``layers/<name>/...``); the summary has the overall ones.
"""

from __future__ import annotations

import torch

from qatrun.metrics.base import METRICS, Figure, PairMetric
from qatrun.metrics.tracker import ChangePointTracker


def levels(layers) -> list[torch.Tensor]:
    """Level index of every quantized weight, per layer (int16, on the device)."""
    return [l.grid.level_index(l.weight.detach(), l.m).to(torch.int16) for _, l in layers]


@METRICS.register("changepoints")
class ChangePoints(PairMetric):
    section = "tracker"
    figures = (
        Figure("pair/mover_fraction", "log", True, column=("Movers", "frac", 10), order=10),
        Figure("pair/mover_agreement", "log", True, "pair/mover_agreement_untrained",
               ("Mover agreement", "frac", 20), order=20),
        Figure("pair/mover_agreement_untrained", "log", column=("Mover agr., untrained twin", "frac", 30), order=210),
        Figure("pair/mover_sequence_agreement", None, True, "pair/mover_sequence_agreement_untrained",
               ("Mover sequence agreement", "frac", 40), order=30),
        # "_compressed" is the paper's rule (x-y-x-y -> x-y until none is left), "_backtrack" qatrun's
        # other one (x-y-x -> x): both kept so either can be compared with the exact sequences
        Figure("pair/sequence_agreement", None, False, "pair/sequence_agreement_untrained", order=40),
        Figure("pair/sequence_agreement_compressed", order=41),
        Figure("pair/sequence_agreement_backtrack", order=42),
        Figure("pair/changepoint_error", column=("Change-point error (steps)", "err", 50), order=50),
        Figure("pair/changepoint_error_compressed", order=51),
        Figure("pair/changepoint_error_backtrack", order=52),
        Figure("pair/quantized_agreement_untrained", "log", column=("Quantized agr., untrained twin", "frac", 70),
               order=220),
    )

    def __init__(self, view):
        super().__init__(view)
        self.tracker = ChangePointTracker(levels(view.est_layers), levels(view.twin_layers))
        self.names = [n for n, _ in view.est_layers]

    def update(self, step: int) -> None:
        self.tracker.update(step + 1, levels(self.view.est_layers), levels(self.view.twin_layers))

    def compute(self, per_layer: bool = False) -> dict[str, torch.Tensor]:
        figs = self.tracker.compute(self.names if per_layer else None)
        return {(f"layers/{k}" if "/" in k else f"pair/{k}"): v for k, v in figs.items()}

    def state_dict(self) -> dict:
        return self.tracker.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.tracker.load_state_dict(state)

    def resident(self) -> list[torch.Tensor]:
        return list(self.tracker.state.values())
