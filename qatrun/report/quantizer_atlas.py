"""The quantizer atlas: does the equivalence survive the quantizers researchers train with?

One row per quantizer setting (per-tensor and per-channel fixed ranges, learned steps, recomputed ranges,
quantized inputs) and optimizer: the mover agreement of the twin the optimizer's rule predicts, of the other
rule's twin, of the jitter floor and of the untrained twin, and the verdict of ``verdict.py``: the rows of the
optimizer atlas (``atlas.verdict_rows``), keyed by the quantizers instead of the optimizer. A pair whose grid
moves (``lsq``, ``dynamic``) is outside the paper's fixed-grid theorem: its twin is the natural one (from the
initial grid) and the table, the figure and ``findings.md`` say "outside the theorem: measured" beside it.
``qatrun-report`` draws it with ``--quantizer-atlas KEY=VALUE`` (e.g. ``experiment_name=quantizers``), or
unasked when the runs hold verdicts for two or more quantizer settings.
"""

from __future__ import annotations

import matplotlib.pyplot as plt

from .atlas import RULE_ORDER, draw_marks, gap, legend, pct, verdict_rows
from .names import OUTSIDE, optimizer_words, setting_order
from .style import OKABE_ITO
from .verdict import PARTLY, SUPPORTS

PAPER = "tensor"  # the paper's grid (one fixed range per tensor, float inputs) in the atlas's first column
GAP_LIMITS = (-0.5, 1.25)  # the gap-closed panel's axis; a bar beyond it is cut there and its value written


def label(r: dict) -> str:
    """The row's setting in words: its quantizers (``lsq (per channel)``, ``W2 + A2 pact``), then whatever
    else tells its family apart (``names.settings``)."""
    return " ".join(filter(None, (r["quantizer"] or PAPER, r["other_setting"])))


def quantizer_atlas(runs, asked: bool = False) -> list[dict]:
    """One row per quantizer setting, optimizer and lr with a verdict; [] unless ``asked`` (the runs were picked
    for it) or the rows hold two settings or more."""
    rows = verdict_rows(runs)
    for r in rows:
        r["label"] = label(r)
    if not rows or (not asked and len({r["label"] for r in rows}) < 2):
        return []
    return sorted(rows, key=lambda r: (setting_order(r["config"]), r["label"], RULE_ORDER.get(r["rule"], 9),
                                       r["optimizer"], r["lr"]))


def theorem(r: dict) -> str:
    return "inside" if r["in_theorem"] else OUTSIDE


def quantizer_atlas_markdown(rows: list[dict]) -> str:
    """The atlas as a table (mover agreement in %, mean ± sample std over seeds)."""
    lines = ["| Quantizer | Theorem | Optimizer | Twin rule | lr | Seeds | Movers | Predicted twin | Other rule's twin | "
             "Jitter floor | Untrained twin | Gap closed | Verdict |", "|" + "---|" * 13]
    for r in rows:
        lines.append(f"| {r['label']} | {theorem(r)} | {r['optimizer']} | {r['rule']} | {r['lr']:g} | {r['seeds']} | "
                     f"{pct(r['movers'])} | {pct(r['predicted'])} | {pct(r['other'])} | {pct(r['jitter'])} | "
                     f"{pct(r['untrained'])} | {gap(r)} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def _layout(rows: list[dict]):
    """(row labels top to bottom, optimizers in rule order, {(label, optimizer): the row at its lowest lr})."""
    labels = list(dict.fromkeys(r["label"] for r in rows))
    opts = sorted({r["optimizer"] for r in rows}, key=lambda o: (min(RULE_ORDER.get(r["rule"], 9) for r in rows
                                                                     if r["optimizer"] == o), o))
    cell: dict = {}
    for r in rows:
        k = (r["label"], r["optimizer"])
        if k not in cell or r["lr"] < cell[k]["lr"]:
            cell[k] = r
    return labels, opts, cell


def fig_quantizer_atlas(rows: list[dict]):
    """Per quantizer setting (one line each, shaded where the grid moves): the four twins' mover agreement under
    each optimizer at its lowest lr, and the share of the gap each predicted pair closes (the verdict's figure)."""
    labels, opts, cell = _layout(rows)
    y = {lab: len(labels) - 1 - i for i, lab in enumerate(labels)}
    outside = {r["label"] for r in rows if not r["in_theorem"]}
    fig, axes = plt.subplots(1, len(opts) + 1, figsize=(max(4.6 * len(opts) + 3.4, 11), 0.5 * len(labels) + 2.4),
                             sharey=True, layout="constrained", gridspec_kw={"width_ratios": [3] * len(opts) + [1.8]})
    for ax in axes:
        for lab in outside:
            ax.axhspan(y[lab] - 0.5, y[lab] + 0.5, color="0.93", lw=0, zorder=0)
    for ax, opt in zip(axes, opts):
        some = next(r for r in rows if r["optimizer"] == opt)
        lrs = sorted({r["lr"] for (_, o), r in cell.items() if o == opt})
        for (lab, o), r in cell.items():
            if o == opt:
                draw_marks(ax, r, y[lab])
        ax.set(title=f"{optimizer_words(opt)} ({some['rule']} rule), lr {', '.join(f'{v:g}' for v in lrs)}",
               xlabel="agreement over movers (fraction)", xlim=(-0.02, 1.02))
    _gap_panel(axes[-1], cell, opts, y)
    axes[0].set_yticks(list(y.values()), [lab + (f"\n{OUTSIDE}" if lab in outside else "") for lab in y])
    axes[0].set_ylim(-0.6, len(labels) - 0.4)
    legend(fig, axes)
    fig.suptitle("Quantizer atlas: does the twin the optimizer's rule predicts track the estimator run?"
                 + (f"\nshaded: the grid moves, {OUTSIDE} (the twin is the natural one)" if outside else ""))
    return fig


def _gap_panel(ax, cell: dict, opts: list[str], y: dict) -> None:
    """Bars: the share of the gap between the other rule's twin and the jitter floor that the predicted twin
    closes, one bar per optimizer; 75% and 25% mark "supports" and "partly supports"."""
    h = 0.8 / len(opts)
    lo, hi = GAP_LIMITS
    for i, opt in enumerate(opts):
        colour = OKABE_ITO[(2, 4, 3, 5)[i % 4]]
        for (lab, o), r in cell.items():
            g = r["gap_closed"]
            if o != opt or g is None:
                continue
            at = y[lab] + (len(opts) - 1) / 2 * h - i * h
            ax.barh(at, min(max(g, lo), hi), height=h * 0.9, color=colour,
                    label=f"gap closed, {optimizer_words(opt)}")
            if not lo <= g <= hi:  # cut at the axis: its value written beside the zero line, off the bar
                ax.text(-0.03 if g > hi else 0.03, at, f"{100 * g:.0f}%", va="center", ha="right" if g > hi else "left",
                        fontsize=7, color="0.2")
    for x, ls in ((SUPPORTS, "--"), (PARTLY, ":"), (0, "-")):
        ax.axvline(x, color="0.4", lw=0.8, ls=ls)
    ax.set(title="gap closed (the verdict)\ndashed: supports, dotted: partly", xlim=GAP_LIMITS,
           xlabel="share of the gap from the\nother rule's twin to the jitter floor")
    ax.xaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
