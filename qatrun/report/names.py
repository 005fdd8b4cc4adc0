"""What a run compared, in words: both estimators with their options, the twin's role and the optimizer's
twin rule, read from the summary (or, for a summary written before those keys, worked out from its config).
The report's table rows, figure titles and verdicts name pairs through these."""

from __future__ import annotations

import re
from collections import Counter

from qatrun.twin import ROLES
from qatrun.twin import predicted as predicted_for

from .runs import Run

# Config keys that pair_words already names (both estimators, the twin mode, the quantizers): not repeated after it
# in a label.
NAMED_BY_PAIR = ("estimator.", "twin_estimator.", "pair.twin", "pair.twin_lr_scale", "optimizer.name", "quantizer.",
                 "activation")


OPTIMIZER_WORDS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}
MAP_WORDS = {"mirror": "through M", "identity": "through the identity"}  # summary's alignment_map, in words


def optimizer_words(name) -> str:
    return OPTIMIZER_WORDS.get(str(name), str(name))


def map_words(alignment_map) -> str:
    """``alignment_map`` of a summary in words; a run that predates the key was measured through M."""
    m = str(alignment_map or "mirror")
    return MAP_WORDS.get(m, m)


def short_estimator(desc) -> str:
    """An estimator's description with a user shape's dotted path cut to its function name
    (``custom(shape=mypkg.shapes:sharp_bump)`` -> ``custom(shape=sharp_bump)``); the STE as ``STE``."""
    text = re.sub(r"(shape=)[\w.]+[.:](\w+)", r"\1\2", str(desc))
    return "STE" if text == "ste" or text.startswith("ste(") else text


def twin_role(run: Run) -> str | None:
    """The twin's role (a key of ``qatrun.twin.ROLES``): the summary's ``twin_role``, or for a summary written
    before it, worked out from its twin mode, init map and lr factors; None when it cannot be told."""
    s = run.summary
    if s.get("twin_role"):
        return s["twin_role"]
    twin, init, factor, scale = s.get("twin"), s.get("twin_init"), s.get("twin_lr_factor"), s.get("twin_lr_scale", 1.0)
    ab = bool(s.get("twin_estimator")) and not str(s.get("twin_estimator")).startswith("ste") and twin not in ("ste", "self")
    if twin == "none":
        return "none"
    if twin == "self":
        return "jitter" if scale not in (None, 1.0) else None
    if init == "mirror":
        return "warp_init" if twin == "warp_init" else "ab_warped" if ab else "warped"
    if factor not in (None, 1.0):
        return "paper_control"
    if twin in ("ste", "auto", "nowarp"):
        return "ab_unwarped" if ab else "plain_ste"
    return None


def twin_rule(run: Run) -> str | None:
    """The optimizer's twin rule (warp / identity / exact): the summary's, or the registry's for older runs."""
    if run.summary.get("twin_rule"):
        return run.summary["twin_rule"]
    from qatrun.optim import OPTIMIZERS
    name = run.flat.get("optimizer.name")
    return OPTIMIZERS.meta(name).get("twin_rule") if name in OPTIMIZERS else None


def predicted(run: Run) -> bool:
    """Whether the theorem predicts this twin to track the run (``twin_predicted``; for older runs: a warped
    twin under a warp rule, a plain one under an identity or exact rule)."""
    if "twin_predicted" in run.summary:
        return bool(run.summary["twin_predicted"])
    return predicted_for(twin_role(run), twin_rule(run))


def estimator_words(run: Run) -> str | None:
    """The run's estimator with its resolved options (``tanh(k=5.5)``); rebuilt from the config for a summary
    written before ``estimator_description``."""
    if run.summary.get("estimator_description"):
        return run.summary["estimator_description"]
    opts = {k[len("estimator."):]: v for k, v in run.flat.items() if k.startswith("estimator.")}
    try:
        from qatrun import estimators
        from qatrun.estimators.base import describe
        return describe(estimators.create(**opts))
    except Exception:  # a user's shape that no longer imports, an old key: the name alone
        return run.summary.get("estimator")


