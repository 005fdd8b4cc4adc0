"""The lockstep loop: an estimator run and its twin on the same batches, in one process.

``train(cfg, run_dir)`` builds the pair from the config (the only place that reads it), trains
both runs step by step on identical batches, logs the pair figures (docs/metrics.md, "Metric
definitions") to TensorBoard and returns the final figures, which it also writes to
``<run_dir>/summary.json``. The hot loop makes no host syncs: losses, distance travelled, change
points and the NaN watch stay on the device until ``log_every``.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from qatrun import checkpoint as ckpt
from qatrun import checks, dist
from qatrun.data import DataShape, build_data
from qatrun.device import fp32_precision, set_fp32_precision
from qatrun.estimators import describe
from qatrun.config import fingerprint
from qatrun.errors import TrainingError
from qatrun.files import write_atomic, write_json
from qatrun.rundir import guarded, lock_dir, remove_stale_temps, unlock_dir, write_status
from qatrun.health import divergence
from qatrun.metricnames import headline_first, printed
from qatrun.metrics import pearson
from qatrun.metrics.function import MIN_CURVE_POINTS
from qatrun.metrics.common import to_host
from qatrun.models.deterministic import deterministic_pooling
from qatrun.pair import Pair, build_run
from qatrun.spec import RunSpec, build as build_spec, build_estimators, group, select_device  # noqa: F401 (re-exported)
from qatrun.record import LAYOUT, Recorder
from qatrun.stop import Interrupted, StopSignals
from qatrun.tblog import TBLogger


STATUS = "status.json"




def set_determinism(on: bool) -> None:
    """Both ways: a sweep runs its jobs in one process, and a job after a deterministic one is not (on CUDA
    it would keep torch's adaptive pooling, whose backward then raises: ``qatrun.models.deterministic``)."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(bool(on))


def pair_from_spec(cfg: DictConfig, spec: RunSpec, device, steps: int, measure: bool = True) -> Pair:
    """The pair described by ``spec`` (``qatrun.spec.build``), on ``device``, for ``steps`` steps."""
    model = build_run(spec.model, spec.shape.num_classes, spec.estimator, cfg.seed, spec.he_init,
                      spec.shape.input_shape, spec.quantize_linear, **spec.model_options)
    if cfg.deterministic and torch.device(device).type == "cuda":  # no deterministic CUDA kernel for the original
        deterministic_pooling(model)
    return Pair(model.to(device), spec.estimator, spec.twin, optimizer=spec.optimizer, lr=spec.lr,
                optimizer_options=dict(spec.optimizer_options), steps=steps, warmup_frac=cfg.trainer.warmup_frac,
                precision=cfg.precision, channels_last=cfg.channels_last, compile=cfg.compile,
                changepoints=cfg.trainer.changepoints, measure=measure)


def build_pair(cfg: DictConfig, num_classes: int, device, steps: int, measure: bool = True,
               input_shape=None) -> Pair:
    """The pair of ``cfg`` for data of ``num_classes`` classes and ``input_shape`` (C, H, W; default:
    what the configured dataset states), e.g. for the benchmark's synthetic batches."""
    shape = None
    if input_shape is not None:
        shape = DataShape(tuple(input_shape), num_classes)
    spec = build_spec(cfg, shape)
    if input_shape is None and spec.shape.num_classes != num_classes:
        spec = build_spec(cfg, DataShape(spec.shape.input_shape, num_classes))
    return pair_from_spec(cfg, spec, device, steps, measure)


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
    """Train the pair described by ``cfg``; write TensorBoard events, checkpoints and summary.json. The run
    directory is this process's while it trains (``files.lock_dir``), and released at the end unless the
    caller (the command line) took it first."""
    held: list[Path] = []
    try:
        return _train(cfg, Path(run_dir), held)
    except OSError as exc:  # TensorBoard's writer and the rest: a fault named in one line, as in guarded()
        import errno

        where, fault = Path(run_dir), exc
        name = os.fsdecode(fault.filename) if fault.filename is not None else None
        if name is not None and not name.startswith(str(where)):
            raise  # not a write of this run (data on another disk, say): its own message
        if name is None and fault.errno not in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.ENOENT):
            raise

        def again():
            raise fault

        guarded(where, Path(name).relative_to(where) if name else Path("."), again)
        raise
    finally:
        for d in held:
            unlock_dir(d)


