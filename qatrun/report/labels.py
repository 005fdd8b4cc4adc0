"""Grouping runs into comparisons and labelling them: runs that differ only by seed form one group, named
by what it compared (``names.pair_words``) and by the config keys that tell the groups apart."""

from __future__ import annotations

from .names import NAMED_BY_PAIR, fmt, pair_words
from .runs import Run, ignored, uninformative

BARE = ("experiment_name", "optimizer.name", "pair.twin", "estimator.name", "twin_estimator.name")  # bare values in labels
ALWAYS = ("optimizer.name", "pair.twin")  # always in automatic labels (unless named experiments differ)


def sort_key(v) -> tuple:
    return (0, float(v), "") if isinstance(v, (int, float)) and v is not None else (1, 0.0, str(v))


def label_keys(groups: list[dict], drop=frozenset()) -> list[str]:
    """ALWAYS keys, plus keys that differ between groups of the same optimizer and estimator (so one
    optimizer's own settings don't count against another's), plus the lr whenever it differs. When
    groups come from different named experiments: the name plus what varies inside one experiment."""
    def varies(k, same=("optimizer.name", "estimator.name")):
        seen: dict = {}
        for g in groups:
            if k in g:
                seen.setdefault(tuple(repr(g.get(s)) for s in same), set()).add(repr(g[k]))
        return any(len(v) > 1 for v in seen.values())

    union = sorted({k for g in groups for k in g if not ignored(k) and k not in drop})
    if "experiment_name" in union and varies("experiment_name", ()):
        within = [k for k in union if k != "experiment_name" and varies(k, ("experiment_name",))]
        # bare names first (optimizer, twin), then the rest; an optimizer's own switch adds nothing
        keys = [k for k in BARE if k in within] + [k for k in within if k not in BARE and k != "optimizer.twin_warp"]
        return ["experiment_name"] + keys
    differ = [k for k in union if varies(k) or (k in BARE + ("optimizer.lr",) and varies(k, ()))]
    keys = [k for k in BARE if k in union and (k in ALWAYS or k in differ)]
    return keys + [k for k in differ if k not in keys]


def varies_within(groups: list[dict], key: str, by: str) -> bool:
    """Whether ``key`` takes two values among groups with the same ``by`` (an optimizer's own setting)."""
    seen: dict = {}
    for g in groups:
        if key in g:
            seen.setdefault(repr(g.get(by)), set()).add(repr(g[key]))
    return any(len(v) > 1 for v in seen.values())


def make_labels(groups: list[dict], keys=None, dedupe: bool = True) -> list[str]:
    """A label per group (dict of dotted key -> value) built from ``keys`` (default: label_keys)."""
    keys = keys if keys is not None else label_keys(groups)
    short = [k.split(".")[-1] for k in keys]
    names = [s if short.count(s) == 1 else k for k, s in zip(keys, short)]
    labels = []
    for g in groups:
        parts = [fmt(g[k]) if k in BARE else f"{n}={fmt(g[k])}" for k, n in zip(keys, names) if g.get(k) is not None]
        labels.append(" ".join(parts) or "run")
    return unique(labels) if dedupe else labels


def aggregate(runs: list[Run], label_by) -> list[tuple[str, list[Run]]]:
    """Group runs that differ only by seed (and operational keys); label each group."""
    groups: dict = {}
    drop = uninformative(runs)
    for r in runs:
        groups.setdefault(r.key(drop), []).append(r)
    reps = [({**rs[0].summary, **rs[0].flat} if label_by else rs[0].flat) for rs in groups.values()]
    keys = label_by or label_keys(reps, drop)
    for rs in groups.values():
        rs.sort(key=lambda r: (str(r.flat.get("seed")), str(r.path)))
    named = [None if label_by else pair_words(rs[0]) for rs in groups.values()]
    order = sorted(range(len(reps)), key=lambda i: [sort_key(reps[i].get(k)) for k in keys] + [repr(list(groups)[i])])
    if all(named):  # every run says what it compared: that first, then what else tells the groups apart
        rest = [k for k in keys + (["optimizer.lr"] if "optimizer.lr" not in keys else [])
                if not k.startswith(NAMED_BY_PAIR) and (k == "optimizer.lr" or not k.startswith("optimizer.")
                                                        or varies_within(reps, k, "optimizer.name"))]
        extra = make_labels(reps, rest, dedupe=False) if rest else [""] * len(reps)
        labels = unique([f"{n}, {e}" if e and e != "run" else n for n, e in zip(named, extra)])
    else:
        labels = make_labels(reps, keys)
    rs = list(groups.values())
    return [(labels[i], rs[i]) for i in order]


def unique(labels: list[str]) -> list[str]:
    """Labels with a ``#2``, ``#3`` ... on repeats (two groups the keys cannot tell apart)."""
    seen: dict = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return out