def pair_words(run: Run) -> str | None:
    """What a run compared: both estimators with their options, the bits, the twin's role and the optimizer
    with its twin rule, e.g. ``tanh(k=5.5) vs STE, 2 bits, warped twin; sgd (warp rule)``. None when the
    role cannot be told (the label falls back to config keys)."""
    s, f = run.summary, run.flat
    est, role = estimator_words(run), twin_role(run)
    if not est or not role:
        return None
    if role == "jitter":
        twin = f"itself at lr x {s.get('twin_lr_scale') or f.get('pair.twin_lr_scale')}"
    elif role == "none":
        twin = "no twin"
    else:
        twin = short_estimator(s.get("twin_estimator") or "ste") if role.startswith("ab_") else "STE"
    bits = f.get("estimator.bits")
    nbits = f", {bits} bit{'s' if bits != 1 else ''}" if bits is not None else ""
    setting = quantizer_setting(f)
    nbits += f", {setting}" if setting else ""  # the paper's grid and float inputs: named by nothing, as before
    what = "" if role in ("jitter", "none") else f", {ROLES[role].word if role in ROLES else role} twin"
    what += "" if role in ("jitter", "none") or in_theorem(run) else f" ({OUTSIDE})"
    rule = twin_rule(run)
    return f"{short_estimator(est)} vs {twin}{nbits}{what}; {f.get('optimizer.name')}" + (f" ({rule} rule)" if rule else "")


# Config keys a setting never names: how long and how finely a run is measured (the steps are named apart).
NOT_A_SETTING = ("optimizer.lr", "trainer.", "dataset.test_subset", "dataset.eval_batch_size", "experiment_name",
                 "estimator.", "quantizer.", "activation")  # the estimator, its bits and quantizers are named apart


def settings(items: list[tuple[str, dict]]) -> list[str]:
    """Per ``(optimizer, flat config)``: the keys in which it differs from the most common value among the items
    of its optimizer, e.g. ``nesterov=True`` or ``model=resnet18 batch_size=64``; "" for the usual setting."""
    by_opt: dict = {}
    for i, (opt, _) in enumerate(items):
        by_opt.setdefault(opt, []).append(i)
    out = [""] * len(items)
    for idx in by_opt.values():
        confs = [items[i][1] for i in idx]
        keys = sorted({k for c in confs for k in c if not k.startswith(NOT_A_SETTING)})
        modal = {k: Counter(repr(c.get(k)) for c in confs).most_common(1)[0][0] for k in keys}
        for i, c in zip(idx, confs):
            diff = [k for k in keys if repr(c.get(k)) != modal[k]]
            out[i] = " ".join(f"{_short(k)}={fmt(c.get(k))}" for k in diff)
    return out


def fmt(v) -> str:
    """A config value in a label: floats in their shortest form (``0.001``), the rest as written."""
    return f"{v:g}" if isinstance(v, float) else str(v)


def _short(key: str) -> str:
    """``optimizer.nesterov`` -> ``nesterov``; a group's choice (``model.name``) -> ``model``."""
    parts = key.split(".")
    return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]


# -- the quantizers (qatrun.quantizers): how a layer's range is set, and the quantized inputs ---------------------

OUTSIDE = "outside the theorem: measured"  # beside the figures of a pair whose grid moves (lsq, dynamic)
WEIGHT_ORDER = ("tensor", "channel", "lsq", "dynamic")  # the atlas's row order: fixed grids first
# An option's value in words (the rest print as key=value); an option at its builder's default is not named.
OPTION_WORDS = {("scope", "channel"): "per channel", ("scope", "tensor"): "per tensor", ("stat", "absmean"): "absmean",
                ("stat", "max_abs"): "max-abs", ("init", "fixed"): "from the fixed grid", ("grad_scale", False):
                "no gradient scale", ("estimator", "ste"): "STE"}
ALWAYS_NAMED = {"dynamic": ("stat",)}  # named even at the default: what the statistic is defines the setting


