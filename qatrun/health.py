"""Divergence is a finding, not a result: the rule that flags a run whose training blew up.

A run (the estimator run or its twin) has diverged when its training loss ends more than
``LOSS_RATIO`` times above its first logged value, or when its test accuracy ends at chance
(at most ``CHANCE_MARGIN`` above ``1 / num_classes``) while its loss did not go down. A pair of two
networks at chance agrees on most weights for no reason, so its figures mean nothing: the summary
says ``diverged: true`` and why, the command exits with ``EXIT_DIVERGED``, and ``qatrun-report``
keeps it out of its tables, verdicts and lr law, with a line saying so.
"""

from __future__ import annotations

LOSS_RATIO = 3.0
CHANCE_MARGIN = 0.02
EXIT_DIVERGED = 3


def divergence(history: dict, final: dict, runs, num_classes: int) -> str | None:
    """Why the pair diverged (one sentence), or None. ``history``: the logged curves; ``final``: the
    final figures (``<run>/test_acc``); ``runs``: ``("est", "twin")`` or ``("est",)``."""
    why = []
    for run in runs:
        losses = [v for v in history.get(f"{run}/loss", []) if v is not None]
        first, last = (losses[0], losses[-1]) if losses else (None, None)
        acc = final.get(f"{run}/test_acc")
        if first is not None and last > LOSS_RATIO * first:
            why.append(f"the {run} run's training loss ended at {last:.4g}, {last / first:.3g}x its first value "
                       f"{first:.4g} (the rule: more than {LOSS_RATIO:g}x)")
        elif acc is not None and acc <= 1 / num_classes + CHANCE_MARGIN and (first is None or last >= first):
            why.append(f"the {run} run's test accuracy ended at chance ({acc:.4g}, 1/{num_classes} classes) "
                       "and its loss did not go down")
    return "; ".join(why) or None
