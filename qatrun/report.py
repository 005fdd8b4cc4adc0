"""Figures and tables from finished pair runs (PAPER.md, "The metrics" and "Plots").

    qatrun-report RUN_OR_MULTIRUN_DIR [...] --out OUT [--formats png pdf] [--label-by KEY ...]

Every directory holding a ``summary.json`` (searched recursively) is one pair. Writes
``OUT/pairs/<label>/{curves,alignment_scatter,movement_scatter,agreement}.<fmt>`` per pair,
``OUT/lr_law.<fmt>`` + ``OUT/lr_law.json`` (error vs learning rate, fitted log-log slopes per family),
and ``OUT/table.{md,csv}`` + ``OUT/summary.json`` (seeds aggregated per comparison). Missing pieces
(no weight sample, ``pair.twin=none``, NaN metrics) skip the figure and add a note instead.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
EST_C, TWIN_C, DIFF_C = OKABE_ITO[0], OKABE_ITO[1], "#333333"
STYLE = {"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "xtick.labelsize": 9,
         "ytick.labelsize": 9, "legend.fontsize": 9, "figure.titlesize": 11, "axes.grid": True,
         "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False, "pdf.fonttype": 42}
# Config keys that never separate comparisons (operational, or the seed itself).
IGNORED = {"seed", "resume", "device", "compile", "trainer.progress", "trainer.checkpoint_every",
           "trainer.scatter_sample", "dataset.root"}
BARE = ("experiment_name", "optimizer.name", "pair.twin", "estimator.name")  # shown as bare values in labels
ALWAYS = ("optimizer.name", "pair.twin")  # always in automatic labels (unless named experiments differ)
# Table columns: (summary key, header, kind) where kind "frac" prints 4 decimals, "err" 3 significant digits.
COLUMNS = [
    ("pair/quantized_agreement", "Quantized agreement", "frac"),
    ("pair/alignment_error", "Alignment error", "err"),
    ("pair/sequence_agreement", "Sequence agreement (exact)", "frac"),
    ("pair/sequence_agreement_compressed", "Sequence agreement (compressed)", "frac"),
    ("pair/changepoint_error", "Change-point error (steps)", "err"),
    ("pair/inference_agreement", "Inference agreement", "frac"),
    ("pair/logit_mse", "Logit MSE", "err"),
    ("pair/corr_train_loss", "Corr. train loss", "frac"),
    ("pair/corr_test_loss", "Corr. test loss", "frac"),
    ("pair/corr_test_acc", "Corr. test acc.", "frac"),
    ("est/test_acc", "Est. accuracy", "frac"),
    ("twin/test_acc", "Twin accuracy", "frac"),
]


@dataclass
class Run:
    path: Path
    summary: dict  # scalar figures
    history: dict
    flat: dict  # resolved config, flattened to dotted keys

    def value(self, key: str) -> float:
        v = self.summary.get(key, self.flat.get(key))
        return float(v) if isinstance(v, (int, float)) and v is not None else math.nan

    def key(self, drop=()) -> tuple:
        return tuple(sorted((k, v) for k, v in self.flat.items() if k not in IGNORED and k not in drop))


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v) if isinstance(v, list) else v
    return out


def load_run(path: Path) -> Run:
    s = json.loads((path / "summary.json").read_text())
    history, config = s.pop("history", None) or {}, s.pop("config", None)
    if config is None and (path / ".hydra" / "config.yaml").exists():
        from omegaconf import OmegaConf
        config = OmegaConf.to_container(OmegaConf.load(path / ".hydra" / "config.yaml"), resolve=False)
    flat = flatten(config or {})
    for key, skey in [("seed", "seed"), ("estimator.name", "estimator"), ("pair.twin", "twin")]:
        flat.setdefault(key, s.get(skey))  # runs without a config still group by what the summary says
    return Run(path, s, history, flat)


def find_runs(paths, notes: list) -> list[Run]:
    runs, dirs = [], sorted({p.parent for root in map(Path, paths) for p in root.rglob("summary.json")})
    for d in dirs:
        try:
            runs.append(load_run(d))
        except (OSError, ValueError) as e:
            notes.append(f"{d}: unreadable summary.json ({e}); skipped")
    unfinished = {p.parent.parent for root in map(Path, paths) for p in root.rglob(".hydra/overrides.yaml")} - set(dirs)
    if unfinished:
        notes.append(f"{len(unfinished)} run dir(s) without summary.json (unfinished?): "
                     + ", ".join(sorted(map(str, unfinished))))
    return runs


def uninformative(runs: list[Run]) -> set:
    """Keys some runs lack (an older config schema, another optimizer's settings) that take a single value
    where present: they tell no runs apart, so they must not split seeds into separate groups."""
    vals: dict = {}
    for r in runs:
        for k, v in r.flat.items():
            vals.setdefault(k, set()).add(repr(v))
    return {k for k, v in vals.items() if len(v) == 1 and any(k not in r.flat for r in runs)}


def sort_key(v) -> tuple:
    return (0, float(v), "") if isinstance(v, (int, float)) and v is not None else (1, 0.0, str(v))


def fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


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

    union = sorted({k for g in groups for k in g if k not in IGNORED and k not in drop})
    if "experiment_name" in union and varies("experiment_name", ()):
        within = [k for k in union if k != "experiment_name" and varies(k, ("experiment_name",))]
        # bare names first (optimizer, twin), then the rest; an optimizer's own switch adds nothing
        keys = [k for k in BARE if k in within] + [k for k in within if k not in BARE and k != "optimizer.twin_warp"]
        return ["experiment_name"] + keys
    differ = [k for k in union if varies(k) or (k in BARE + ("optimizer.lr",) and varies(k, ()))]
    keys = [k for k in BARE if k in union and (k in ALWAYS or k in differ)]
    return keys + [k for k in differ if k not in keys]


def make_labels(groups: list[dict], keys=None) -> list[str]:
    """A label per group (dict of dotted key -> value) built from ``keys`` (default: label_keys)."""
    keys = keys if keys is not None else label_keys(groups)
    short = [k.split(".")[-1] for k in keys]
    names = [s if short.count(s) == 1 else k for k, s in zip(keys, short)]
    labels, seen = [], {}
    for g in groups:
        parts = [fmt(g[k]) if k in BARE else f"{n}={fmt(g[k])}" for k, n in zip(keys, names) if g.get(k) is not None]
        label = " ".join(parts) or "run"
        seen[label] = seen.get(label, 0) + 1
        labels.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return labels


def stats(values) -> dict:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}


def sig3(x: float) -> str:
    return f"{x:#.3g}".rstrip(".") if x else "0"  # 3 significant digits, trailing zeros kept (0.200)


def cell(st: dict, kind: str) -> str:
    if st["mean"] is None:
        return "—"
    f = (lambda x: f"{x:.4f}") if kind == "frac" else sig3
    return f(st["mean"]) + (f" ± {f(st['std'])}" if st["n"] > 1 else "")


def clean(o):
    """JSON-safe: NaN/inf -> null, numpy scalars -> Python."""
    if isinstance(o, dict):
        return {str(k): clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [clean(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    return o.item() if isinstance(o, np.generic) else o


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", label).strip("_") or "run"


def save(fig, out_dir: Path, name: str, formats) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.{ext}" for ext in formats]
    for p in paths:
        fig.savefig(p, dpi=150 if p.suffix == ".png" else 300)  # pdf: dpi of the rasterized scatter only
    plt.close(fig)
    return list(map(str, paths))


# ----------------------------------------------------------------------------- per-pair figures
def series(h: dict, key: str) -> np.ndarray:
    return np.array(h.get(key) or [], dtype=float)


def fig_curves(run: Run, title: str):
    h = run.history
    panels = [("log_step", "loss", "train loss (cross-entropy)"), ("eval_step", "test_loss", "test loss (cross-entropy)"),
              ("eval_step", "test_acc", "test accuracy (fraction)")]
    if not any(len(series(h, f"twin/{k}")) for _, k, _ in panels):
        return None
    twin_kind = "same estimator" if run.summary.get("twin") == "self" else "STE"
    fig, axes = plt.subplots(2, 3, figsize=(11, 4.8), sharex="col", gridspec_kw={"height_ratios": [3, 1.3]}, layout="constrained")
    for j, (xk, k, ylabel) in enumerate(panels):
        x, a, b = series(h, xk), series(h, f"est/{k}"), series(h, f"twin/{k}")
        if not len(x) or len(a) != len(x) or len(b) != len(x):
            axes[0, j].set_title(f"{ylabel}: not logged")
            continue
        mk = "o" if len(x) <= 30 else None
        axes[0, j].plot(x, a, color=EST_C, marker=mk, ms=3, label="estimator run")
        axes[0, j].plot(x, b, color=TWIN_C, marker=mk, ms=3, ls="--", label=f"twin ({twin_kind})")
        axes[0, j].set_ylabel(ylabel)
        axes[1, j].plot(x, b - a, color=DIFF_C, marker=mk, ms=3)
        axes[1, j].axhline(0, color="0.6", lw=0.8)
        axes[1, j].set_ylabel("twin − est")
        axes[1, j].set_xlabel("training step")
    axes[0, 0].legend(frameon=False)
    fig.suptitle(f"Training curves: {title}")
    return fig


def grid_thresholds(run: Run):
    """Rounding thresholds in units of m (he_uniform grid), or [] if unknown or too dense to draw."""
    bits = run.flat.get("estimator.bits")
    if not isinstance(bits, int) or run.flat.get("estimator.grid", "he_uniform") != "he_uniform" or bits > 5:
        return []
    n = 2**bits - 1
    return [-1 + (2 * j + 1) / n for j in range(n)]


def level_index(x: np.ndarray, bits) -> np.ndarray:
    return np.rint((np.clip(x, -1, 1) + 1) * (2**bits - 1) / 2)


def scatter_panel(ax, x, y, thresholds, agree=None):
    for t in thresholds:
        ax.axvline(t, color="0.8", lw=0.7, zorder=0)
        ax.axhline(t, color="0.8", lw=0.7, zorder=0)
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    ax.plot([lo, hi], [lo, hi], color="0.3", lw=0.8, ls=":", label="y = x", zorder=1)
    ok = np.ones_like(x, bool) if agree is None else agree
    ax.scatter(x[ok], y[ok], s=2, alpha=0.15, color=EST_C, lw=0, rasterized=True,
               label="same quantized value" if agree is not None else None)
    if agree is not None and (~ok).any():
        ax.scatter(x[~ok], y[~ok], s=4, alpha=0.6, color=TWIN_C, lw=0, rasterized=True,
                   label=f"different quantized value ({(~ok).mean():.2%})")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(False)


def fig_alignment(run: Run, w: dict, title: str):
    m, th, bits = w["m"], grid_thresholds(run), run.flat.get("estimator.bits")
    est, mapped, twin = w["est"] / m, w["est_mapped"] / m, w["twin"] / m
    agree = level_index(est, bits) == level_index(twin, bits) if th else None
    identity = np.allclose(mapped, est)
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.6), layout="constrained")
    scatter_panel(axes[0], est, twin, th, agree)
    axes[0].set(title="raw", xlabel="final estimator weight $w_{est}/m$", ylabel="final twin weight $w_{twin}/m$")
    scatter_panel(axes[1], mapped, twin, th, agree)
    axes[1].set(title="through the mirror map" + (" (M = identity: twin not warped)" if identity else ""),
                xlabel="$M(w_{est})/m$", ylabel="final twin weight $w_{twin}/m$")
    for h in axes[0].legend(frameon=False, loc="upper left", markerscale=4).legend_handles:
        h.set_alpha(1)
    fig.suptitle(f"Weight alignment ({len(est)} sampled quantized weights): {title}")
    return fig


def fig_movement(run: Run, w: dict, title: str):
    m, th = w["m"], grid_thresholds(run)
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.6), layout="constrained")
    for ax, (name, k) in zip(axes, [("estimator run", "est"), ("twin", "twin")]):
        scatter_panel(ax, w[f"{k}0"] / m, w[k] / m, th)
        ax.set(title=name, xlabel=f"initial weight $w_{{{k},0}}/m$", ylabel=f"final weight $w_{{{k}}}/m$")
    axes[0].legend(frameon=False, loc="upper left")
    fig.suptitle(f"Weight movement (grey lines: rounding thresholds): {title}")
    return fig


def fig_agreement(run: Run, title: str):
    x = series(run.history, "log_step")
    qa, ae = series(run.history, "pair/quantized_agreement"), series(run.history, "pair/alignment_error")
    if not len(x) or len(qa) != len(x) or len(ae) != len(x):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.4), layout="constrained")
    mk = "o" if len(x) <= 30 else None
    axes[0].plot(x, qa, color=EST_C, marker=mk, ms=3)
    axes[0].set(xlabel="training step", ylabel="quantized weight agreement (fraction)")
    axes[1].plot(x, ae, color=TWIN_C, marker=mk, ms=3)
    axes[1].set(xlabel="training step", ylabel="alignment error (/ distance travelled)")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"Pair agreement over training: {title}")
    return fig


def load_weights(path: Path):
    import torch

    w = torch.load(path, weights_only=True, map_location="cpu")
    w = {k: v.double().numpy() for k, v in w.items()}
    need = {"est0", "twin0", "est", "twin", "est_mapped", "m"}
    return w if need <= set(w) and all(len(w[k]) for k in need) else None


def pair_figures(run: Run, label: str, out: Path, formats, notes: list) -> list[str]:
    files = []
    for name, make in [("curves", fig_curves), ("agreement", fig_agreement)]:
        fig = make(run, label)
        if fig is None:
            notes.append(f"{label}: no twin history (pair.twin=none?); {name} figure skipped")
        else:
            files += save(fig, out, name, formats)
    wp = run.path / "weights_sample.pt"
    try:
        w = load_weights(wp) if wp.exists() else None
    except Exception as e:  # a truncated or foreign file: skip the scatters, keep the report
        notes.append(f"{label}: cannot read weights_sample.pt ({e})")
        w = None
    if w is None:
        notes.append(f"{label}: no usable weights_sample.pt; scatter plots skipped")
        return files
    files += save(fig_alignment(run, w, label), out, "alignment_scatter", formats)
    files += save(fig_movement(run, w, label), out, "movement_scatter", formats)
    return files


# ----------------------------------------------------------------------------- learning-rate law
def describe(run: Run) -> str:
    opt = str(run.flat.get("optimizer.name"))
    opt = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}.get(opt, opt)
    twin, init = run.summary.get("twin", run.flat.get("pair.twin")), run.summary.get("twin_init")
    lr_warp = abs(run.value("twin_lr_factor") - 1) > 1e-12
    warp = "self-paired" if twin == "self" else {(True, True): "warped", (True, False): "init-warped",
                                                 (False, True): "lr-warped"}.get((init == "mirror", lr_warp), "unwarped")
    return f"{warp} {opt} ({twin})"


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
    keys = [k for k in (family_by or label_keys(flats, drop)) if k not in ("optimizer.name", "pair.twin", "optimizer.lr")]
    result = {}
    for (key, rs), extra in zip(fams.items(), make_labels(flats, keys) if keys else [""] * len(fams)):
        label = f"{describe(rs[0])} {re.sub(r' #[0-9]+$', '', extra)}".strip()  # describe() tells families apart
        lrs = sorted({r.value("optimizer.lr") for r in rs})
        entry = {"config": dict(zip(family_by, key)) if family_by else {}, "lr": lrs, "n_seeds": []}
        for name, f in [("disagreement", lambda r: 1 - r.value("pair/quantized_agreement")),
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
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), layout="constrained")
    titles = {"disagreement": "1 − quantized weight agreement (fraction)",
              "alignment_error": "alignment error (/ distance travelled)"}
    for ax, (metric, ylabel) in zip(axes, titles.items()):
        pos = [v for e in law.values() for v in e[metric]["min"] + e[metric]["mean"] if v is not None and v > 0]
        floor, floor_label = (min(pos) / 3 if pos else 1e-6), "0 measured (drawn at floor)"
        for i, (label, e) in enumerate(law.items()):
            c, d, x = OKABE_ITO[i % len(OKABE_ITO)], e[metric], np.array(e["lr"])
            mean, lo, hi = (np.array([np.nan if v is None else v for v in d[k]]) for k in ("mean", "min", "max"))
            clipped = mean <= 0
            mean_c = np.where(clipped, floor, mean)
            yerr = [mean_c - np.maximum(lo, floor), np.maximum(hi, floor) - mean_c]
            fit = f"slope {d['slope']:.2f}" if d["slope"] is not None else "no fit"
            ax.errorbar(x[~clipped], mean_c[~clipped], yerr=[yerr[0][~clipped], yerr[1][~clipped]], color=c,
                        marker="o", ms=5, ls="none", capsize=3, label=f"{label}: {fit}")
            if clipped.any():
                ax.plot(x[clipped], mean_c[clipped], "v", mfc="none", color=c, ms=7, label=floor_label)
                floor_label = None
            if d["slope"] is not None:
                xs = np.geomspace(x.min(), x.max(), 20)
                ax.plot(xs, 10 ** (d["intercept"] + d["slope"] * np.log10(xs)), color=c, ls="--", lw=1)
        ax.set(xscale="log", yscale="log", xlabel="optimizer learning rate η (peak)", ylabel=ylabel)
        ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    fig.suptitle("Learning-rate law: pair error vs learning rate (mean over seeds, bars: min–max)")
    return fig


# ----------------------------------------------------------------------------- tables
def write_tables(comparisons: list[dict], out: Path) -> None:
    heads = ["Comparison"] + [h for _, h, _ in COLUMNS] + ["n seeds"]
    lines = ["Mean ± sample standard deviation over seeds (NaN values left out; — : not available).", "",
             "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for c in comparisons:
        cells = [c["label"]] + [cell(c["metrics"][k], kind) for k, _, kind in COLUMNS] + [str(c["n_seeds"])]
        lines.append("| " + " | ".join(cells) + " |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    with open(out / "table.csv", "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["comparison", "n_seeds"] + [f"{k}_{s}" for k, _, _ in COLUMNS for s in ("mean", "std")])
        for c in comparisons:
            wr.writerow([c["label"], c["n_seeds"]] + [c["metrics"][k][s] for k, _, _ in COLUMNS for s in ("mean", "std")])


def aggregate(runs: list[Run], label_by) -> list[tuple[str, list[Run]]]:
    """Group runs that differ only by seed (and IGNORED keys); label each group."""
    groups: dict = {}
    drop = uninformative(runs)
    for r in runs:
        groups.setdefault(r.key(drop), []).append(r)
    reps = [({**rs[0].summary, **rs[0].flat} if label_by else rs[0].flat) for rs in groups.values()]
    keys = label_by or label_keys(reps, drop)
    for rs in groups.values():
        rs.sort(key=lambda r: (str(r.flat.get("seed")), str(r.path)))
    order = sorted(range(len(reps)), key=lambda i: [sort_key(reps[i].get(k)) for k in keys] + [repr(list(groups)[i])])
    labels, rs = make_labels(reps, keys), list(groups.values())
    return [(labels[i], rs[i]) for i in order]


def report(paths, out: Path, formats=("png", "pdf"), label_by=None, family_by=None, pair_figs=True) -> dict:
    notes: list = []
    runs = find_runs(paths, notes)
    if not runs:
        raise FileNotFoundError(f"no summary.json under {' '.join(map(str, paths))}")
    out.mkdir(parents=True, exist_ok=True)
    comparisons, pairs = [], {}
    with plt.rc_context(STYLE):
        for label, rs in aggregate(runs, label_by):
            keys = sorted({k for r in rs for k, v in r.summary.items() if isinstance(v, (int, float)) or v is None}
                          | {k for k, _, _ in COLUMNS})
            comparisons.append({"label": label, "n_seeds": len(rs), "seeds": [r.flat.get("seed") for r in rs],
                                "runs": [str(r.path) for r in rs],
                                "metrics": {k: stats([r.value(k) for r in rs]) for k in keys}})
            for r in rs if pair_figs else []:
                pl = f"{label} seed={r.flat.get('seed')}"
                d = slug(pl) if slug(pl) not in pairs else f"{slug(pl)}_{r.path.name}"
                pairs[d] = pair_figures(r, pl, out / "pairs" / d, formats, notes)
        law = lr_law(runs, family_by, notes)
        if law:
            save(fig_lr_law(law), out, "lr_law", formats)
        else:
            notes.append("lr law: no family with >= 3 learning rates; lr_law figure skipped")
    (out / "lr_law.json").write_text(json.dumps(clean(law), indent=1))
    write_tables(comparisons, out)
    result = clean({"comparisons": comparisons, "lr_law": law, "pairs": pairs, "notes": notes})
    (out / "summary.json").write_text(json.dumps(result, indent=1))
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="qatrun-report", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", help="run directories or multirun directories (searched recursively)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--formats", nargs="+", default=["png", "pdf"])
    p.add_argument("--label-by", nargs="+", default=None, metavar="KEY",
                   help="dotted config/summary keys naming each comparison (default: the keys that differ)")
    p.add_argument("--family-by", nargs="+", default=None, metavar="KEY",
                   help="config keys grouping runs for the lr law (default: everything but lr and seed)")
    p.add_argument("--no-pairs", action="store_true", help="skip the per-pair figures (large sweeps)")
    args = p.parse_args(argv)
    try:
        res = report(args.paths, Path(args.out), args.formats, args.label_by, args.family_by, not args.no_pairs)
    except FileNotFoundError as e:
        print(f"qatrun-report: {e}", file=sys.stderr)
        return 2
    for n in res["notes"]:
        print(f"note: {n}", file=sys.stderr)
    n_runs = sum(c["n_seeds"] for c in res["comparisons"])
    print(f"qatrun-report: {n_runs} run(s), {len(res['comparisons'])} comparison(s) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