def _train(cfg: DictConfig, run_dir: Path, held: list) -> dict:
    main = dist.is_main()  # under torchrun only rank 0 measures, logs and writes
    spec = build_spec(cfg)  # every check, as preflight made them
    if main:
        checks.writable_dir(run_dir)
        if lock_dir(run_dir):  # one process per run directory (released at exit, also on SIGKILL)
            held.append(run_dir)
        remove_stale_temps(run_dir)
    set_determinism(cfg.deterministic)
    device = dist.setup(cfg.device) or spec.device
    if device.type == "cuda":  # precision=fp32 is IEEE fp32 on CUDA too (no TF32), set before anything compiles
        set_fp32_precision()
    data = build_data(spec.data, device, cfg.seed, dist.world(), dist.rank(), **spec.data_options)
    tr, steps = cfg.trainer, spec.steps(data.steps_per_epoch)
    if cfg.compile:  # a fresh dynamo state per job: a Hydra sweep runs its jobs in one process, and the previous
        torch._dynamo.reset()  # job's caches broke the next estimator's compile (bits1 then bits4)
    pair = pair_from_spec(cfg, spec, device, steps, main)
    if main:
        print(f"quantized layers ({len(spec.quantized)}): {', '.join(spec.quantized)}")
        for line in spec.extra.get("warnings", []):
            print(f"qatrun: warning: {line}", file=sys.stderr)

    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("resume", None)  # where a run continues is not part of what it computes
    prov = provenance(config)
    start, rec = 0, Recorder()
    blob = ckpt.load_for_resume(run_dir, config, prov)
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
        if pair.comparer is not None and not (first["pair/quantized_mismatches"] == 0  # counted in integers
                                              and first["pair/alignment_distance"] == 0.0):
            raise TrainingError(
                f"step-0 invariant broken: quantized agreement {first['pair/quantized_agreement']} (must be 1) and "
                f"alignment distance {first['pair/alignment_distance']} (must be 0); the twin's init map is wrong")
    if start == 0:
        log_eval(pair, rec, data, 0, main)

    last_eval = None  # the figures of the eval at the final step, reused by the summary
    bar = tqdm(range(start, steps), initial=start, total=steps, disable=not (tr.progress and main),
               desc=f"{describe(pair.est)} vs {pair.spec.role}", dynamic_ncols=True)
    t0 = last_save = time.time()
    if main:
        write_status(run_dir, "running", start, steps)
    with StopSignals() as stop:
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
            if done % tr.eval_every == 0 or done == steps:  # every rank evaluates its shard
                last_eval = log_eval(pair, rec, data, done, main)
            overdue = time.time() - last_save >= 60 * tr.checkpoint_minutes  # a long run never holds more unsaved
            if done % tr.checkpoint_every == 0 or done == steps or overdue or stop.signum:
                check_finite(pair, run_dir)
                if main:
                    state = {"pair": pair.state_dict(), "history": rec.state_dict()}
                    guarded(run_dir, ckpt.NAME, lambda: ckpt.save(run_dir, done, config, state, prov))
                last_save = time.time()
            if stop.signum and done < steps:
                bar.close()
                exc = Interrupted(stop.signum, done, steps, run_dir)
                if main:
                    write_status(run_dir, "interrupted", done, steps, signal=signal.Signals(stop.signum).name)
                    rec.tb.text("status", str(exc))
                    rec.tb.close()
                stop.after_checkpoint()
                raise exc
    bar.close()
    final_eval = last_eval if last_eval is not None else pair.evaluate(data.test_batches())  # a finished run again
    if not main:
        return {}

    summary = summarize(pair, steps, cfg.seed, final_eval, rec.history, config)
    summary["quantized_layers"] = list(spec.quantized)
    summary["fp32_precision"] = fp32_precision() if device.type == "cuda" else None
    summary["distributed"] = {"backend": dist.backend(), "world_size": dist.world()} if dist.active() else None
    why = divergence(rec.history, summary, pair.runs, spec.shape.num_classes)
    summary["diverged"], summary["diverged_why"] = why is not None, why
    metrics = {k: summary[k] for k in headline_first(k for k in summary if "/" in k)}
    summary["hparams"] = hparam_view(cfg, pair, steps)  # a sweep's HParams experiment reads them (qatrun.sweep)
    rec.tb.hparams(summary["hparams"], metrics, steps)
    rec.tb.close()
    summary["fingerprint"], summary["provenance"] = fingerprint(config, prov), prov
    sample = pair.weight_sample(tr.scatter_sample, cfg.seed)
    if sample is not None:
        guarded(run_dir, "weights_sample.pt",
                lambda: write_atomic(run_dir / "weights_sample.pt", lambda f: torch.save(sample, f)))
    guarded(run_dir, "summary.json", lambda: write_json(run_dir / "summary.json", summary))
    write_status(run_dir, "diverged" if why else "finished", steps, steps)
    summary["wall_s"] = time.time() - t0
    return summary


