"""What a pair metric is: its figures' names and one small interface, selected by name from one registry.

A metric module defines a ``PairMetric`` subclass, registers it (``@METRICS.register("name")``) and
declares its figures beside it (``figures``: one ``Figure`` per summary key, saying whether the key is
kept as a curve, printed at the end of a run, the headline, which untrained-twin baseline stands beside
it and which report-table column shows it). The package imports every module of ``qatrun/metrics/``
by name, so a new metric is one file; ``trainer.metrics`` selects them (``all`` by default) and ``Pair``
loops over the selected ones without naming any.

The interface, all optional but the constructor (every hook runs on every step or evaluation, so none
may sync the host inside ``update``):

* ``__init__(view)``: built from a ``PairView`` (the two runs' quantized layers and the map between them),
  where ``applies(view)`` says the metric means something for that pair;
* ``update(step)``: after each lockstep step; ``compute(per_layer)``: 0-dim device tensors, logged every
  ``trainer.log_every`` steps and written to ``summary.json``;
* ``eval_batch(logits_a, logits_b, labels, loss_a, loss_b)`` and ``eval_compute(all_sum)``: over the test
  set at every evaluation (``all_sum`` sums a tensor over torchrun ranks);
* ``final(history)``: summary-only figures from the logged curves;
* ``start_problem(figures)``: a broken step-0 invariant, in words (or None);
* ``histograms()``: tensors for TensorBoard histograms at each evaluation;
* ``state_dict()`` / ``load_state_dict(state)``: what a checkpoint keeps; ``resident()``: the tensors it
  keeps between steps (for the benchmark's memory figures).

Pure torch: no I/O, no config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, NamedTuple

import torch

from qatrun.registry import Registry

METRICS: Registry = Registry("metric", supplied=("view",))


class Figure(NamedTuple):
    """One figure a run reports, named once."""

    key: str
    curve: str | None = None  # "log" (every trainer.log_every steps) or "eval" (every eval_every): kept in history
    printed: bool = False  # in the end-of-run block
    baseline: str | None = None  # the untrained twin's score of the same figure
    column: tuple[str, str] | None = None  # (header, "frac" or "err") of its column in the report's table
    order: float = 100.0  # where it stands among printed lines and table columns (smaller first)


@dataclass(frozen=True)
class PairView:
    """What a pair metric is built from: each run's quantized layers ``[(name, layer), ...]``, in module order,
    ``to_twin`` (an estimator-run layer -> its weights in the twin's coordinates, or None where the estimators
    have no mirror map), ``use_mirror`` (whether the twin's init went through that map) and ``fixed`` (whether
    every range of both runs stays where it started; where one moves, the alignment through M is not
    defined)."""

    est_layers: list
    twin_layers: list
    to_twin: Callable | None
    use_mirror: bool
    fixed: bool = True  # every range of both runs fixed (the theorem's grid); False: learned or recomputed

    @property
    def device(self) -> torch.device:
        return self.est_layers[0][1].weight.device


class PairMetric:
    """Base of the pair metrics: every hook does nothing, so a metric implements only what it measures."""

    figures: ClassVar[tuple[Figure, ...]] = ()
    section: ClassVar[str] = ""  # the benchmark's name for its per-step time (default: the registry name)
    every_rank: ClassVar[bool] = False  # built on every torchrun rank (its hooks run collectives), not rank 0 only

    def __init__(self, view: PairView):
        self.view = view

    @classmethod
    def applies(cls, view: PairView) -> bool:
        """Whether this metric means anything for this pair (a range drift needs a range that moves)."""
        return True

    def update(self, step: int) -> None:
        pass

    def compute(self, per_layer: bool = False) -> dict[str, torch.Tensor]:
        return {}

    def eval_batch(self, logits_a, logits_b, labels, loss_a, loss_b) -> None:
        pass

    def eval_compute(self, all_sum=None) -> dict[str, torch.Tensor]:
        return {}

    def final(self, history: dict) -> dict[str, float]:
        return {}

    def start_problem(self, figures: dict) -> str | None:
        return None

    def histograms(self) -> dict[str, torch.Tensor]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def resident(self) -> list[torch.Tensor]:
        return []


ALL = "all"


def select(names) -> list[str]:
    """The metrics ``trainer.metrics`` names: ``all`` (every registered one, in name order) or a list of names."""
    if names == ALL or names == [ALL]:
        return METRICS.names()
    names = [names] if isinstance(names, str) else list(names)
    for n in names:
        METRICS.get(n)  # an unknown name: one line listing the valid ones
    if len(set(names)) != len(names):
        raise ValueError(f"trainer.metrics names a metric twice: {names}")
    return names
