"""Divergence is a finding, not a result: the rule that flags a run whose training blew up.

The reference is where the run started: the larger of its first logged training loss and the loss of
a network that predicts nothing, ``ln(num_classes)`` (an untrained network with large initial logits
starts above that). A run (the estimator run or its twin) has diverged when its training loss ends
more than ``LOSS_RATIO`` times above the reference, or when its test accuracy ends at chance (at most
``CHANCE_MARGIN`` above ``1 / num_classes``) with a training loss above ``CHANCE_LOSS_RATIO`` times
``ln(num_classes)`` (a run that exploded at once and came partly back: its first logged loss is no guide).
A pair of two networks at chance agrees on most weights for no reason, so its figures mean nothing:
the summary says ``diverged: true`` and why, the command exits with ``EXIT_DIVERGED``, and
``qatrun-report`` keeps it out of its tables, verdicts and lr law, with a line saying so. A short run
that has not learned yet (loss near ``ln(C)``) is not flagged.
"""

from __future__ import annotations

import math

LOSS_RATIO = 3.0
CHANCE_LOSS_RATIO = 10.0
CHANCE_MARGIN = 0.02
EXIT_DIVERGED = 3


def divergence(history: dict, final: dict, runs, num_classes: int) -> str | None:
    """Why the pair diverged (one sentence), or None. ``history``: the logged curves; ``final``: the
    final figures (``<run>/test_acc``); ``runs``: ``("est", "twin")`` or ``("est",)``."""
    why = []
    for run in runs:
        losses = [v for v in history.get(f"{run}/loss", []) if v is not None]
        last, acc = (losses[-1] if losses else None), final.get(f"{run}/test_acc")
        ref = max([math.log(num_classes)] + losses[:1])
        if last is not None and last > LOSS_RATIO * ref:
            why.append(f"the {run} run's training loss ended at {last:.4g}, {last / ref:.3g}x where it started "
                       f"({ref:.4g}: its first logged loss or ln {num_classes}, the larger; the rule: more than "
                       f"{LOSS_RATIO:g}x)")
        elif acc is not None and acc <= 1 / num_classes + CHANCE_MARGIN and last is not None \
                and last > CHANCE_LOSS_RATIO * math.log(num_classes):
            why.append(f"the {run} run's test accuracy ended at chance ({acc:.4g}, 1/{num_classes} classes) with a "
                       f"training loss of {last:.4g}, {last / math.log(num_classes):.3g}x ln {num_classes} (the rule: "
                       f"more than {CHANCE_LOSS_RATIO:g}x)")
    return "; ".join(why) or None
