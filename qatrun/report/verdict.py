"""Verdicts in plain words: does a run support "an STE in disguise" (arXiv 2405.05171)?

For every family of runs that differ only in the twin (same estimator, optimizer, learning rate,
length, data), each run gets a role from its twin mode, and one paragraph sets the pair the theorem
predicts against its controls over the weights that moved:

* SGD: the warped pair (twin at ``M(w0)`` and ``alpha * lr``) against the paper's control
  (``warp_lr``: ``alpha * lr`` from ``w0``), the plain STE twin (``sgd_nowarp``), the jitter floor
  (the estimator against itself at lr x 1.01) and an untrained twin;
* Adam: the plain STE twin (the theorem's Adam twin) against the jitter floor and an untrained twin.

The verdict is the share of the gap between the reference (the other rule's twin where it ran: the
no-warp control for SGD, the warped twin for Adam and the other adaptive and sign-based optimizers;
else the paper's control for SGD and the untrained twin for Adam) and the jitter floor that the predicted
pair closes: at least 75% supports the claim at that learning rate, 25-75% partly, below 25% does not.
Without a jitter floor in the report, or with one no higher than the untrained twin (a near copy of the
run agreeing no better than a twin that never trained: noise swamps every comparison), there is no
verdict, only the numbers. ``findings.md`` collects the paragraphs so that prose quoting the results is
generated from them. A pair whose grid moves (a learned or recomputed range, ``in_theorem: false``) gets the
same rule applied to its natural twin, and its paragraph says "outside the theorem: measured".
"""

from __future__ import annotations

from qatrun.metrics.names import HEADLINE
from qatrun.twin import ROLES

from .names import OUTSIDE, in_theorem, map_words, predicted, quantizer_setting, settings, twin_role
from .runs import Run, ignored, stats, uninformative

SUPPORTS, PARTLY = 0.75, 0.25
METRIC = HEADLINE  # qatrun.metrics.names
# Keys that make the twin, not the experiment: runs differing only here belong to one family.
TWIN_KEYS = ("pair.twin", "pair.twin_lr_scale", "experiment_name")


# A twin's role (``twin_role`` in summary.json, ``qatrun.twin.ROLES``; ``names.twin_role`` works it out for older
# summaries) as it counts in a verdict. A role the theorem predicts under some twin rule is the prediction when the
# run's optimizer has that rule: "warped" (a warp rule) or "adam_twin" (an identity/exact rule); under the other rule
# it is shown, never the prediction: "other_rule" (a warped twin under an adaptive optimizer) or "no_warp" (a plain
# twin under SGD). The paper's control and the jitter floor count as themselves.
def role(run: Run) -> str | None:
    r = twin_role(run)
    if r in ROLES and ROLES[r].predicted_under:
        warp = "warp" in ROLES[r].predicted_under
        if predicted(run):
            return "warped" if warp else "adam_twin"
        return "other_rule" if warp else "no_warp"
    return r if r in ("paper_control", "jitter") else None


def twin_label(run: Run) -> str:
    """The twin's estimator: "STE", or an A-B pair's B (e.g. ``tanh(k=2.5)``)."""
    t = run.summary.get("twin_estimator")
    return "STE" if not t or str(t).startswith("ste") or run.summary.get("twin") in ("self", "ste") else str(t)


def families(runs: list[Run]) -> list[tuple[tuple, dict]]:
    """Runs of one estimator run (same config but for the twin), keyed by (twin estimator, role);
    the jitter floor and the untrained twin belong to the estimator run, so A-B pairs share them.
    A seed counts once per group: the first run (in path order) of a repeated configuration stands."""
    out: dict[tuple, dict] = {}
    drop = uninformative(runs)  # a key added to the config since some runs were written splits no family
    for r in runs:
        rl = role(r)
        if rl is None:
            continue
        key = tuple(sorted((k, v) for k, v in r.flat.items() if not ignored(k) and k not in TWIN_KEYS
                           and k not in drop and not k.startswith("twin_estimator")))
        group = out.setdefault(key, {}).setdefault((twin_label(r), rl), [])
        if r.flat.get("seed") not in [g.flat.get("seed") for g in group]:  # a seed counts once (the lr law
            group.append(r)  # repeats the default lr's seed 0 under another experiment_name)
    return sorted(out.items(), key=lambda kv: str(kv[0]))


