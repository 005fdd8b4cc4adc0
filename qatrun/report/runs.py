"""Loading finished runs: a run directory's summary checked and read, duplicates and unfinished runs noted,
and the per-metric statistics over seeds."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qatrun.config import flatten, is_operational, with_added
from qatrun.metrics.names import upgrade_summary
from qatrun.rundir import SAME_AS, STATUS, SUMMARY

from .validate import field_problem


def ignored(key: str) -> bool:
    """Config keys that never separate comparisons: the operational ones, and the seed itself."""
    return is_operational(key) or key == "seed"


@dataclass
class Run:
    path: Path
    summary: dict  # scalar figures
    history: dict
    flat: dict  # resolved config, flattened to dotted keys
    has_config: bool = True  # False: the summary and .hydra/ held no config (flat has only seed, estimator, twin)

    def value(self, key: str) -> float:
        v = self.summary.get(key, self.flat.get(key))
        return float(v) if isinstance(v, (int, float)) and v is not None else math.nan

    def key(self, drop=()) -> tuple:
        return tuple(sorted((k, v) for k, v in self.flat.items() if not ignored(k) and k not in drop))


# A run's summary.json (docs/metrics.md, "Outputs"): what the report needs of it before it counts the run.
REQUIRED = {"steps": int, "seed": int, "estimator": str}
NUMBERS = ("alpha", "alpha_twin", "twin_lr_factor", "twin_lr_scale", "wall_s")  # figures without a "/" in the key


class NotASummary(ValueError):
    """A ``summary.json`` that is not a run's summary (the reason is the message)."""


