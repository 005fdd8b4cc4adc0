"""The optimizer atlas: which optimizers make the estimator an STE in disguise, and with which twin.

Per optimizer (and per setting that tells two runs of one optimizer apart, e.g. ``nesterov``), at each
learning rate: the mover agreement of the twin its rule predicts (``qatrun.optim``: warp / identity /
exact), of the other rule's twin (the plain STE for a linear update, the warped STE for an adaptive or
sign-based one: the check that the prediction discriminates), of the jitter floor and of the untrained
twin, with the verdict of ``verdict.py``; and the measured lr slope: the log-log slope of the predicted
pair's mover disagreement against the lr. ``qatrun-report`` draws it when the runs hold verdicts for at
least two optimizers (``--atlas KEY=VALUE`` picks the runs, e.g. ``experiment_name=optimizers``).
``verdict_rows``, ``draw_marks``, ``pct`` and ``legend`` serve the quantizer atlas too (``quantizer_atlas.py``).
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from .style import OKABE_ITO
from .names import OUTSIDE, settings, twin_rule
from .runs import ignored
from .verdict import families, verdict

OTHER = {"warped": "no_warp", "adam_twin": "other_rule"}  # the other rule's twin, per predicted role
RULE_ORDER = {"warp": 0, "identity": 1, "exact": 2}


def verdict_rows(runs) -> list[dict]:
    """One row per family of runs with a verdict against the STE (A-B pairs are not in an atlas): the four twins'
    figures, the verdict, and ``setting``: what tells two families of one optimizer apart (``names.settings``)."""
    rows = []
    for key, by in families(runs):
        roles = {rl: rs for (t, rl), rs in by.items() if t == "STE"}
        v = verdict(roles)
        if v is None:
            continue
        pred = "warped" if "warped" in roles else "adam_twin"
        figs = v["figures"]
        rows.append({"config": {k: val for k, val in key if not ignored(k)}, "optimizer": v["optimizer"],
                     "rule": twin_rule(roles[pred][0]), "lr": v["lr"], "steps": v["steps"], "seeds": v["seeds"],
                     "predicted": figs[pred], "other": figs.get(OTHER[pred]), "jitter": figs.get("jitter"),
                     "untrained": figs["untrained"], "movers": v["mover_fraction"], "verdict": v["verdict"],
                     "gap_closed": v["gap_closed"], "quantizer": v["quantizer"], "in_theorem": v["in_theorem"]})
    for r, setting in zip(rows, settings([(r["optimizer"], r["config"]) for r in rows])):
        r["setting"] = " ".join(filter(None, (r["quantizer"], setting)))  # a quantizer setting is named first
        r["other_setting"] = setting
    return rows


def atlas(runs) -> list[dict]:
    """One row per optimizer setting and lr with a verdict, when the runs hold verdicts for two optimizers."""
    rows = verdict_rows(runs)
    if len({r["optimizer"] for r in rows}) < 2:
        return []
    for rs in group(rows).values():
        slope = lr_slope(rs)
        for r in rs:
            r["lr_slope"] = slope
    return sorted(rows, key=lambda r: (RULE_ORDER.get(r["rule"], 9), r["optimizer"], r["setting"] != "", r["setting"],
                                       r["lr"]))


def group(rows: list[dict]) -> dict:
    out: dict = {}
    for r in rows:
        out.setdefault((r["optimizer"], r["setting"]), []).append(r)
    return out


def lr_slope(rows: list[dict]) -> float | None:
    """Log-log slope of the predicted pair's mover disagreement (1 - agreement) against the lr, over >= 2 lrs."""
    pts = [(r["lr"], 1 - r["predicted"]["mean"]) for r in rows
           if r["predicted"]["mean"] is not None and r["predicted"]["mean"] < 1 and r["lr"]]
    if len({lr for lr, _ in pts}) < 2:
        return None
    x, y = np.log10([p[0] for p in pts]), np.log10([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def name(r: dict) -> str:
    return r["optimizer"] + (f" {r['setting']}" if r["setting"] else "") + ("" if r["in_theorem"] else f" ({OUTSIDE})")


def pct(st) -> str:
    """A statistic over seeds in % (mean ± sample std), "—" when not measured."""
    if not st or st["mean"] is None:
        return "—"
    return f"{100 * st['mean']:.1f}" + (f" ± {100 * st['std']:.1f}" if st["n"] > 1 and st["std"] is not None else "")


def gap(r: dict) -> str:
    return "—" if r["gap_closed"] is None else f"{100 * r['gap_closed']:.0f}%"


def atlas_markdown(rows: list[dict]) -> str:
    """The atlas as a table (mover agreement in %, mean ± sample std over seeds)."""
    lines = ["| Optimizer | Twin rule | lr | Seeds | Movers | Predicted twin | Other rule's twin | Jitter floor | "
             "Untrained twin | Gap closed | Verdict | lr slope |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        slope = "—" if r.get("lr_slope") is None else f"{r['lr_slope']:.2f}"
        lines.append(f"| {name(r)} | {r['rule']} | {r['lr']:g} | {r['seeds']} | {pct(r['movers'])} | "
                     f"{pct(r['predicted'])} | {pct(r['other'])} | {pct(r['jitter'])} | {pct(r['untrained'])} | "
                     f"{gap(r)} | {r['verdict']} | {slope} |")
    return "\n".join(lines) + "\n"


MARKS = [("predicted", "the twin its rule predicts", dict(marker="o", color=OKABE_ITO[0], ms=6)),
         ("other", "the other rule's twin", dict(marker="X", color=OKABE_ITO[1], ms=6)),
         ("jitter", "jitter floor (itself at lr x 1.01)", dict(marker="D", mfc="none", color="0.15", ms=5)),
         ("untrained", "untrained twin", dict(marker="s", color="0.6", ms=5))]


def fig_atlas(rows: list[dict]):
    """Per optimizer setting (one line each, grouped by twin rule): mover agreement of the four twins at its
    lowest lr and at its highest (when it ran at two), and the lr slope."""
    groups = group(rows)
    names = list(dict.fromkeys((r["optimizer"], r["setting"]) for r in rows))
    y = {k: i for i, k in enumerate(reversed(names))}
    fig, axes = plt.subplots(1, 3, figsize=(12, 0.42 * len(names) + 2.2), sharey=True, layout="constrained",
                             gridspec_kw={"width_ratios": [3, 3, 1.4]})
    for ax, pick, head in ((axes[0], min, "at its typical lr (the lower one)"), (axes[1], max, "at 3x that lr")):
        for k, rs in groups.items():
            lrs = sorted({r["lr"] for r in rs})
            if pick is max and len(lrs) < 2:
                continue
            draw_marks(ax, next(r for r in rs if r["lr"] == pick(lrs)), y[k])
        ax.set(title=f"mover agreement {head}", xlabel="agreement over movers (fraction)", xlim=(-0.02, 1.02))
    for k, rs in groups.items():
        s = rs[0].get("lr_slope")
        if s is not None and math.isfinite(s):
            axes[2].barh(y[k], s, color=OKABE_ITO[0], height=0.5)
    axes[2].axvline(0, color="0.4", lw=0.8)
    axes[2].set(title="lr slope\n(predicted pair)", xlabel="log-log slope\nof 1 − agreement")
    axes[0].set_yticks(list(y.values()), [f"{o} {s}".strip() + f" ({next(r['rule'] for r in rows if r['optimizer'] == o)})"
                                          for o, s in y])
    legend(fig, axes)
    fig.suptitle("Optimizer atlas: does the twin each optimizer's rule predicts track the estimator run?")
    return fig


def draw_marks(ax, r: dict, y: float, dy: float = 0.0) -> None:
    """The four twins' mover agreement of one atlas row at height ``y`` (+ ``dy``), the spread over seeds as
    error bars (min to max)."""
    for field, label, style in MARKS:
        st = r[field]
        if st and st["mean"] is not None:
            lo = max(0.0, st["mean"] - (st["min"] or st["mean"]))  # equal seeds: the mean may round past them
            hi = max(0.0, (st["max"] or st["mean"]) - st["mean"])
            ax.errorbar(st["mean"], y + dy, xerr=[[lo], [hi]] if st["n"] > 1 else None, ls="none",
                        label=label, capsize=2, **style)


def legend(fig, axes) -> None:
    """One legend below the panels, each marker once."""
    uniq = {}
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        uniq |= {lab: h for lab, h in zip(labels, handles) if lab not in uniq}
    fig.legend(uniq.values(), uniq.keys(), loc="outside lower center", ncols=max(4, min(len(uniq), 6)), frameon=False)