def _pct(st) -> str:
    if st["mean"] is None:
        return "n/a"
    return f"{100 * st['mean']:.1f}%" + (f" ± {100 * st['std']:.1f}" if st["n"] > 1 else "")


def _m(rs: list[Run], key: str = METRIC) -> dict:
    return stats([r.value(key) for r in rs])


def _controls(figs: dict, est, twin: str) -> list[str]:
    """The figures a predicted pair is read against, in words: the controls that ran, the floors."""
    parts = []
    if "paper_control" in figs:
        parts.append(f"the paper's control (lr x alpha from w0) on {_pct(figs['paper_control'])}")
    if "no_warp" in figs:
        parts.append(f"a{' plain STE' if twin == 'STE' else ' ' + twin} twin without the adjustment on "
                     f"{_pct(figs['no_warp'])}")
    if "other_rule" in figs:
        parts.append(f"the warped twin (what a linear update would need) on {_pct(figs['other_rule'])}")
    if "jitter" in figs:
        parts.append(f"the jitter floor ({est} against itself at lr x 1.01) on {_pct(figs['jitter'])}")
    return parts + [f"and a twin that never trained would score {_pct(figs['untrained'])}"]


def verdict(roles: dict[str, list[Run]], twin: str = "STE") -> dict | None:
    """One paragraph and its figures for a predicted pair with ``twin`` as the twin's estimator, or None."""
    pred_role = "warped" if "warped" in roles else "adam_twin" if "adam_twin" in roles else None
    if pred_role is None:
        return None
    pred = roles[pred_role]
    r0 = pred[0]
    est, opt, lr = r0.summary.get("estimator"), r0.flat.get("optimizer.name"), r0.flat.get("optimizer.lr")
    bits = r0.flat.get("estimator.bits")
    steps, seeds = r0.summary.get("steps"), len(pred)
    figs = {rl: _m(rs) for rl, rs in roles.items()}
    figs["untrained"] = _m(pred, "pair/mover_agreement_untrained")
    movers = _m(pred, "pair/mover_fraction")
    words = {"warped": "the warped pair (STE twin from M(w0) at lr x alpha)",
             "adam_twin": "the plain STE twin (same init, same lr)"}
    if twin != "STE":
        words = {"warped": f"the warped pair ({twin} twin from M_B^-1(M_A(w0)) at lr x alpha_A/alpha_B)",
                 "adam_twin": f"the {twin} twin (same init, same lr)"}
    against = "" if twin == "STE" else f" against {twin}"
    nbits = f" ({bits} bit{'s' if bits != 1 else ''})" if bits is not None else ""
    quantizer, inside = quantizer_setting(r0.flat), all(in_theorem(r) for r in pred)
    nbits += f" with {quantizer}" if quantizer else ""
    text = (f"**{est}{nbits}{against}, {opt}, lr {lr:g}, {steps} steps ({seeds} seed{'s' if seeds > 1 else ''}).** "
            f"Over the {_pct(movers)} of quantized weights that changed level, {words[pred_role]} ends at the "
            f"same level on {_pct(figs[pred_role])} of them")
    text += "; " + ", ".join(_controls(figs, est, twin)) + "."
    # the reference: the other rule's twin where it ran (SGD: the plain STE; an adaptive optimizer: the warped
    # STE), else the paper's control (SGD) or the untrained twin (adaptive)
    ref_role = next((r for r in (("no_warp", "paper_control") if pred_role == "warped" else ("other_rule",))
                     if r in figs), None)
    ref = figs[ref_role] if ref_role else figs["untrained"]
    closed, call = None, "no verdict (no jitter floor in this report)"
    if "jitter" in figs and None not in (ref["mean"], figs["jitter"]["mean"], figs[pred_role]["mean"]):
        gap = figs["jitter"]["mean"] - ref["mean"]
        closed = (figs[pred_role]["mean"] - ref["mean"]) / gap if gap > 0 else None
        ref_words = {"no_warp": "the unadjusted twin", "paper_control": "the paper's control",
                     "other_rule": "the warped twin", None: "the untrained twin"}[ref_role]
        floor, untrained = figs["jitter"]["mean"], figs["untrained"]["mean"]
        if untrained is not None and floor <= untrained:  # a near copy of the run agrees no better than no training
            closed, ref_words = None, "the untrained twin"
        if closed is None:
            call = f"no verdict (the jitter floor is not above {ref_words}: noise swamps the comparison at this lr)"
        if closed is not None:
            call = ("supports" if closed >= SUPPORTS else "partly supports" if closed >= PARTLY else "does not support")
            text += (f" It closes {100 * closed:.0f}% of the gap between {ref_words} and the jitter floor: "
                     f"this run {call} \"an STE in disguise\" at lr {lr:g}.")
    if closed is None:
        text += f" {call[0].upper() + call[1:]}."
    if not inside:  # the theorem covers a fixed grid: a moving one has no predicted twin, only the natural one
        text += f" {OUTSIDE[0].upper() + OUTSIDE[1:]} (the grid moves; the twin is the natural one, from the initial grid)."
    return {"estimator": est, "twin": twin, "optimizer": opt, "bits": bits, "lr": lr, "steps": steps, "seeds": seeds,
            "gap_closed": closed, "quantizer": quantizer, "in_theorem": inside,
            "verdict": call, "figures": figs, "mover_fraction": movers, "text": text}


