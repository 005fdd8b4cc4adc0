"""Drift over training: several pairs overlaid, mover agreement and alignment error against the step.

The correspondence between an estimator and its adjusted STE twin is first order in the learning
rate (arXiv 2405.05171; docs/method.md), so a pair drifts apart as training goes on. This figure
puts pairs trained for the same number of steps side by side (for example warped SGD, the plain STE
twin and Adam), each beside the agreement an untrained twin would score in the same run, and
``drift_table`` reads the same curves at fixed fractions of training for ``findings.md``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from .figures import NOT_DEFINED, who
from .names import grid_moves, map_words, optimizer_words
from .runs import Run
from .style import OKABE_ITO, series

FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)  # drift_table reads the curves at the logged steps nearest these


def select(runs: list[Run], selectors: list[str]) -> list[Run]:
    """Runs whose config (or summary) has every ``key=value`` of ``selectors``, e.g. ``experiment_name=long``."""
    pairs = []
    for s in selectors:
        key, sep, value = s.partition("=")
        if not sep or not key:
            raise ValueError(f"--drift wants KEY=VALUE (e.g. experiment_name=long), got {s!r}")
        pairs.append((key, value))
    got = lambda r, k: r.flat.get(k, r.summary.get(k))
    return [r for r in runs if all(str(got(r, k)) == v for k, v in pairs)]


def short_label(run: Run) -> str:
    """Optimizer and twin in a few words, e.g. 'SGD: STE twin from M(w0), lr × 0.61'."""
    return f"{optimizer_words(run.flat.get('optimizer.name'))}: {who(run)[1]}"


def curve(run: Run, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    x, y = series(run.history, "log_step"), series(run.history, key)
    return (x, y) if len(x) and len(y) == len(x) else None


def headline_map(run: Run) -> str:
    """The map the run's headline alignment error goes through (the one the theory predicts for it)."""
    return str(run.summary.get("alignment_map") or "mirror")


def fig_drift(runs: list[Run]):
    """Three panels over training steps: agreement over movers (dashed: untrained twin of the same run),
    the alignment error through M (solid) and through the identity (dotted), log scale, and the fraction
    of quantized weights that moved. One colour per pair."""
    runs = sorted(runs, key=short_label)
    drift = any(curve(r, "pair/range_drift") is not None for r in runs)  # where a grid moves: a fourth panel
    fig, axes = plt.subplots(1, 3 + drift, figsize=(14 + 4.5 * drift, 4.2), layout="constrained")
    for i, r in enumerate(runs):
        c = OKABE_ITO[i % len(OKABE_ITO)]
        lab = short_label(r)
        panels = [(axes[0], "pair/mover_agreement", dict(label=lab)),
                  (axes[0], "pair/mover_agreement_untrained", dict(ls="--", lw=1, alpha=0.7)),
                  (axes[1], "pair/alignment_error_mirror", dict()),
                  (axes[1], "pair/alignment_error_identity", dict(ls=":")),
                  (axes[2], "pair/mover_fraction", dict(label=lab))]
        for ax, key, kw in panels + ([(axes[3], "pair/range_drift", dict(label=lab))] if drift else []):
            xy = curve(r, key)
            if xy is not None:
                y = np.where(xy[1] > 0, xy[1], np.nan) if ax is axes[1] else xy[1]  # log axis: 0 at step 0
                ax.plot(xy[0], y, color=c, **kw)
    axes[0].plot([], [], color="0.4", ls="--", lw=1, label="untrained twin (same run, same colour)")
    axes[1].plot([], [], color="0.4", label="through M")
    axes[1].plot([], [], color="0.4", ls=":", label="through the identity")
    axes[0].set(xlabel="training step", ylabel="agreement over movers (fraction)", ylim=(-0.02, 1.02),
                title="final-level agreement of the weights that moved")
    axes[1].set(xlabel="training step", ylabel="alignment error (÷ distance travelled)", yscale="log",
                title="alignment error through M and through the identity")
    axes[2].set(xlabel="training step", ylabel="fraction of quantized weights", title="movers (changed level)")
    moving = [short_label(r) for r in runs if grid_moves(r)]
    if moving:  # their alignment curves are null, not 0: say so rather than leave them out silently
        axes[1].text(0.02, 0.02, f"{NOT_DEFINED}:\n" + "\n".join(moving), transform=axes[1].transAxes, fontsize=7,
                     va="bottom", color="0.3")
    if drift:
        axes[3].set(xlabel="training step", ylabel="mean |log(m_est / m_twin)|", title="range drift (grids that move)")
    for a in axes:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.set_xlim(left=0)
        a.legend(frameon=False, fontsize=8, loc="best")
    steps = sorted({r.summary.get("steps") for r in runs if r.summary.get("steps")})
    fig.suptitle(f"How the pairs drift apart over training ({', '.join(map(str, steps))} steps; "
                 f"{runs[0].summary.get('estimator') or runs[0].flat.get('estimator.name')} estimator)")
    return fig


def at_fraction(run: Run, key: str, frac: float) -> tuple[int | None, float | None]:
    """(logged step nearest to frac x the run's steps, the value there); the value is None when the key
    is not logged or not finite there (mover agreement before any weight moved)."""
    xy = curve(run, key)
    if xy is None:
        return None, None
    x, y = xy
    steps = run.summary.get("steps") or x.max()
    i = int(np.argmin(np.abs(x - frac * steps)))
    return int(x[i]), (float(y[i]) if np.isfinite(y[i]) else None)


KEYS = ("pair/mover_agreement", "pair/mover_agreement_untrained", "pair/alignment_error", "pair/mover_fraction")


def drift_table(runs: list[Run]) -> list[dict]:
    """Per run, at the logged steps nearest to FRACTIONS of training: mover agreement, its untrained
    baseline, the headline alignment error (``map`` names it) and the mover fraction."""
    rows = []
    for r in sorted(runs, key=short_label):
        at = []
        for f in FRACTIONS:
            read = {k.split("/")[-1]: at_fraction(r, k, f) for k in KEYS}
            step = next((s for s, _ in read.values() if s is not None), None)
            at.append({"step": step, **{k: v for k, (_, v) in read.items()}})
        rows.append({"label": short_label(r), "run": str(r.path), "map": headline_map(r), "moves": grid_moves(r),
                     "at": at})
    return rows


def drift_markdown(rows: list[dict]) -> list[str]:
    """findings.md lines: one table of the drift runs, read at FRACTIONS of training."""
    if not rows:
        return []
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}%"
    num = lambda v: "–" if v is None else f"{v:.3g}"
    steps = [a["step"] for a in rows[0]["at"]]
    out = ["Drift over training (one seed; mover agreement, untrained twin in brackets / alignment error):\n",
           "| pair | " + " | ".join(f"step {s}" for s in steps) + " |",
           "|---|" + "---|" * len(steps)]
    for row in rows:
        cells = [f"{pct(a['mover_agreement'])} ({pct(a['mover_agreement_untrained'])}) / {num(a['alignment_error'])}"
                 for a in row["at"]]
        where = NOT_DEFINED.replace("not defined", "alignment not defined") if row["moves"] else map_words(row["map"])
        out.append(f"| {row['label']} ({where}) | " + " | ".join(cells) + " |")
    return out + [""]
