"""Facts about the resolved configuration that several tools share.

``OPERATIONAL`` lists the keys that change where or how a run reports, not what it computes: a
resume may change them, and the report never separates comparisons by them.
"""

from __future__ import annotations

import json

OPERATIONAL = ("resume", "device", "compile", "trainer.progress", "trainer.checkpoint_every", "trainer.checkpoint_minutes",
               "trainer.scatter_sample", "dataset.root", "hydra")


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


def config_diff(saved: dict, current: dict) -> list[str]:
    """Dotted keys, other than operational ones, whose values differ (or exist in one only)."""
    a, b = flatten(saved), flatten(current)
    return sorted(k for k in set(a) | set(b)
                  if not is_operational(k) and a.get(k, "<missing>") != b.get(k, "<missing>"))


def fingerprint(config: dict, provenance: dict | None = None) -> str:
    """A run's identity: sha256 over what determines its results, the resolved config without operational
    keys (the seed included) and its ``provenance`` (the qatrun version, a user shape's source digest).
    Two runs with one fingerprint are one result computed twice."""
    import hashlib

    what = {k: v for k, v in flatten(config).items() if not is_operational(k)}
    blob = json.dumps({"config": what, "provenance": provenance or {}}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