def verdicts(runs: list[Run]) -> list[dict]:
    out, confs = [], []
    for key, by in families(runs):
        shared = {rl: rs for (_, rl), rs in by.items() if rl == "jitter"}
        for twin in sorted({t for t, rl in by if rl != "jitter"}, key=lambda t: (t != "STE", t)):
            roles = {rl: rs for (t, rl), rs in by.items() if t == twin} | shared
            if (v := verdict(roles, twin)) is not None:
                out.append(v)
                confs.append((v["optimizer"], dict(key)))
    for v, setting in zip(out, settings(confs)):  # what tells two families of one optimizer apart, in the text
        v["setting"] = setting
        if setting:
            v["text"] = v["text"].replace(f", {v['optimizer']}, lr ", f", {v['optimizer']} ({setting}), lr ", 1)
    order = lambda v: (str(v["estimator"]), v["twin"] != "STE", str(v["twin"]), str(v["optimizer"]),
                       v["bits"] or 0, v["quantizer"], v["setting"], v["steps"] or 0, v["lr"] or 0)
    return sorted(out, key=order)


def findings_markdown(vs: list[dict], law: dict, drift_lines: list[str] = ()) -> str:
    lines = ["# Findings (generated by qatrun-report from the runs; do not edit by hand)", ""]
    lines += [v["text"] + "\n" for v in vs] or ["No family with a predicted pair in these runs.\n"]
    lines += list(drift_lines)
    if law:
        lines.append("Learning-rate law (log-log slope against the lr, fitted to the mean over seeds at each lr):\n")
        for fam, d in sorted(law.items()):
            names = {"mover_disagreement": "1 - mover agreement", "disagreement": "1 - overall agreement",
                     "alignment_error": f"alignment error ({map_words(d.get('alignment_map'))})"}
            slopes = [f"{name} {d[k]['slope']:.2f}" for k, name in names.items()
                      if isinstance(d.get(k), dict) and d[k].get("slope") is not None]
            n = d.get("n_seeds") or []
            seeds = ("one seed per lr" if set(n) <= {1} else
                     "seeds per lr: " + ", ".join(f"{k} at {lr:g}" for k, lr in zip(n, d.get("lr", []))))
            lines.append(f"* {fam} ({seeds}): {', '.join(slopes) or 'no fit'}")
    return "\n".join(lines).rstrip() + "\n"
