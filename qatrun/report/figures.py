"""Per-pair figures: training curves, weight alignment and movement scatters, agreement over steps.

The scatters read everything about the grid from the run's ``weights_sample.pt``: the rounding
thresholds (in units of m) and each sampled weight's final level index in both runs. Each run is shown in
units of its own range (``m``; ``m_twin`` for the twin where the sample holds it): with a learned or
recomputed range the two grids differ, a level is an index on each run's own grid, and the alignment
through M is not defined (the panels say so); the range drift is drawn where it was measured.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from qatrun.rundir import WEIGHTS_SAMPLE
from qatrun.twin import ROLES

from .names import (OUTSIDE, estimator_words, grid_moves, in_theorem, optimizer_words, predicted,
                    quantizer_setting, short_estimator, twin_role, twin_rule)
from .runs import Run
from .style import DIFF_C, EST_C, TWIN_C, save, scatter_panel, series, shared_limits

SAMPLE_KEYS = ("est0", "twin0", "est", "twin", "est_mapped", "m")  # in every weights_sample.pt
LEVEL_KEYS = ("thresholds", "level_est", "level_twin")  # saved by newer trainers
MAX_THRESHOLDS = 31  # more (over 5 bits) would grey out the scatter: not drawn
UNITS = "w/m: a weight in units of its layer's grid range m (the quantization levels lie in [−m, m])"
OWN_UNITS = "w/m: each run's weights in units of its own current range m (its levels lie in [−m, m])"
NOT_DEFINED = "not defined (the grid moves)"  # the alignment through M: each run's grid moved on its own


def who(run: Run) -> tuple[str, str]:
    """Plain names of the two runs, e.g. ('tanh estimator (2 bits, α = 0.61)', 'STE twin from M(w0), lr × 0.61')."""
    s, f = run.summary, run.flat
    parts = [f"{f['estimator.bits']} bits"] if f.get("estimator.bits") is not None else []
    parts += [q] if (q := quantizer_setting(f)) else []
    if isinstance(s.get("alpha"), (int, float)):
        parts.append(f"α = {s['alpha']:.3g}")
    name = short_estimator(estimator_words(run) or f.get("estimator.name"))  # with its options: tanh(k=5.5)
    est = f"{name} estimator" + (f" ({', '.join(parts)})" if parts else "")
    twin = s.get("twin", f.get("pair.twin"))
    if twin == "none":
        return est, "no twin"
    lr = s.get("twin_lr_factor") or 1.0
    if twin == "self":
        return est, f"the same estimator as twin, lr × {s.get('twin_lr_scale') or lr:g}"
    twin_est = short_estimator(s.get("twin_estimator") or "ste")  # an A-B pair names its twin's estimator
    start = ("M(w0)" if twin_est == "STE" else "M_B⁻¹(M_A(w0))") if s.get("twin_init") == "mirror" else "w0"
    return est, f"{twin_est} twin from {start}, lr × {lr:.3g}"


def subtitle(run: Run) -> str:
    """What else ran, in words: optimizer, learning rate, steps, seed."""
    f = run.flat
    opt = optimizer_words(f.get("optimizer.name"))
    rule = twin_rule(run)
    bits = [f"{opt}" + (f" ({rule} rule)" if rule else "")
            + (f" at lr {f['optimizer.lr']:g}" if isinstance(f.get("optimizer.lr"), float) else "")]
    role = twin_role(run)
    if role not in (None, "jitter", "none"):
        bits.append(f"{ROLES[role].word if role in ROLES else role} twin" + ("" if predicted(run) else ", not the predicted one"))
    bits += [f"{run.summary['steps']} steps"] if run.summary.get("steps") else []
    bits += [f"seed {f['seed']}"] if f.get("seed") is not None else []
    inputs = run.summary.get("quantized_inputs")
    more = [f"quantized inputs: {', '.join(inputs)}"] if inputs else []
    more += [] if role in (None, "jitter", "none") or in_theorem(run) else [OUTSIDE]
    return ", ".join(bits) + ("\n" + "; ".join(more) if more else "")  # a line of its own: titles stay narrow


def title(run: Run, what: str, extra: str = "") -> str:
    est, twin = who(run)
    return f"{what}: {est} vs {twin}\n{subtitle(run)}{extra}"


def fig_curves(run: Run, label: str = ""):
    h = run.history
    panels = [("log_step", "loss", "train loss (cross-entropy)"), ("eval_step", "test_loss", "test loss (cross-entropy)"),
              ("eval_step", "test_acc", "test accuracy (fraction)")]
    if not any(len(series(h, f"twin/{k}")) for _, k, _ in panels):
        return None
    est_name, twin_name = who(run)
    fig, axes = plt.subplots(2, 3, figsize=(11, 4.8), sharex="col", gridspec_kw={"height_ratios": [3, 1.3]}, layout="constrained")
    for j, (xk, k, ylabel) in enumerate(panels):
        x, a, b = series(h, xk), series(h, f"est/{k}"), series(h, f"twin/{k}")
        if not len(x) or len(a) != len(x) or len(b) != len(x):
            axes[0, j].set_title(f"{ylabel}: not logged")
            continue
        mk = "o" if len(x) <= 30 else None
        axes[0, j].plot(x, a, color=EST_C, marker=mk, ms=3, label=est_name.split(" (")[0] + " run")
        axes[0, j].plot(x, b, color=TWIN_C, marker=mk, ms=3, ls="--", label=twin_name.split(",")[0])
        axes[0, j].set_ylabel(ylabel)
        axes[1, j].plot(x, b - a, color=DIFF_C, marker=mk, ms=3)
        axes[1, j].axhline(0, color="0.6", lw=0.8)
        axes[1, j].set_ylabel("twin − estimator run")
        axes[1, j].set_xlabel("training step")
        axes[1, j].set_xlim(left=0)  # every panel starts at step 0 (the test curves are measured there)
    handles, names = axes[0, 0].get_legend_handles_labels()
    if handles:  # below the panels: a legend inside one would sit on its curves
        fig.legend(handles, names, loc="outside lower center", ncols=2, frameon=False)
    if axes[0, 0].lines and axes[0, 1].lines:  # train and test loss: one quantity (cross-entropy), one scale
        lo = min(ax.dataLim.y0 for ax in axes[0, :2])
        hi = max(ax.dataLim.y1 for ax in axes[0, :2])
        axes[0, 0].sharey(axes[0, 1])
        axes[0, 1].set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    fig.suptitle(title(run, "Training curves"))
    return fig


def thresholds(w: dict) -> list[float]:
    """The saved rounding thresholds in units of m, or [] if not saved or too dense to draw."""
    th = w.get("thresholds")
    return [] if th is None or len(th) > MAX_THRESHOLDS else [float(t) for t in th]


def agreement(w: dict):
    """Per sampled weight: same final level in both runs (from the saved levels), or None if not saved."""
    return w["level_est"] == w["level_twin"] if "level_est" in w and "level_twin" in w else None


def ranges(w: dict) -> tuple[np.ndarray, np.ndarray]:
    """(the estimator run's range, the twin's) per sampled weight: each run's own (``m_twin`` where the sample
    holds it: a grid that moves, or per-channel ranges, differs between the runs), else the one ``m``."""
    return w["m"], w.get("m_twin", w["m"])


def units(w: dict) -> str:
    m, mt = ranges(w)
    return UNITS if np.array_equal(m, mt) else OWN_UNITS


def fig_alignment(run: Run, w: dict, label: str = ""):
    (m, mt), th, agree = ranges(w), thresholds(w), agreement(w)
    est, mapped, twin = w["est"] / m, w["est_mapped"] / mt, w["twin"] / mt
    moves = grid_moves(run)
    identity = np.allclose(mapped, est)
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 5.0), layout="constrained", sharex=True, sharey=True)
    lims = shared_limits([(est, twin)] + ([] if moves else [(mapped, twin)]), square=True)  # one scale: w/m
    scatter_panel(axes[0], est, twin, th, agree, lims=lims)
    axes[0].set(title="raw" + (" (levels on each run's own grid)" if moves else ""),
                xlabel="final estimator-run weight $w_{est}/m$", ylabel="final twin weight $w_{twin}/m$")
    if moves:  # M maps one fixed grid onto another; with moving grids there is nothing to map through
        axes[1].text(0.5, 0.5, f"alignment through M:\n{NOT_DEFINED}", transform=axes[1].transAxes, ha="center",
                     va="center", color="0.3")
        axes[1].set(title="estimator run through the mirror map M", xlabel="$M(w_{est})/m$")
        axes[1].grid(False)
    else:
        scatter_panel(axes[1], mapped, twin, th, agree, lims=lims)
        axes[1].set(title="estimator run through the mirror map M"
                    + (" (M = identity: twin not warped)" if identity else ""),
                    xlabel="$M(w_{est})/m$", ylabel="final twin weight $w_{twin}/m$")
    for h in axes[0].legend(frameon=False, loc="upper left").legend_handles:  # markers the points' size,
        h.set_alpha(1)  # opaque so that they show
    fig.suptitle(title(run, "Weight alignment", f"; {len(est)} sampled quantized weights"))
    fig.supxlabel(units(w) + ("; grey lines: rounding thresholds" if th else ""), fontsize=8, color="0.3")
    return fig


def fig_movement(run: Run, w: dict, label: str = ""):
    """How far each weight moved, ``w_final - w0``, against where it started, ``w0``, each run in units of its
    own range."""
    th = thresholds(w)
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.8), layout="constrained", sharex=True, sharey=True)
    est_name, twin_name = who(run)
    moves = {k: (w[f"{k}0"] / m, w[k] / m - w[f"{k}0"] / m) for k, m in zip(("est", "twin"), ranges(w))}
    lims = shared_limits(moves.values(), square=False)  # one scale: how far each run moved, side by side
    for ax, (name, k) in zip(axes, [(est_name.split(" (")[0] + " run", "est"), (twin_name.split(",")[0], "twin")]):
        scatter_panel(ax, *moves[k], th, diagonal=False, lims=lims)
        ax.set(title=name, xlabel=f"initial weight $w_{{{k},0}}/m$",
               ylabel=f"movement $(w_{{{k}}} - w_{{{k},0}})/m$")
    axes[0].legend(frameon=False, loc="upper left")
    fig.suptitle(title(run, "Weight movement"))
    fig.supxlabel(units(w) + ("; grey lines: rounding thresholds (crossing one changes the level)" if th else ""),
                  fontsize=8, color="0.3")
    return fig


AT0 = {"pair/mover_agreement": np.nan, "pair/mover_agreement_untrained": np.nan,  # step 0 by construction: no
       "pair/quantized_agreement_untrained": 1.0, "pair/alignment_error_mirror": 0.0,  # mover yet, agreement 1,
       "pair/alignment_error_identity": 0.0, "pair/range_drift": np.nan}  # error 0 (a moving grid: as measured)


def fig_agreement(run: Run, label: str = ""):
    """Over training: mover agreement and overall agreement, each beside what an untrained twin would
    score in the same run, the alignment error (through M and through the identity where logged; not defined
    where a grid moves) and, where the grids move, how far the two runs' ranges drifted apart."""
    h = run.history
    x = series(h, "log_step")
    qa, ae = series(h, "pair/quantized_agreement"), series(h, "pair/alignment_error")
    if not len(x) or len(qa) != len(x) or len(ae) != len(x):
        return None
    full = lambda k: series(h, k) if len(series(h, k)) == len(x) else None  # older runs lack the newer curves
    curves = {k: full(k) for k in AT0}
    moves = grid_moves(run)
    if x[0] != 0:  # the trainer checks step 0 on a fixed grid: prepend it (a moving grid's step 0 is not known)
        curves = {k: (None if v is None else np.r_[np.nan if moves else AT0[k], v]) for k, v in curves.items()}
        x, qa, ae = np.r_[0, x], np.r_[np.nan if moves else 1.0, qa], np.r_[np.nan if moves else 0.0, ae]
    movers, drift = curves["pair/mover_agreement"] is not None, curves["pair/range_drift"] is not None
    n = 2 + movers + drift
    fig, axes = plt.subplots(1, n, figsize=((9.5, 13.5, 18.0)[n - 2], 3.8), layout="constrained")
    mk = "o" if len(x) <= 30 else None
    base = dict(color="0.45", ls="--", marker=mk, ms=2, label="untrained twin (the same run)")
    if movers:  # NaN until the first weight changes level: those steps are simply not drawn
        axes[0].plot(x, curves["pair/mover_agreement"], color=EST_C, marker=mk, ms=3, label="the pair")
        if curves["pair/mover_agreement_untrained"] is not None:
            axes[0].plot(x, curves["pair/mover_agreement_untrained"], **base)
        axes[0].set(xlabel="training step", ylabel="agreement over movers (fraction)",
                    title="weights that changed level", ylim=(-0.02, 1.02))
        axes[0].legend(frameon=False, loc="center right")
    ax = axes[1 if movers else 0]
    ax.plot(x, qa, color=EST_C, marker=mk, ms=3, label="the pair")
    if curves["pair/quantized_agreement_untrained"] is not None:
        ax.plot(x, curves["pair/quantized_agreement_untrained"], **base)
        ax.legend(frameon=False, loc="best")
    ax.set(xlabel="training step", ylabel="quantized weight agreement (fraction)", title="all quantized weights")
    alignment_panel(axes[1 + movers], x, ae, curves, mk, moves)
    if drift:
        axes[-1].plot(x, curves["pair/range_drift"], color=DIFF_C, marker=mk, ms=3)
        axes[-1].set(xlabel="training step", ylabel="mean |log(m_est / m_twin)|",
                     title="range drift (the two runs' ranges)")
        axes[-1].set_ylim(bottom=0)
    for a in axes:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.set_xlim(left=0)
    fig.suptitle(title(run, "Pair agreement over training"))
    return fig


