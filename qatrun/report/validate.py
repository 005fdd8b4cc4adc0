"""The fields of a run's summary and config that the report reads, each with what it must hold.

``runs.summary_problem`` checks a summary's shape (an object with ``steps``, ``seed`` and ``estimator``,
figures numbers); ``field_problem`` checks the rest of what the tables, labels, figures and verdicts read,
so that one copied or hand-edited run is skipped with a note naming its field instead of stopping the
report halfway (a string in a curve, ``optimizer.lr: fast``, a negative step count).
"""

from __future__ import annotations

import math


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# kind -> (test of a non-null value, what is valid, in words)
KINDS = {
    "number": (_number, "a number or null"),
    "positive": (lambda v: _number(v) and v > 0 and math.isfinite(v), "a positive finite number or null"),
    "count": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "bits": (lambda v: _integer(v) and v > 0, "a positive integer or null"),
    "integer": (_integer, "an integer or null"),
    "text": (lambda v: isinstance(v, str), "a string or null"),
    "flag": (lambda v: isinstance(v, bool), "true, false or null"),
    "names": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings or null"),
}

# Summary keys the report reads beside the figures (names, labels, the divergence note, figure titles).
SUMMARY = {
    "steps": "count",
    "estimator_description": "text", "twin": "text", "twin_estimator": "text", "twin_role": "text",
    "twin_rule": "text", "twin_description": "text", "twin_init": "text", "alignment_map": "text",
    "diverged_why": "text", "fingerprint": "text",
    "diverged": "flag", "twin_predicted": "flag",
    "in_theorem": "flag", "pair/range_drift": "number", "quantized_inputs": "names",  # the quantizers
}

# Flattened config keys the report reads (labels, the lr law, verdicts, figure subtitles).
CONFIG = {
    "optimizer.lr": "positive", "pair.twin_lr_scale": "positive",
    "seed": "integer", "estimator.bits": "bits",
    "optimizer.name": "text", "estimator.name": "text", "twin_estimator.name": "text", "pair.twin": "text",
    "experiment_name": "text",
    "quantizer.name": "text", "quantizer.scope": "text", "quantizer.stat": "text", "activation.name": "text",
    "activation.bits": "bits",
}


def _bad(where: str, key: str, v, kind: str) -> str | None:
    test, valid = KINDS[kind]
    if v is None and kind != "count":
        return None
    return None if test(v) else f"{where}{key!r} is {v!r}: valid is {valid}"


def history_problem(history: dict) -> str | None:
    """The first curve in ``history`` holding something other than numbers or nulls, in words; or None."""
    for key, values in history.items():
        bad = next((v for v in values if v is not None and not _number(v)), None)
        if bad is not None:
            return f"history {key!r} holds {bad!r}: valid is a list of numbers or nulls"
    return None


def field_problem(summary: dict, history: dict, flat: dict) -> str | None:
    """What is wrong with the first field the report reads that holds the wrong kind of value, naming the
    field and what is valid; None when every field passes. ``flat`` is the run's flattened config."""
    for key, kind in SUMMARY.items():
        if key in summary and (why := _bad("", key, summary[key], kind)):
            return why
    for key, kind in CONFIG.items():
        if key in flat and (why := _bad("config ", key, flat[key], kind)):
            return why
    return history_problem(history)
