"""Every figure a run reports, named once: whether it is kept as a curve, printed at the end of a run,
the headline, and which untrained-twin baseline stands beside it (docs/metrics.md, "Metric definitions").

``record.CURVES`` (what the history keeps), ``train.summary_lines`` (the end-of-run block), TensorBoard's
HParams (the headline first) and the report's verdicts (``HEADLINE``) read this table. ``upgrade_summary``
reads a summary written under older names under today's.
"""

from __future__ import annotations

from typing import NamedTuple


class Metric(NamedTuple):
    key: str
    curve: str | None = None  # "log" (every trainer.log_every steps) or "eval" (every eval_every): kept in history
    printed: bool = False  # in the end-of-run block
    baseline: str | None = None  # the untrained twin's score of the same figure


HEADLINE = "pair/mover_agreement"  # agreement over the weights that moved: what the verdicts judge
METRICS = (
    Metric("pair/quantized_agreement", "log", True, "pair/quantized_agreement_untrained"),
    Metric("pair/mover_fraction", "log", True),
    Metric("pair/mover_agreement", "log", True, "pair/mover_agreement_untrained"),
    Metric("pair/mover_sequence_agreement", None, True, "pair/mover_sequence_agreement_untrained"),
    # change points (written once, at the end): "_compressed" is the paper's rule (x-y-x-y -> x-y until none
    # is left), "_backtrack" qatrun's earlier one (x-y-x -> x); summaries before issue #21: upgrade_summary
    Metric("pair/sequence_agreement", None, False, "pair/sequence_agreement_untrained"),
    Metric("pair/sequence_agreement_compressed"),
    Metric("pair/sequence_agreement_backtrack"),
    Metric("pair/changepoint_error"),
    Metric("pair/changepoint_error_compressed"),
    Metric("pair/changepoint_error_backtrack"),
    Metric("pair/alignment_error", "log", True),
    Metric("pair/alignment_error_mirror", "log", True),
    Metric("pair/alignment_error_identity", "log", True),
    Metric("pair/inference_agreement", None, True),
    Metric("pair/logit_mse", None, True),
    Metric("est/loss", "log"),
    Metric("twin/loss", "log"),
    Metric("est/test_loss", "eval"),
    Metric("twin/test_loss", "eval"),
    Metric("est/test_acc", "eval", True),
    Metric("twin/test_acc", "eval", True),
    Metric("pair/mover_agreement_untrained", "log"),
    Metric("pair/quantized_agreement_untrained", "log"),
    Metric("alpha", None, True),
    Metric("twin_lr_factor", None, True),
    Metric("twin_init", None, True),
)
BY_KEY = {m.key: m for m in METRICS}


def curves(kind: str) -> tuple[str, ...]:
    return tuple(m.key for m in METRICS if m.curve == kind)


def printed() -> list[tuple[str, str | None]]:
    """(figure, its baseline or None), in print order."""
    return [(m.key, m.baseline) for m in METRICS if m.printed]


def headline_first(keys) -> list[str]:
    """``keys`` with the headline figure first (HParams, tables), the rest in their given order."""
    keys = list(keys)
    return sorted(keys, key=lambda k: k != HEADLINE)


# Before issue #21 the "_compressed" change-point figures were computed with the backtrack rule.
_RENAMED = {"pair/sequence_agreement_compressed": "pair/sequence_agreement_backtrack",
            "pair/changepoint_error_compressed": "pair/changepoint_error_backtrack"}


def upgrade_summary(summary: dict) -> dict:
    """A run's parsed ``summary.json`` under today's names (a copy; the input is not changed).

    A summary with ``pair/sequence_agreement_compressed`` but no ``pair/sequence_agreement_backtrack``
    was written before issue #21, when "compressed" meant the backtrack rule (x-y-x -> x): its
    ``pair/sequence_agreement_compressed``, ``pair/changepoint_error_compressed`` and any variant of
    them (``..._compressed_untrained``) move, in place, to the ``_backtrack`` names, and the
    ``_compressed`` ones are absent, since the paper's rule was not computed then. Any other summary
    comes back as it is. Only the top-level figures: the change-point figures are never curves.
    """
    if "pair/sequence_agreement_compressed" not in summary or "pair/sequence_agreement_backtrack" in summary:
        return dict(summary)

    def new_name(key: str) -> str:
        for old, new in _RENAMED.items():
            if key.startswith(old):  # the figure itself, or a variant such as old + "_untrained"
                return new + key[len(old):]
        return key

    return {new_name(k): v for k, v in summary.items()}