def alignment_panel(ax, x, ae, curves: dict, mk, moves: bool) -> None:
    """The alignment error over training: through M and through the identity where logged, the headline
    otherwise; where a grid moves, not defined, and the panel says so."""
    ax.set(xlabel="training step", ylabel="alignment error (÷ distance travelled)", title="alignment")
    if moves:
        ax.text(0.5, 0.5, f"alignment error:\n{NOT_DEFINED}", transform=ax.transAxes, ha="center", va="center",
                color="0.3")
        ax.set_yticks([])
        ax.set_xlim(0, max(float(np.nanmax(x)), 1.0))  # the same steps as the panels beside it
        return
    mirror, ident = curves["pair/alignment_error_mirror"], curves["pair/alignment_error_identity"]
    if mirror is not None or ident is not None:
        if mirror is not None:
            ax.plot(x, mirror, color=TWIN_C, marker=mk, ms=3, label="through M")
        if ident is not None:
            ax.plot(x, ident, color=DIFF_C, marker=mk, ms=3, ls=":", label="through the identity")
        ax.set_yscale("symlog", linthresh=0.01)
        ax.legend(frameon=False)
    else:
        ax.plot(x, ae, color=TWIN_C, marker=mk, ms=3)


def load_weights(path: Path):
    """The weight sample as numpy arrays (fp64; level indices stay int64), or None when a key every sample
    holds (SAMPLE_KEYS) is missing or empty. Level indices of another length than the sample are dropped."""
    import torch

    w = torch.load(path, weights_only=True, map_location="cpu")
    w = {k: (v.double() if v.is_floating_point() else v).numpy() for k, v in w.items()}
    if not (set(SAMPLE_KEYS) <= set(w) and all(len(w[k]) for k in SAMPLE_KEYS)):
        return None
    if any(k in w and len(w[k]) != len(w["est"]) for k in ("level_est", "level_twin")):
        w.pop("level_est", None), w.pop("level_twin", None)
    if "m_twin" in w and len(w["m_twin"]) != len(w["est"]):  # the twin's own range: only whole
        w.pop("m_twin")
    return w


def pair_figures(run: Run, label: str, out: Path, formats, notes: list) -> list[str]:
    files = []
    for name, make in [("curves", fig_curves), ("agreement", fig_agreement)]:
        fig = make(run, label)
        if fig is None:
            notes.append(f"{label}: no twin history (pair.twin=none?); {name} figure skipped")
        else:
            files += save(fig, out, name, formats)
    wp = run.path / WEIGHTS_SAMPLE
    try:
        w = load_weights(wp) if wp.exists() else None
    except Exception as e:  # a truncated or foreign file: skip the scatters, keep the report
        notes.append(f"{label}: cannot read weights_sample.pt ({e})")
        w = None
    if w is None:
        notes.append(f"{label}: no usable weights_sample.pt; scatter plots skipped")
        return files
    if not all(k in w for k in LEVEL_KEYS):
        notes.append(f"{label}: weights_sample.pt predates saved levels; thresholds not drawn")
    files += save(fig_alignment(run, w, label), out, "alignment_scatter", formats)
    files += save(fig_movement(run, w, label), out, "movement_scatter", formats)
    return files
