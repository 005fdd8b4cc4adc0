"""Divergence is a finding, not a result: the rule that flags a run whose training blew up.

The reference is where the run started: its test loss at step 0, measured before the first update
(``eval_step`` 0), or ``ln(num_classes)`` (the loss of a network that predicts nothing) if higher. A run
without a step-0 measurement (an older history) falls back to its first logged training loss, which a run
that exploded within its first ``log_every`` steps has already left: lr 3 on MNIST logs 28.8 at step 10
against 2.35 at step 0. A run (the estimator run or its twin) has diverged when

* its training loss ends more than ``LOSS_RATIO`` times above the reference;
* its test accuracy ends at chance (at most ``CHANCE_MARGIN`` above ``1 / num_classes``) after a logged
  loss (training, or test after step 0) went more than ``LOSS_RATIO`` times above the reference: it
  exploded and settled at chance, where its loss looks tame again (lr 3: 3.65 at the end, 8.5% accuracy);
* or its test accuracy ends at chance with a training loss above ``CHANCE_LOSS_RATIO`` times
  ``ln(num_classes)`` (a run that exploded at once and came partly back).

A pair of two networks at chance agrees on most weights for no reason, so its figures mean nothing:
the summary says ``diverged: true`` and why, the command exits with ``EXIT_DIVERGED``, and
``qatrun-report`` keeps it out of its tables, verdicts and lr law, with a line saying so. A short run
that has not learned yet (loss near where it started, never far above) is not flagged.
"""

from __future__ import annotations

import math

LOSS_RATIO = 3.0
CHANCE_LOSS_RATIO = 10.0
CHANCE_MARGIN = 0.02
EXIT_DIVERGED = 3


def _finite(values) -> list[float]:
    return [v for v in values or [] if isinstance(v, (int, float)) and math.isfinite(v)]


def reference(history: dict, run: str, num_classes: int) -> tuple[float, str]:
    """Where ``run`` started, and in words where that figure comes from (see the module docstring)."""
    steps, test = history.get("eval_step") or [], history.get(f"{run}/test_loss") or []
    ln_c = math.log(num_classes)
    if steps and test and steps[0] == 0 and _finite(test[:1]):
        return max(ln_c, test[0]), f"its test loss at step 0 or ln {num_classes}, the larger"
    return max([ln_c] + _finite(history.get(f"{run}/loss"))[:1]), f"its first logged loss or ln {num_classes}, the larger"


def run_divergence(history: dict, acc, run: str, num_classes: int) -> str | None:
    """Why ``run`` diverged (a clause), or None; ``acc`` is its final test accuracy."""
    losses = _finite(history.get(f"{run}/loss"))
    if not losses:
        return None
    ref, source = reference(history, run, num_classes)
    last, ln_c = losses[-1], math.log(num_classes)
    peak = max(losses + _finite((history.get(f"{run}/test_loss") or [])[1:]))
    chance = acc is not None and acc <= 1 / num_classes + CHANCE_MARGIN
    if last > LOSS_RATIO * ref:
        return (f"the {run} run's training loss ended at {last:.4g}, {last / ref:.3g}x where it started ({ref:.4g}: "
                f"{source}; the rule: more than {LOSS_RATIO:g}x)")
    if chance and peak > LOSS_RATIO * ref:
        return (f"the {run} run's loss went up to {peak:.4g}, {peak / ref:.3g}x where it started ({ref:.4g}: {source}), "
                f"and its test accuracy ended at chance ({acc:.4g}, 1/{num_classes} classes; the rule: a loss more "
                f"than {LOSS_RATIO:g}x on the way, chance at the end)")
    if chance and last > CHANCE_LOSS_RATIO * ln_c:
        return (f"the {run} run's test accuracy ended at chance ({acc:.4g}, 1/{num_classes} classes) with a training "
                f"loss of {last:.4g}, {last / ln_c:.3g}x ln {num_classes} (the rule: more than {CHANCE_LOSS_RATIO:g}x)")
    return None


def divergence(history: dict, final: dict, runs, num_classes: int) -> str | None:
    """Why the pair diverged (one sentence), or None. ``history``: the logged curves; ``final``: the
    final figures (``<run>/test_acc``); ``runs``: ``("est", "twin")`` or ``("est",)``."""
    why = [run_divergence(history, final.get(f"{run}/test_acc"), run, num_classes) for run in runs]
    return "; ".join(w for w in why if w) or None
