"""The learning-rate law: pair error against the learning rate, one log-log fit per family of runs.

The equivalence of an estimator run and its warped STE twin (arXiv 2405.05171) is exact only as the
learning rate goes to 0, so the pair's error should shrink with it; the fitted slope says how fast.
A family is every run that differs only by learning rate and seed (or what ``--family-by`` names);
it needs at least 3 learning rates.
"""

from __future__ import annotations

import math
import re

import matplotlib.pyplot as plt
import numpy as np

from .labels import label_keys, make_labels
from .names import map_words, optimizer_words, quantizer_setting
from .runs import Run, stats, uninformative
from .style import OKABE_ITO


def describe(run: Run) -> str:
    setting = quantizer_setting(run.flat)  # the paper's grid and float inputs: named by nothing
    return _describe(run) + (f", {setting}" if setting else "")


def _describe(run: Run) -> str:
    opt = optimizer_words(run.flat.get("optimizer.name"))
    twin, init = run.summary.get("twin", run.flat.get("pair.twin")), run.summary.get("twin_init")
    lr_warp = abs(run.value("twin_lr_factor") - 1) > 1e-12
    if twin == "self":
        return f"{opt}, the estimator against itself"
    if run.summary.get("twin_description"):  # the run says what it compared (summaries since twin_role)
        return f"{opt}, {run.summary['twin_description']}"
    what = {(True, True): "twin from M(w0) at lr x alpha", (True, False): "twin from M(w0) at the same lr",
            (False, True): "twin from w0 at lr x alpha"}.get((init == "mirror", lr_warp), "twin from w0 at the same lr")
    twin_est = str(run.summary.get("twin_estimator") or "STE")
    return f"{opt}, {'STE' if twin_est.startswith('ste') else twin_est} {what}"


def fit_loglog(x, y):
    ok = (np.asarray(y) > 0) & np.isfinite(y)
    if ok.sum() < 2:
        return None, None
    s, b = np.polyfit(np.log10(np.asarray(x)[ok]), np.log10(np.asarray(y)[ok]), 1)
    return float(s), float(b)


def lr_law(runs: list[Run], family_by, notes: list) -> dict:
    fams: dict = {}
    drop = uninformative(runs)
    for r in runs:
        if math.isfinite(r.value("optimizer.lr")):
            key = tuple(r.flat.get(k) for k in family_by) if family_by else r.key(drop | {"optimizer.lr"})
            fams.setdefault(key, []).append(r)
    flats = [rs[0].flat for rs in fams.values()]
    keys = family_by or [k for k in label_keys(flats, drop) if not k.startswith(("quantizer.", "activation"))]
    keys = [k for k in keys if k not in ("optimizer.name", "pair.twin", "optimizer.lr")]  # describe() names these
    result, kept = {}, [rs for rs in fams.values() if len({r.value("optimizer.lr") for r in rs}) >= 3]
    plain = [describe(rs[0]) for rs in kept]
    for (key, rs), extra in zip(fams.items(), make_labels(flats, keys) if keys else [""] * len(fams)):
        label = describe(rs[0])  # the config's extra keys only where the description alone is ambiguous
        if plain.count(label) != 1 or not any(rs is k for k in kept):
            label = f"{label} {re.sub(r' #[0-9]+$', '', extra)}".strip()
        lrs = sorted({r.value("optimizer.lr") for r in rs})
        entry = {"config": dict(zip(family_by, key)) if family_by else {}, "lr": lrs, "n_seeds": []}
        entry["alignment_map"] = str(rs[0].summary.get("alignment_map") or "mirror")
        for name, f in [("mover_disagreement", lambda r: 1 - r.value("pair/mover_agreement")),
                        ("disagreement", lambda r: 1 - r.value("pair/quantized_agreement")),
                        ("alignment_error", lambda r: r.value("pair/alignment_error"))]:
            st = [stats([f(r) for r in rs if r.value("optimizer.lr") == lr]) for lr in lrs]
            entry[name] = {k: [s[k] for s in st] for k in ("mean", "min", "max", "n")}
            entry[name]["slope"], entry[name]["intercept"] = fit_loglog(
                lrs, [np.nan if s["mean"] is None else s["mean"] for s in st])
        entry["n_seeds"] = entry["disagreement"]["n"]
        if sum(n > 0 for n in entry["disagreement"]["n"]) < 3:
            notes.append(f"lr law: family '{label}' has < 3 learning rates with pair metrics; skipped")
            continue
        result[label if label not in result else f"{label} #{len(result) + 1}"] = entry
    return result


def fig_lr_law(law: dict):
    """Two log-log panels against the lr: 1 - agreement over movers, and the alignment error through the
    map the theory predicts for each family; dashed: the fitted power law; hollow squares: a jitter floor
    (the estimator against itself). One legend below both panels: each family with its two slopes."""
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, 2, figsize=(11, 5.6), layout="constrained")
    titles = {"mover_disagreement": "1 − agreement over movers (fraction)",
              "alignment_error": "alignment error (/ distance travelled)"}
    style = {label: (OKABE_ITO[i % len(OKABE_ITO)], "s" if "against itself" in label else "o")
             for i, label in enumerate(law)}
    clipped_any = False
    for ax, (metric, ylabel) in zip(axes, titles.items()):
        law_m = {k: e for k, e in law.items() if metric in e}  # lr_law.json of older reports lacks movers
        pos = [v for e in law_m.values() for v in e[metric]["min"] + e[metric]["mean"] if v is not None and v > 0]
        floor = min(pos) / 3 if pos else 1e-6
        for label, e in law_m.items():
            (c, mk), d, x = style[label], e[metric], np.array(e["lr"])
            mean, lo, hi = (np.array([np.nan if v is None else v for v in d[k]]) for k in ("mean", "min", "max"))
            clipped = mean <= 0
            mean_c = np.where(clipped, floor, mean)
            yerr = [mean_c - np.maximum(lo, floor), np.maximum(hi, floor) - mean_c]
            ax.errorbar(x[~clipped], mean_c[~clipped], yerr=[yerr[0][~clipped], yerr[1][~clipped]], color=c,
                        marker=mk, mfc="none" if mk == "s" else c, ms=5, ls="none", capsize=3)
            if clipped.any():
                ax.plot(x[clipped], mean_c[clipped], "v", mfc="none", color=c, ms=7)
                clipped_any = True
            if d["slope"] is not None:
                xs = np.geomspace(x.min(), x.max(), 20)
                ax.plot(xs, 10 ** (d["intercept"] + d["slope"] * np.log10(xs)), color=c, ls="--", lw=1)
        ax.set(xscale="log", yscale="log", xlabel="optimizer learning rate η (peak)", ylabel=ylabel, title=ylabel)
    slope = lambda e, m: f"{e[m]['slope']:.2f}" if isinstance(e.get(m), dict) and e[m]["slope"] is not None else "–"
    handles = [Line2D([], [], color=c, marker=mk, mfc="none" if mk == "s" else c, ls="--", lw=1,
                      label=f"{label}: slopes {slope(law[label], 'mover_disagreement')} (movers), "
                            f"{slope(law[label], 'alignment_error')} (alignment, "
                            f"{map_words(law[label].get('alignment_map'))})")
               for label, (c, mk) in style.items()]
    if clipped_any:
        handles.append(Line2D([], [], color="0.4", marker="v", mfc="none", ls="none", label="0 measured (drawn at floor)"))
    fig.legend(handles=handles, loc="outside lower center", frameon=False, fontsize=8.5)
    fig.suptitle("Learning-rate law: pair error vs learning rate (mean over seeds, bars: min–max, dashed: log-log fit)")
    return fig