def _number(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def summary_problem(s) -> str | None:
    """Why ``s`` (a parsed summary.json) is not a run's summary, or None when the report can count it:
    a JSON object with ``steps`` and ``seed`` integers and ``estimator`` a string; ``config`` and
    ``history`` objects (history of lists) where present; figures (keys with a ``/``, and NUMBERS)
    numbers or null."""
    if not isinstance(s, dict):
        return f"a JSON {type(s).__name__ if s is not None else 'null'}, not an object"
    for key, kind in REQUIRED.items():
        v = s.get(key)
        if key not in s:
            return f"no {key!r}"
        if not isinstance(v, kind) or isinstance(v, bool):
            return f"{key!r} is {v!r}, not {'an integer' if kind is int else 'a string'}"
    for key in ("config", "history"):
        if s.get(key) is not None and not isinstance(s[key], dict):
            return f"{key!r} is a {type(s[key]).__name__}, not an object"
    bad = next((k for k, v in (s.get("history") or {}).items() if not isinstance(v, list)), None)
    if bad is not None:
        return f"history {bad!r} is not a list"
    bad = next((k for k, v in s.items() if ("/" in k or k in NUMBERS) and not _number(v)), None)
    if bad is not None:
        return f"figure {bad!r} is {s[bad]!r}, not a number"
    return None


def load_run(path: Path) -> Run:
    """The run in directory ``path``; ``NotASummary`` (a ValueError) when its summary.json does not pass
    ``summary_problem``, ValueError when it is not JSON, OSError when it cannot be read."""
    try:
        s = json.loads((path / SUMMARY).read_text())
    except UnicodeDecodeError as e:
        raise NotASummary(f"not text ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise NotASummary(f"not JSON: {e}") from None
    why = summary_problem(s)
    if why:
        raise NotASummary(why)
    s = upgrade_summary(s)  # figures renamed since the summary was written (qatrun.metrics.names)
    history, config = s.pop("history", None) or {}, s.pop("config", None)
    if config is None and (path / ".hydra" / "config.yaml").exists():
        from omegaconf import OmegaConf
        try:
            config = OmegaConf.to_container(OmegaConf.load(path / ".hydra" / "config.yaml"), resolve=False)
        except Exception as e:  # a stray or damaged file: YAML and OmegaConf errors alike
            raise NotASummary(f"no config in the summary, and .hydra/config.yaml does not load ({e})") from None
        if not isinstance(config, dict):
            raise NotASummary(f"no config in the summary, and .hydra/config.yaml holds a {type(config).__name__}")
    flat = flatten(with_added(config) if config else {})  # a key added since: the value its absence meant
    for key, skey in [("seed", "seed"), ("estimator.name", "estimator"), ("pair.twin", "twin")]:
        flat.setdefault(key, s.get(skey))  # runs without a config still group by what the summary says
    why = field_problem(s, history, flat)  # a field the tables, labels or figures read, of the wrong kind
    if why:
        raise NotASummary(why)
    return Run(path, s, history, flat, config is not None)


def config_key(run: Run) -> tuple | None:
    """The run's resolved config without operational keys (the seed included); None without a config."""
    if not run.has_config:
        return None
    return tuple(sorted((k, repr(v)) for k, v in run.flat.items() if not is_operational(k)))


def identity(run: Run) -> tuple | None:
    """What makes two runs one result: the summary's ``fingerprint`` (``qatrun.config.fingerprint``: the config
    without operational keys, the seed, the provenance); for a summary without one, ``config_key``. None for
    a run without a config (nothing to tell it from another by: never a duplicate)."""
    fp = run.summary.get("fingerprint")
    if isinstance(fp, str) and fp:
        return ("fingerprint", fp)
    key = config_key(run)
    return None if key is None else ("config", key)


def drop_duplicates(runs: list[Run], notes: list) -> list[Run]:
    """One run per ``identity``, the first in path order; a note names the duplicates of each kept run."""
    first, dups = {}, {}
    for r in runs:
        key = identity(r)
        if key is not None and key in first:
            dups.setdefault(key, []).append(r)
        elif key is not None:
            first[key] = r
    for key, rs in dups.items():
        same = "fingerprint" if key[0] == "fingerprint" else "config and seed (no fingerprint)"
        notes.append(f"{len(rs)} duplicate run(s) (same {same} as {first[key].path}): counted once: "
                     + ", ".join(str(r.path) for r in rs))
    gone = {id(r) for rs in dups.values() for r in rs}
    kept = [r for r in runs if id(r) not in gone]
    # one config and seed under two fingerprints: the code that computed them differed (the provenance)
    by_config: dict = {}
    for r in kept:
        if isinstance(r.summary.get("fingerprint"), str) and r.has_config:
            by_config.setdefault(config_key(r), []).append(r)
    for rs in by_config.values():
        if len(rs) > 1:
            notes.append(f"{len(rs)} runs share their config and seed but not their fingerprint (the provenance "
                         "differs: qatrun version or a user shape's source), counted as separate runs: "
                         + ", ".join(f"{r.path} ({r.summary.get('provenance')})" for r in rs))
    return kept


def status_of(run_dir: Path) -> str | None:
    """A run directory's ``status.json`` state (running, interrupted, finished, diverged), or None."""
    try:
        return json.loads((run_dir / STATUS).read_text()).get("state")
    except (OSError, ValueError, AttributeError):
        return None


def find_runs(paths, notes: list) -> list[Run]:
    # a report's own summary.json (next to its table.md, e.g. a sweep's report/) is not a run
    runs, dirs = [], sorted({p.parent for root in map(Path, paths) for p in root.rglob(SUMMARY)
                             if not (p.parent / "table.md").exists()})
    before = len(notes)
    for d in dirs:
        try:
            runs.append(load_run(d))
        except NotASummary as e:
            notes.append(f"{d / SUMMARY}: not a run summary ({e}); skipped")
        except (OSError, ValueError) as e:
            notes.append(f"{d / SUMMARY}: unreadable ({e}); skipped")
    if dirs and not runs:
        skipped = notes[before:]
        raise FileNotFoundError(f"no valid summary.json under {' '.join(map(str, paths))} ({len(skipped)} skipped: "
                                + "; ".join(skipped[:3]) + ("; ..." if len(skipped) > 3 else "") + ")")
    runs = drop_duplicates(runs, notes)
    diverged = [r for r in runs if r.summary.get("diverged")]
    if diverged:
        notes.append(f"{len(diverged)} run(s) diverged and are kept out of the tables, verdicts and the lr law: "
                     + "; ".join(f"{r.path} ({r.summary.get('diverged_why')})" for r in diverged))
        runs = [r for r in runs if not r.summary.get("diverged")]
    unfinished = {p.parent.parent for root in map(Path, paths) for p in root.rglob(".hydra/overrides.yaml")} - set(dirs)
    interrupted = sorted(d for d in unfinished if status_of(d) == "interrupted")
    if interrupted:
        notes.append(f"{len(interrupted)} run dir(s) interrupted before the end (status.json; continue each with "
                     "qatrun resume=DIR): " + ", ".join(map(str, interrupted)))
        unfinished -= set(interrupted)
    same = sorted(d for d in unfinished if (d / SAME_AS).is_file())  # a re-run sweep's already-finished point
    if same:
        notes.append(f"{len(same)} job dir(s) are the same run as another (same_as.txt, by fingerprint), counted once: "
                     + ", ".join(f"{d.name} = {(d / SAME_AS).read_text().strip()}" for d in same))
        unfinished -= set(same)
    if unfinished:
        notes.append(f"{len(unfinished)} run dir(s) without summary.json (unfinished?): "
                     + ", ".join(sorted(map(str, unfinished))))
    return runs


def uninformative(runs: list[Run]) -> set:
    """Keys some runs lack (an older config schema, another optimizer's settings) that take a single value
    where present: they tell no runs apart, so they must not split seeds into separate groups. A key under a
    group another run sets to null (``activation``) does tell them apart."""
    vals: dict = {}
    for r in runs:
        for k, v in r.flat.items():
            vals.setdefault(k, set()).add(repr(v))
    return {k for k, v in vals.items() if len(v) == 1 and any(k not in r.flat for r in runs)
            and not any(nulled(r, k) for r in runs)}


def nulled(run: Run, key: str) -> bool:
    """Whether the run sets a group above ``key`` to null (``activation: null`` beside ``activation.bits``): then
    lacking the key is a value of its own (float inputs), not an older schema."""
    parts = key.split(".")
    return any(run.flat.get(p, "") is None for p in (".".join(parts[:i]) for i in range(1, len(parts))))


def stats(values) -> dict:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else None,  # one seed: no spread
            "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}