def provenance(config: dict) -> dict:
    """What else determines a run's results: the qatrun version and the source digest of the user's code
    (a custom shape, model or dataset), so a resume after that code changed is refused."""
    from qatrun import __version__
    from qatrun import userimport

    out = {"qatrun": __version__}
    digest = userimport.source_digest
    for key in ("estimator.shape", "twin_estimator.shape", "model.target", "dataset.target"):
        grp, _, leaf = key.partition(".")
        value = (config.get(grp) or {}).get(leaf)
        if isinstance(value, str) and value and not value.startswith(userimport.PREFIX):
            try:
                out[key] = digest(value)
            except Exception:  # the value was resolved already: a digest is a courtesy, never a failure
                out[key] = None
    return out


def log_eval(pair: Pair, rec: Recorder, data, step: int, main: bool = True) -> dict:
    figs = pair.evaluate(data.test_batches())
    if not main:
        return figs
    figs = rec.record("eval", step, figs)
    if pair.comparer is not None and step > 0:
        for name, r in pair.comparer.residuals().items():
            rec.tb.histogram(f"layers/{name}/alignment_residual", r, step)
    return figs


def summarize(pair: Pair, steps: int, seed: int, final_eval: dict, history: dict, config: dict) -> dict:
    """The final figures (docs/metrics.md, "Outputs"), the logged curves and the resolved config."""
    est, spec = pair.est, pair.spec
    out = {"steps": steps, "seed": seed, "estimator": est.name, "estimator_description": describe(est),
           "twin": spec.mode,
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
    if out.get("pair/distance_travelled") == 0.0:
        out["alignment_note"] = ("the twin never moved (distance travelled 0): the alignment errors are 0/0, "
                                 "so they are null, not 0")
    out = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}
    out["history"] = history
    out["config"] = config
    return out


def hparam_view(cfg, pair: Pair, steps: int) -> dict:
    """The HParams columns: what ran, both estimators with their resolved parameters (k = 5.5, not null),
    the twin's role and the seed."""
    est = pair.est.params()
    twin = pair.spec.estimator
    return {"estimator": describe(pair.est), "twin_estimator": describe(twin) if twin is not None else "none",
            "twin_role": pair.spec.role, "bits": cfg.estimator.bits, "grid": cfg.estimator.grid,
            "k": est.get("k", float("nan")), "shape": str(est.get("shape", "")),
            "alpha": pair.est.alpha if pair.est.in_class else float("nan"),
            "optimizer": cfg.optimizer.name, "lr": cfg.optimizer.lr, "twin": cfg.pair.twin,
            "twin_init": pair.spec.init, "twin_lr_factor": pair.spec.lr_factor, "twin_lr_scale": cfg.pair.twin_lr_scale,
            "mirror_extension": pair.spec.extension,
            "dataset": cfg.dataset.name, "model": cfg.model.name, "steps": steps, "seed": cfg.seed}


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
    for key, base in printed():
        v = summary.get(key)
        if key not in summary:
            continue
        text = f"{v:.6g}" if isinstance(v, float) else str(v)
        if base is not None and isinstance(summary.get(base), float):
            text += f"  (untrained twin {summary[base]:.4g})"
        lines.append(f"  {key:32s} {text}")
    return lines
