"""The report's plot style and the drawing helpers its figures share: the palette, the rc settings, axis
limits robust to outliers, the scatter panel, and saving a figure in every format without a timestamp."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
EST_C, TWIN_C, DIFF_C = OKABE_ITO[0], OKABE_ITO[1], "#333333"
STYLE = {"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "xtick.labelsize": 9,
         "ytick.labelsize": 9, "legend.fontsize": 9, "figure.titlesize": 11, "axes.grid": True,
         "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False, "pdf.fonttype": 42}
PCT = (0.5, 99.5)  # axis limits from these percentiles of the data; points outside are counted on the figure


def save(fig, out_dir: Path, name: str, formats) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.{ext}" for ext in formats]
    for p in paths:
        meta = {"CreationDate": None} if p.suffix == ".pdf" else None  # same figure, same bytes: no timestamp
        fig.savefig(p, dpi=150 if p.suffix == ".png" else 300, metadata=meta)  # pdf: dpi of the rasterized scatter
    plt.close(fig)
    return list(map(str, paths))


def series(h: dict, key: str) -> np.ndarray:
    return np.array(h.get(key) or [], dtype=float)


def limits(*arrays, pct=PCT, square=False):
    """Axis limits from percentiles (so a few outliers do not squash the cloud), with a 5% margin."""
    lims = []
    for a in arrays:
        lo, hi = np.percentile(a, pct) if len(a) else (0.0, 1.0)
        pad = 0.05 * (hi - lo) or 0.05
        lims.append((float(lo - pad), float(hi + pad)))
    if square:
        lo, hi = min(l for l, _ in lims), max(h for _, h in lims)
        lims = [(lo, hi)] * len(lims)
    return lims


def shared_limits(pairs, square: bool):
    """One (x limits, y limits) for panels that show the same quantity: the union of each panel's robust limits."""
    each = [limits(x, y, square=square) for x, y in pairs]
    xl = (min(l[0][0] for l in each), max(l[0][1] for l in each))
    yl = (min(l[1][0] for l in each), max(l[1][1] for l in each))
    if square:
        xl = yl = (min(xl[0], yl[0]), max(xl[1], yl[1]))
    return xl, yl


def scatter_panel(ax, x, y, thresholds, agree=None, diagonal=True, lims=None):
    """Scatter with robust limits (``lims``: given, shared with a paired panel); the number of points outside
    the axes is written in the panel."""
    (xl, yl) = lims or limits(x, y, square=diagonal)
    for t in thresholds:
        ax.axvline(t, color="0.8", lw=0.7, zorder=0)
        if diagonal:
            ax.axhline(t, color="0.8", lw=0.7, zorder=0)
        else:  # movement: a weight starting at x crosses threshold t once it moves by t - x
            ax.plot([xl[0], xl[1]], [t - xl[0], t - xl[1]], color="0.8", lw=0.7, zorder=0)
    if diagonal:
        ax.plot(xl, xl, color="0.3", lw=0.8, ls=":", label="y = x (identical weights)", zorder=1)
    else:
        ax.axhline(0, color="0.3", lw=0.8, ls=":", label="no movement", zorder=1)
    ok = np.ones_like(x, bool) if agree is None else agree
    ax.scatter(x[ok], y[ok], s=2, alpha=0.15, color=EST_C, lw=0, rasterized=True,
               label="same quantized value in both runs" if agree is not None else None)
    if agree is not None and (~ok).any():
        ax.scatter(x[~ok], y[~ok], s=4, alpha=0.6, color=TWIN_C, lw=0, rasterized=True,
                   label=f"different quantized value ({(~ok).mean():.2%})")
    ax.set_xlim(xl)
    ax.set_ylim(yl)
    out = int(((x < xl[0]) | (x > xl[1]) | (y < yl[0]) | (y > yl[1])).sum())
    if out:
        ax.text(0.98, 0.02, f"{out} of {len(x)} points outside the axes", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=8, color="0.3")
    if diagonal:
        ax.set_aspect("equal", adjustable="box")
    ax.grid(False)
    return out
