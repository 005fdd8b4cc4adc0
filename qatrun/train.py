"""The lockstep loop: an estimator run and its twin on the same batches, in one process.

``train(cfg, run_dir)`` builds the pair from the config (the only place that reads it), trains
both runs step by step on identical batches, logs the pair figures (README, "Metric
definitions") to TensorBoard and returns the final figures, which it also writes to
``<run_dir>/summary.json``. The hot loop makes no host syncs: losses, distance travelled, change
points and the NaN watch stay on the device until ``log_every``.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from qatrun import checkpoint as ckpt
from qatrun import checks, dist, estimators, optim
from qatrun.data import build_data
from qatrun.files import write_json
from qatrun.metrics import pearson
from qatrun.metrics.function import MIN_CURVE_POINTS
from qatrun.metrics.common import to_host
from qatrun.pair import Pair, build_run, resolve_twin
from qatrun.record import LAYOUT, Recorder
from qatrun.tblog import TBLogger


class TrainingError(RuntimeError):
    """A run that cannot go on (NaN loss, broken step-0 invariant); the message says why."""


def select_device(name: str) -> torch.device:
    checks.one_of("device", name, ("auto", "cpu", "cuda"))
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA device is available; use device=cpu or device=auto")
    return torch.device(name)


def set_determinism(on: bool) -> None:
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def group(cfg_group) -> tuple[str, dict]:
    """A config group as (registry name, the other keys as plain values)."""
    values = OmegaConf.to_container(cfg_group, resolve=True)
    return values.pop("name"), values


def build_estimators(cfg: DictConfig):
    """The run's estimator and the twin's own (None unless ``estimator@twin_estimator=...`` was chosen)."""
    def one(cfg_group):
        name, options = group(cfg_group)
        return estimators.create(name, **options)

    twin_cfg = OmegaConf.select(cfg, "twin_estimator")
    return one(cfg.estimator), (one(twin_cfg) if twin_cfg is not None else None)


def build_pair(cfg: DictConfig, num_classes: int, device, steps: int, measure: bool = True) -> Pair:
    """The edge: read the config once, build the pair from plain values."""
    est, twin_est = build_estimators(cfg)
    model = build_run(cfg.model.name, num_classes, est, cfg.seed, cfg.model.he_init, **cfg.model.kwargs)
    opt_name, opt_options = group(cfg.optimizer)
    spec = resolve_twin(cfg.pair.twin, est, optim.warps(opt_name), cfg.pair.twin_lr_scale, twin_est)
    return Pair(model.to(device), est, spec, optimizer=opt_name, lr=opt_options.pop("lr"),
                optimizer_options=opt_options, steps=steps, warmup_frac=cfg.trainer.warmup_frac,
                precision=cfg.precision, channels_last=cfg.channels_last, compile=cfg.compile,
                changepoints=cfg.trainer.changepoints, measure=measure)


def log_figures(pair: Pair, step: int, losses: list[float] | None) -> dict:
    """The figures logged every ``log_every`` steps: weight agreement and alignment, losses, lrs."""
    figs = to_host(pair.weight_figures() | pair.changepoint_figures(per_layer=True))
    for run, v in zip(pair.runs, losses or []):
        figs[f"{run}/loss"] = v
    for run, lr in zip(pair.runs, pair.lrs()):
        figs[f"{run}/lr"] = lr
    return figs


def check_finite(pair: Pair, run_dir: Path) -> None:
    """Stop on a NaN/Inf loss, naming the run and the step and keeping the last good checkpoint."""
    bad = pair.first_nonfinite()
    if bad is not None:
        last = run_dir / ckpt.NAME
        kept = f"the last good checkpoint is kept at {last}" if last.exists() else "no checkpoint was written yet"
        raise TrainingError(f"the {bad[0]} run's loss became NaN or Inf at step {bad[1]}; training stopped, {kept}. "
                            "Lower optimizer.lr or check the data.")


def train(cfg: DictConfig, run_dir: str | os.PathLike) -> dict:
    """Train the pair described by ``cfg``; write TensorBoard events, checkpoints and summary.json."""
    run_dir = Path(run_dir)
    main = dist.is_main()  # under torchrun only rank 0 measures, logs and writes
    if main:
        checks.writable_dir(run_dir)
    set_determinism(cfg.deterministic)
    device = dist.setup(cfg.device) or select_device(cfg.device)
    data_name, data_options = group(cfg.dataset)
    data = build_data(data_name, device, cfg.seed, dist.world(), dist.rank(), **data_options)
    tr = cfg.trainer
    steps = tr.max_steps if tr.max_steps is not None else tr.epochs * data.steps_per_epoch
    checks.positive("trainer.max_steps" if tr.max_steps is not None else "trainer.epochs", steps)
    for key in ("log_every", "eval_every", "checkpoint_every"):
        checks.positive(f"trainer.{key}", tr[key])
    checks.positive("optimizer.lr", cfg.optimizer.lr)
    pair = build_pair(cfg, data.num_classes, device, steps, main)

    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("resume", None)  # where a run continues is not part of what it computes
    start, rec = 0, Recorder()
    blob = ckpt.load_for_resume(run_dir, config)
    if blob is not None:
        pair.load_state_dict(blob["state"]["pair"])
        rec.load_state_dict(blob["state"]["history"])
        ckpt.restore_rng(blob)
        start = int(blob["step"])
    if main:
        rec.tb = TBLogger(str(run_dir / "tb"), purge_step=start + 1 if start else None)
    if start == 0 and main:
        rec.tb.text("config", "```yaml\n" + OmegaConf.to_yaml(cfg) + "\n```")
        rec.tb.layout(LAYOUT)
        first = rec.record("log", 0, log_figures(pair, 0, None), keep=False)
        if pair.comparer is not None and not (first["pair/quantized_agreement"] == 1.0
                                              and first["pair/alignment_distance"] == 0.0):
            raise TrainingError(
                f"step-0 invariant broken: quantized agreement {first['pair/quantized_agreement']} (must be 1) and "
                f"alignment distance {first['pair/alignment_distance']} (must be 0); the twin's init map is wrong")
        log_eval(pair, rec, data, 0)

    last_eval = None  # the figures of the eval at the final step, reused by the summary
    bar = tqdm(range(start, steps), initial=start, total=steps, disable=not (tr.progress and main),
               desc=f"{pair.est.name} vs {pair.spec.mode}", dynamic_ncols=True)
    t0 = time.time()
    for step in bar:
        x, y = data.batch(step)
        pair.step(step, x, y)
        done = step + 1
        if done % tr.log_every == 0 or done == steps:
            check_finite(pair, run_dir)
            means = pair.mean_losses()
            if main:
                figs = rec.record("log", done, log_figures(pair, done, means))
                bar.set_postfix({f"{r}_loss": f"{v:.3f}" for r, v in zip(pair.runs, means)}
                                | ({"agree": f"{figs['pair/quantized_agreement']:.4f}"} if pair.comparer else {}))
        if main and (done % tr.eval_every == 0 or done == steps):
            last_eval = log_eval(pair, rec, data, done)
        if done % tr.checkpoint_every == 0 or done == steps:
            check_finite(pair, run_dir)
            if main:
                ckpt.save(run_dir, done, config, {"pair": pair.state_dict(), "history": rec.state_dict()})
    bar.close()
    if not main:
        return {}

    final_eval = last_eval if last_eval is not None else pair.evaluate(data.test_batches())
    summary = summarize(pair, steps, cfg.seed, final_eval, rec.history, config)
    rec.tb.hparams(hparam_view(cfg, pair, steps), {k: v for k, v in summary.items() if "/" in k}, steps)
    rec.tb.close()
    sample = pair.weight_sample(tr.scatter_sample, cfg.seed)
    if sample is not None:
        torch.save(sample, run_dir / "weights_sample.pt")
    write_json(run_dir / "summary.json", summary)
    summary["wall_s"] = time.time() - t0
    return summary


def log_eval(pair: Pair, rec: Recorder, data, step: int) -> dict:
    figs = rec.record("eval", step, pair.evaluate(data.test_batches()))
    if pair.comparer is not None and step > 0:
        for name, r in pair.comparer.residuals().items():
            rec.tb.histogram(f"layers/{name}/alignment_residual", r, step)
    return figs


def summarize(pair: Pair, steps: int, seed: int, final_eval: dict, history: dict, config: dict) -> dict:
    """The final figures (README, "Outputs"), the logged curves and the resolved config."""
    est, spec = pair.est, pair.spec
    out = {"steps": steps, "seed": seed, "estimator": est.name, "twin": spec.mode,
           "alignment_map": "mirror" if spec.init == "mirror" else "identity",
           "alpha": est.alpha if est.in_class else None,
           "twin_lr_factor": spec.lr_factor, "twin_lr_scale": spec.lr_scale, "twin_init": spec.init}
    out.update(spec.figures())
    out.update(final_eval)
    out.update(to_host(pair.weight_figures()))
    out.update(to_host(pair.changepoint_figures()))
    if history["log_step"]:
        out["est/loss"] = history["est/loss"][-1]
        if pair.comparer is not None:
            out["twin/loss"] = history["twin/loss"][-1]
    if pair.comparer is not None:
        for curve, name in (("loss", "train_loss"), ("test_loss", "test_loss"), ("test_acc", "test_acc")):
            out[f"pair/corr_{name}"] = pearson(history[f"est/{curve}"], history[f"twin/{curve}"],
                                               min_points=MIN_CURVE_POINTS)
    out = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}
    out["history"] = history
    out["config"] = config
    return out


def hparam_view(cfg, pair: Pair, steps: int) -> dict:
    """The HParams columns: what ran, with the estimator's resolved parameters (k = 5.5, not null)."""
    est = pair.est.params()
    return {"estimator": cfg.estimator.name, "bits": cfg.estimator.bits, "grid": cfg.estimator.grid,
            "k": est.get("k", float("nan")), "alpha": pair.est.alpha if pair.est.in_class else float("nan"),
            "optimizer": cfg.optimizer.name, "lr": cfg.optimizer.lr, "twin": cfg.pair.twin,
            "twin_init": pair.spec.init, "twin_lr_factor": pair.spec.lr_factor, "twin_lr_scale": cfg.pair.twin_lr_scale,
            "dataset": cfg.dataset.name, "model": cfg.model.name, "steps": steps, "seed": cfg.seed}



# The end-of-run printout: (figure, its untrained-twin baseline or None).
SHOWN = [("pair/quantized_agreement", "pair/quantized_agreement_untrained"), ("pair/mover_fraction", None),
         ("pair/mover_agreement", "pair/mover_agreement_untrained"),
         ("pair/mover_sequence_agreement", "pair/mover_sequence_agreement_untrained"),
         ("pair/alignment_error", None), ("pair/alignment_error_mirror", None), ("pair/alignment_error_identity", None),
         ("pair/inference_agreement", None), ("pair/logit_mse", None), ("est/test_acc", None), ("twin/test_acc", None),
         ("alpha", None), ("twin_lr_factor", None), ("twin_init", None)]


def summary_lines(summary: dict) -> list[str]:
    """One line per headline figure, with the untrained twin's score beside each agreement."""
    lines = []
    for key, base in SHOWN:
        v = summary.get(key)
        if key not in summary:
            continue
        text = f"{v:.6g}" if isinstance(v, float) else str(v)
        if base is not None and isinstance(summary.get(base), float):
            text += f"  (untrained twin {summary[base]:.4g})"
        lines.append(f"  {key:32s} {text}")
    return lines
