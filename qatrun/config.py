"""Facts about the resolved configuration that several tools share.

``OPERATIONAL`` lists the keys that change where or how a run reports, not what it computes: a
resume may change them, and the report never separates comparisons by them. ``ADDED`` lists the keys
added after runs were recorded, each with the value a config without it computed with.
"""

from __future__ import annotations

import json

OPERATIONAL = ("resume", "device", "compile", "trainer.progress", "trainer.checkpoint_every", "trainer.checkpoint_minutes",
               "trainer.scatter_sample", "dataset.root", "hydra")


# Keys added to configs/config.yaml after runs were recorded, with the value that a saved config lacking them
# computed with (their default, which tests/test_mirror_extension.py checks against the YAML). A key at that value
# leaves the fingerprint and the resume rule as before, so older runs stay the same result and still resume. A
# config group added since (``quantizer``) is one whole node: a saved config lacking the group gets its default
# option entire, and one that has the group (another option) is left as it is.
ADDED = {"pair.mirror_extension": "shift", "trainer.metrics": "all", "quantizer": {"name": "tensor", "scale": None},
         "activation": None}


def is_operational(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in OPERATIONAL)


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested dict -> dotted keys; lists become their JSON text (hashable, compare by value)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v) if isinstance(v, (list, tuple)) else v
    return out


def as_before(flat: dict) -> dict:
    """A flattened config without the ``ADDED`` keys that hold the value their absence meant."""
    added = flatten(ADDED)
    return {k: v for k, v in flat.items() if not (k in added and v == added[k])}


def with_added(config: dict) -> dict:
    """A copy of a (saved) nested config with every ``ADDED`` key it lacks set to the value it computed with."""
    import copy

    out = copy.deepcopy(config)
    for key, value in ADDED.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node.setdefault(leaf, copy.deepcopy(value))
    return out


def config_diff(saved: dict, current: dict) -> list[str]:
    """Dotted keys, other than operational ones, whose values differ (or exist in one only; an ``ADDED`` key
    at the value its absence meant counts as absent)."""
    a, b = as_before(flatten(saved)), as_before(flatten(current))
    return sorted(k for k in set(a) | set(b)
                  if not is_operational(k) and a.get(k, "<missing>") != b.get(k, "<missing>"))


def fingerprint(config: dict, provenance: dict | None = None) -> str:
    """A run's identity: sha256 over what determines its results, the resolved config without operational
    keys (the seed included; an ``ADDED`` key at the value its absence meant left out, so older runs keep
    theirs) and its ``provenance`` (the qatrun version, a user shape's source digest). Two runs with one
    fingerprint are one result computed twice."""
    import hashlib

    what = {k: v for k, v in as_before(flatten(config)).items() if not is_operational(k)}
    blob = json.dumps({"config": what, "provenance": provenance or {}}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