def _options(registry, name: str, node: dict, skip=()) -> list[str]:
    """The options of a quantizer that differ from its builder's default (``runname.estimator_label``'s rule)."""
    import inspect

    words = []
    for key, (_, default) in (registry.options(name) if name in registry else {}).items():
        value = node.get(key)
        if key in skip or value is None or (key not in ALWAYS_NAMED.get(name, ()) and value == default
                                            and default is not inspect.Parameter.empty):
            continue
        word = OPTION_WORDS.get((key, value))
        words.append(word or (f"p{value:g}" if key == "percentile" else f"{key} {fmt(value)}"))
    return words


def _group(flat: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}


def weight_quantizer_words(flat: dict) -> str | None:
    """The weight quantizer in words (``lsq (per channel)``, ``dynamic absmean``); None for the paper's grid
    (``tensor`` at the grid's own range) and for a config without the group."""
    from qatrun.quantizers import QUANTIZERS

    node = _group(flat, "quantizer.")
    name = node.get("name")
    if name is None or (name == "tensor" and node.get("scale") is None):
        return None
    words = _options(QUANTIZERS, str(name), node)
    if name == "dynamic" and words:  # "dynamic absmean (per channel)"
        return f"dynamic {words[0]}" + (f" ({', '.join(words[1:])})" if words[1:] else "")
    if name == "tensor":
        return f"tensor (m = {fmt(node['scale'])})"
    return str(name) + (f" ({', '.join(words)})" if words else "")


def activation_words(flat: dict) -> str | None:
    """The quantized inputs in words (``A4 pact``, ``A2 fixed (p99.9)``); None for float inputs."""
    from qatrun.quantizers import ACTIVATIONS

    node = _group(flat, "activation.")
    if node.get("name") is None:
        return None
    words = _options(ACTIVATIONS, str(node["name"]), node, skip=("bits",))
    return f"A{node.get('bits')} {node['name']}" + (f" ({', '.join(words)})" if words else "")


def quantizer_setting(flat: dict) -> str:
    """What a run quantizes beyond the paper's grid, e.g. ``lsq (per channel)``, ``W2 + A2 pact``,
    ``lsq, W2 + A2 fixed``; "" for the paper's setting (one fixed range per tensor, float inputs)."""
    weights, acts = weight_quantizer_words(flat), activation_words(flat)
    if acts is None:
        return weights or ""
    return (f"{weights}, " if weights else "") + f"W{flat.get('estimator.bits')} + {acts}"


def setting_order(flat: dict) -> tuple:
    """Where a quantizer setting sorts: float inputs first, then by weight quantizer (fixed grids first), scope
    and statistic, then by activation bits (wider first) and name."""
    name = str(flat.get("quantizer.name") or "tensor")
    rank = WEIGHT_ORDER.index(name) if name in WEIGHT_ORDER else len(WEIGHT_ORDER)
    bits = flat.get("activation.bits")
    per_channel = flat.get("quantizer.scope") not in (None, "tensor")
    return (bits is not None, rank, name, per_channel, str(flat.get("quantizer.stat") or ""), -(bits or 0),
            str(flat.get("activation.name") or ""), quantizer_setting(flat))


def in_theorem(run: Run) -> bool:
    """Whether the paper's fixed-grid theorem covers the pair: the summary's ``in_theorem``; for a summary
    without it, the weight quantizer's registered fact (a run before quantizers: the fixed grid, inside)."""
    v = run.summary.get("in_theorem")
    if isinstance(v, bool):
        return v
    from qatrun.quantizers import QUANTIZERS

    name = run.flat.get("quantizer.name")
    return bool(QUANTIZERS.meta(name)["in_theorem"]) if name in QUANTIZERS else True


def grid_moves(run: Run) -> bool:
    """Whether either run's grid can move (a learned or recomputed range): the range drift was measured, or
    the pair is outside the theorem (a moving grid is what puts it there)."""
    return "pair/range_drift" in run.summary or bool(run.history.get("pair/range_drift")) or not in_theorem(run)
