"""What a finished run reports: ``summary.json`` (docs/metrics.md, "Outputs"), its HParams view and the
lines the command line prints at the end.

Everything is composed from the ``RunSpec`` the run was built from, the pair it trained and the curves it
kept; the figures themselves come from the pair's metrics (``qatrun.metrics``), named once in
``qatrun.metrics.names``.
"""

from __future__ import annotations

import math

from qatrun import dist
from qatrun.device import fp32_precision
from qatrun.estimators import describe
from qatrun.health import divergence
from qatrun.metrics.common import to_host
from qatrun.metrics.names import columns, headline_first, printed


def summarize(pair, spec, steps: int, final_eval: dict, history: dict) -> dict:
    """The final figures, the logged curves and the resolved config."""
    est, twin = pair.est, pair.spec
    out = {"steps": steps, "seed": spec.seed, "estimator": est.name, "estimator_description": describe(est),
           "twin": twin.mode, "alignment_map": "mirror" if twin.init == "mirror" else "identity",
           "alpha": est.alpha if est.in_class else None,
           "twin_lr_factor": twin.lr_factor, "twin_lr_scale": twin.lr_scale, "twin_init": twin.init}
    out.update(twin.figures())
    out.update(final_eval)
    out.update(to_host(pair.figures()))
    if history["log_step"]:
        for run in pair.runs if pair.measured else pair.runs[:1]:
            out[f"{run}/loss"] = history[f"{run}/loss"][-1]
    for metric in pair.metrics.values():
        out.update(metric.final(history))
    if out.get("pair/distance_travelled") == 0.0:
        out["alignment_note"] = ("the twin never moved (distance travelled 0): the alignment errors are 0/0, "
                                 "so they are null, not 0")
    out = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}
    out["history"] = history
    out["config"] = spec.run.config
    return out


def compose(pair, spec, steps: int, final_eval: dict, history: dict, device) -> dict:
    """``summarize`` plus what the run was and where: its layers, precision, processes, divergence verdict,
    HParams view, identity and the report columns of its metrics."""
    summary = summarize(pair, spec, steps, final_eval, history)
    summary["quantized_layers"] = list(spec.quantized)
    summary["quantized_inputs"] = list(spec.quantized[1:]) if spec.activation else []
    summary["fp32_precision"] = fp32_precision() if device.type == "cuda" else None
    summary["distributed"] = {"backend": dist.backend(), "world_size": dist.world()} if dist.active() else None
    why = divergence(history, summary, pair.runs, spec.shape.num_classes)
    summary["diverged"], summary["diverged_why"] = why is not None, why
    summary["hparams"] = hparam_view(spec, pair, steps)  # a sweep's HParams experiment reads them (qatrun.sweep)
    summary["fingerprint"], summary["provenance"] = spec.run.fingerprint, spec.run.provenance
    summary["columns"] = columns(list(pair.metrics))  # the report's table reads a metric's columns from here
    return summary


def headline_metrics(summary: dict) -> dict:
    """The figures TensorBoard's HParams shows for this run, the headline first."""
    return {k: summary[k] for k in headline_first(k for k in summary if "/" in k)}


def hparam_view(spec, pair, steps: int) -> dict:
    """The HParams columns: what ran, both estimators with their own resolved settings (k = 5.5, a shape's
    name: whatever ``params()`` gives), the twin's role and the seed."""
    est, twin = pair.est, pair.spec
    out = {"estimator": describe(est), "twin_estimator": describe(twin.estimator) if twin.estimator else "none",
           "twin_role": twin.role, "bits": est.bits, "grid": est.grid.kind}
    for key, value in est.params().items():
        out[key if key not in out else f"estimator.{key}"] = value
    out |= {"alpha": est.alpha if est.in_class else float("nan"), "optimizer": spec.optimizer, "lr": spec.lr,
            "twin": twin.mode, "twin_init": twin.init, "twin_lr_factor": twin.lr_factor,
            "twin_lr_scale": twin.lr_scale, "mirror_extension": twin.extension, "dataset": spec.data,
            "model": spec.model, "steps": steps, "seed": spec.seed, "quantizer": spec.quantizer,
            "activation": spec.activation or "none", "in_theorem": twin.in_theorem}
    return out


def summary_lines(summary: dict) -> list[str]:
    """What was compared, then one line per headline figure, with the untrained twin's score beside each
    agreement."""
    lines = []
    if summary.get("twin_description"):
        opt = summary.get("config", {}).get("optimizer", {})
        extension = "; M periodic outside [-m, m]" if summary.get("mirror_extension") == "periodic" else ""
        lines.append(f"  {summary.get('estimator_description')} against {summary.get('twin_estimator')}: "
                     f"{summary['twin_description']} ({summary.get('twin_role')}); {opt.get('name')} lr {opt.get('lr')}"
                     f"{extension}")
    for key, base in printed_keys(summary):
        v = summary[key]
        # None: a figure not defined for this run (the alignment through M where a grid moves), null in the JSON
        text = f"{v:.6g}" if isinstance(v, float) else "not defined" if v is None else str(v)
        if base is not None and isinstance(summary.get(base), float):
            text += f"  (untrained twin {summary[base]:.4g})"
        lines.append(f"  {key:32s} {text}")
    return lines


def printed_keys(summary: dict) -> list[tuple[str, str | None]]:
    """The printed figures this summary holds: its metrics' (every registered one's, for an older summary)."""
    metrics = (summary.get("config", {}).get("trainer") or {}).get("metrics")
    try:
        keys = printed(None if metrics in (None, "all") else list(metrics))
    except ValueError:  # a metric this installation does not have: print what it can name
        keys = printed()
    return [(k, b) for k, b in keys if k in summary]
