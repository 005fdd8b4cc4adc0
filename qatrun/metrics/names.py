"""Every figure a run reports, named once: the run's own figures here, each pair metric's beside its class.

Whether a figure is kept as a curve, printed at the end of a run, the headline, which untrained-twin
baseline stands beside it and which column of the report's table shows it (``Figure``).
``record.curves_of`` (what the history keeps), the end-of-run block, TensorBoard's HParams (the headline
first), the report's table and its verdicts (``HEADLINE``) read these functions, which collect the
registered metrics' figures when called (a metric registered later is included).
``upgrade_summary`` reads a summary written under older names under the current ones.
"""

from __future__ import annotations

from qatrun.metrics.base import METRICS, Figure

HEADLINE = "pair/mover_agreement"  # agreement over the weights that moved: what the verdicts judge
RUN_FIGURES = (  # each run's own figures and the pair's settings, whatever metrics are selected
    Figure("est/loss", "log", order=200),
    Figure("twin/loss", "log", order=201),
    Figure("est/test_loss", "eval", order=202),
    Figure("twin/test_loss", "eval", order=203),
    Figure("est/test_acc", "eval", True, column=("Est. accuracy", "frac", 140), order=150),
    Figure("twin/test_acc", "eval", True, column=("Twin accuracy", "frac", 150), order=160),
    Figure("alpha", None, True, order=170),
    Figure("twin_lr_factor", None, True, order=180),
    Figure("twin_init", None, True, order=190),
)


def figures(metrics=None) -> list[Figure]:
    """The run's figures and those of ``metrics`` (registry names; default every registered one), in order."""
    names = METRICS.names() if metrics is None else metrics
    out = list(RUN_FIGURES) + [f for n in names for f in METRICS.get(n).figures]
    return sorted(out, key=lambda f: f.order)


def curves(kind: str, metrics=None) -> tuple[str, ...]:
    return tuple(f.key for f in figures(metrics) if f.curve == kind)


def printed(metrics=None) -> list[tuple[str, str | None]]:
    """(figure, its baseline or None), in print order."""
    return [(f.key, f.baseline) for f in figures(metrics) if f.printed]


def columns(metrics=None) -> dict[str, list]:
    """The report table's columns: ``{key: [header, kind, position]}``."""
    return {f.key: list(f.column) for f in figures(metrics) if f.column is not None}


def headline_first(keys) -> list[str]:
    """``keys`` with the headline figure first (HParams, tables), the rest in their given order."""
    keys = list(keys)
    return sorted(keys, key=lambda k: k != HEADLINE)


# Summaries written while "_compressed" meant the backtrack rule (x-y-x -> x).
_RENAMED = {"pair/sequence_agreement_compressed": "pair/sequence_agreement_backtrack",
            "pair/changepoint_error_compressed": "pair/changepoint_error_backtrack"}


def upgrade_summary(summary: dict) -> dict:
    """A run's parsed ``summary.json`` under the current names (a copy; the input is not changed).

    A summary with ``pair/sequence_agreement_compressed`` but no ``pair/sequence_agreement_backtrack``
    was written when "compressed" meant the backtrack rule (x-y-x -> x): its
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
