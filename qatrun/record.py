"""What is logged is what is kept: figures go to TensorBoard and the curves the summary and the
report need are kept in one ``history`` (saved in checkpoints and in ``summary.json``).

``curves_of(metrics)`` is the one list of kept curves: per kind of logging point (``log`` every
``trainer.log_every`` steps, ``eval`` every ``trainer.eval_every``), the step key and the figures, from
the figures the selected metrics declare (``qatrun.metrics.names``).
"""

from __future__ import annotations

from qatrun.metrics.names import curves

KINDS = ("log", "eval")


def curves_of(metrics=None) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {kind: (f"{kind}_step", curves(kind, metrics)) for kind in KINDS}


# TensorBoard's Custom Scalars tab: the estimator run and its twin on one chart per figure (the tags stay
# as documented: est/... and twin/...), and every agreement figure (with any baseline whose tag
# contains "agreement") on one chart. Entries are regular expressions over tags.
LAYOUT = {
    "est vs twin": {
        "train loss": ["Multiline", [r"^(est|twin)/loss$"]],
        "test loss": ["Multiline", [r"^(est|twin)/test_loss$"]],
        "test accuracy": ["Multiline", [r"^(est|twin)/test_acc$"]],
        "learning rate (quantized weights)": ["Multiline", [r"^(est|twin)/lr$"]],
    },
    "agreement": {
        "agreement (fraction)": ["Multiline", [r"^pair/.*agreement.*$"]],
        "alignment error": ["Multiline", [r"^pair/alignment_error.*$"]],
    },
}


class Recorder:
    """``record(kind, step, figures)`` writes the figures to ``tb`` (a ``TBLogger`` or None) and keeps
    the curves of that kind that ``metrics`` (registry names; default every one) declare in ``history``."""

    def __init__(self, metrics=None, tb=None):
        self.tb = tb
        self.curves = curves_of(metrics)
        self.history: dict[str, list] = {}
        for step_key, keys in self.curves.values():
            self.history[step_key] = []
            self.history.update({k: [] for k in keys})

    def record(self, kind: str, step: int, figures: dict, keep: bool = True) -> dict:
        if self.tb is not None:
            self.tb.scalars(figures, step)
        if keep:
            step_key, keys = self.curves[kind]
            self.history[step_key].append(step)
            for k in keys:
                if k in figures:
                    self.history[k].append(figures[k])
        return figures

    def state_dict(self) -> dict:
        return self.history

    def load_state_dict(self, history: dict) -> None:
        self.history.clear()
        self.history.update(history)
