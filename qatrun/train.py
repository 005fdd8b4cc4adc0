"""The lockstep loop: an estimator run and its twin on the same batches, in one process.

``train(cfg, run_dir)`` builds both runs, trains them step by step on identical batches,
logs the pair metrics (PAPER.md, "The metrics") to TensorBoard and returns the final figures,
which it also writes to ``<run_dir>/summary.json``. The hot loop makes no host syncs: losses,
distance travelled, change points and the NaN watch stay on the device until ``log_every``.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from qatrun import checkpoint as ckpt
from qatrun import dist
from qatrun import estimators
from qatrun.data import build_data
from qatrun.layers import quant_layers, quantize_model
from qatrun.metrics import ChangePointTracker, FunctionAgreement, pearson
from qatrun.models import build_model, float_names
from qatrun.optim import build_optimizer, build_scheduler
from qatrun.pair import WeightComparer, make_twin, param_groups, resolve_twin
from qatrun.tblog import TBLogger


class TrainingError(RuntimeError):
    """A run that cannot go on (NaN loss, broken step-0 invariant); the message says why."""


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA device is available; use device=cpu or device=auto")
    return torch.device(name)


def set_determinism(on: bool) -> None:
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def build_run(model_cfg, est_cfg, num_classes: int, seed: int, device):
    """The estimator run's model: built from the seed, convolutions quantized, He-uniform init."""
    torch.manual_seed(seed)
    est = estimators.create(est_cfg.name, bits=est_cfg.bits, grid=est_cfg.grid, **estimator_params(est_cfg))
    model = build_model(model_cfg.name, num_classes=num_classes, **model_cfg.kwargs)
    skip = float_names(model_cfg.name, model)
    quantize_model(model, est, skip=skip, reinit=model_cfg.he_init,
                   generator=torch.Generator().manual_seed(seed))
    return model.to(device), est


def estimator_params(est_cfg) -> dict:
    """Estimator-specific keys of the config group (``k``, ``delta``, ``shape`` ...); null = default."""
    params = OmegaConf.to_container(est_cfg, resolve=True)
    return {k: v for k, v in params.items() if k not in ("name", "bits", "grid") and v is not None}


def to_host(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """0-dim device tensors to Python floats in one transfer (one sync, not one per metric)."""
    if not values:
        return {}
    flat = torch.stack([v.detach().to(torch.float64).reshape(()) for v in values.values()]).tolist()
    return dict(zip(values, flat))


def levels(layers) -> list[torch.Tensor]:
    return [l.grid.level_index(l.weight.detach(), l.m).to(torch.int16) for _, l in layers]


def evaluate(models, data, precision) -> dict[str, float]:
    """Test loss and accuracy of each run, and the function agreement of the pair."""
    for m in models:
        m.eval()
    agg = FunctionAgreement()
    with torch.no_grad(), autocast(precision, data.device):
        for x, y in data.test_batches():
            logits = [m(x).float() for m in models]
            losses = [F.cross_entropy(lg, y, reduction="none") for lg in logits]
            if len(models) == 2:
                agg.update(logits[0], logits[1], y, losses[0], losses[1])
            else:
                agg.update(logits[0], logits[0], y, losses[0], losses[0])
    for m in models:
        m.train()
    r = to_host(agg.compute())
    out = {"est/test_acc": r["acc_a"], "est/test_loss": r["loss_a"]}
    if len(models) == 2:
        out.update({
            "twin/test_acc": r["acc_b"], "twin/test_loss": r["loss_b"],
            "pair/inference_agreement": r["inference_agreement"],
            "pair/incorrect_inference_agreement": r["incorrect_inference_agreement"],
            "pair/logit_mse": r["logit_mse"], "pair/logit_mad": r["logit_mad"],
        })
    return out


def autocast(precision: str, device: torch.device):
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


class Pair:
    """The estimator run and its twin (or the run alone), built from the config, and one lockstep
    iteration of both. ``train`` drives it; the benchmark times exactly the same code."""

    def __init__(self, cfg, num_classes: int, device, steps: int, main: bool = True):
        est_model, self.est = build_run(cfg.model, cfg.estimator, num_classes, cfg.seed, device)
        self.spec = resolve_twin(cfg.pair.twin, self.est, cfg.optimizer.twin_warp, cfg.pair.twin_lr_scale)
        models = [est_model]
        if self.spec.estimator is not None:
            models.append(make_twin(est_model, self.spec))
        if cfg.channels_last:
            models = [m.to(memory_format=torch.channels_last) for m in models]
        lr = cfg.optimizer.lr
        self.optims = [build_optimizer(cfg.optimizer, param_groups(est_model, lr))]
        if len(models) == 2:  # the twin's quantized weights get lr * alpha in a group of their own
            self.optims.append(build_optimizer(cfg.optimizer, param_groups(models[1], lr * self.spec.lr_scale,
                                                                           self.spec.lr_factor)))
        self.scheds = [build_scheduler(o, steps, cfg.trainer.warmup_frac) for o in self.optims]
        self.models, self.runs = models, ["est", "twin"][: len(models)]
        self.layers = [quant_layers(m) for m in models]
        paired = len(models) == 2 and main  # under torchrun only rank 0 measures
        self.comparer = WeightComparer(self.layers[0], self.layers[1], self.spec.init == "mirror") if paired else None
        self.tracker = None
        if self.comparer is not None and cfg.trainer.changepoints:
            self.tracker = ChangePointTracker(levels(self.layers[0]), levels(self.layers[1]))
        self.weights0 = [[l.weight.detach().clone() for _, l in ls] for ls in self.layers]
        self.step_fns = [compile_step(dist.wrap(m, device), o, s, cfg) for m, o, s in zip(models, self.optims, self.scheds)]
        self.loss_sums = torch.zeros(len(models), device=device)
        self.first_bad = torch.full((len(models),), -1, dtype=torch.long, device=device)
        self.since = 0

    def step(self, step: int, x, y, timer=None) -> None:
        """One lockstep iteration on batch (x, y): both runs, then the on-device metric accumulators.
        ``timer(name)`` (a context manager factory) lets the benchmark time each section."""
        timer = timer or (lambda name: contextlib.nullcontext())
        for i, fn in enumerate(self.step_fns):
            with timer(f"{self.runs[i]}_step"):
                loss = fn(x, y).detach()
                self.loss_sums[i] += loss
                self.first_bad[i] = torch.where((self.first_bad[i] < 0) & ~torch.isfinite(loss), step + 1,
                                                self.first_bad[i])
        if self.comparer is not None:
            with timer("accumulate"):
                self.comparer.accumulate()
        if self.tracker is not None:
            with timer("tracker"):
                self.tracker.update(step + 1, levels(self.layers[0]), levels(self.layers[1]))
        self.since += 1

    def mean_losses(self, run_dir) -> list[float]:
        """Stop on NaN/Inf, then the mean loss of each run since the last call (one host sync)."""
        ckpt.check_finite(self.first_bad, self.runs, run_dir)
        means = dist.mean(self.loss_sums / max(self.since, 1)).tolist()  # the global batch's under torchrun
        self.loss_sums.zero_()
        self.since = 0
        return means

    def lrs(self) -> list[list[float]]:
        return [s.get_last_lr() for s in self.scheds]


def train(cfg: DictConfig, run_dir: str | os.PathLike) -> dict:
    """Train the pair described by ``cfg``; write TensorBoard events, checkpoints and summary.json."""
    run_dir = Path(run_dir)
    main = dist.is_main()  # under torchrun only rank 0 measures, logs and writes
    if main:
        ckpt.check_writable(run_dir)
    set_determinism(cfg.deterministic)
    device = dist.setup(cfg.device) or select_device(cfg.device)
    data = build_data(cfg.dataset, device, cfg.seed, dist.world(), dist.rank())
    steps = cfg.trainer.max_steps if cfg.trainer.max_steps is not None else cfg.trainer.epochs * data.steps_per_epoch
    steps_key = "trainer.max_steps" if cfg.trainer.max_steps is not None else "trainer.epochs"
    ckpt.check_positive({steps_key: steps, "optimizer.lr": cfg.optimizer.lr, "trainer.log_every": cfg.trainer.log_every,
                         "trainer.eval_every": cfg.trainer.eval_every, "trainer.checkpoint_every": cfg.trainer.checkpoint_every})
    pair = Pair(cfg, data.num_classes, device, steps, main)
    models, comparer, tracker, runs = pair.models, pair.comparer, pair.tracker, pair.runs

    history = {"log_step": [], "est/loss": [], "twin/loss": [], "eval_step": [],
               "est/test_loss": [], "twin/test_loss": [], "est/test_acc": [], "twin/test_acc": [],
               "pair/quantized_agreement": [], "pair/alignment_error": []}
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("resume", None)  # where a run continues is not part of what it computes
    start = 0
    state = ckpt.load_if_present(run_dir, resolved)
    if state is not None:
        start = ckpt.restore(state, models, pair.optims, pair.scheds, comparer, tracker, history)
        pair.weights0 = state["weights0"]
    tb = TBLogger(str(run_dir / "tb"), purge_step=start + 1 if start else None) if main else None
    if start == 0 and main:
        tb.text("config", "```yaml\n" + OmegaConf.to_yaml(cfg) + "\n```")
        first = log_step(0, comparer, None, pair.lrs(), runs, tb, history)
        if comparer is not None and not (first["pair/quantized_agreement"] == 1.0 and first["pair/alignment_distance"] == 0.0):
            raise TrainingError(
                f"step-0 invariant broken: quantized agreement {first['pair/quantized_agreement']} (must be 1) and "
                f"alignment distance {first['pair/alignment_distance']} (must be 0); the twin's init map is wrong"
            )
        log_eval(0, models, data, cfg, comparer, tb, history)

    last_eval = None  # the figures of the eval at the final step, reused by the summary
    bar = tqdm(range(start, steps), initial=start, total=steps, disable=not (cfg.trainer.progress and main),
               desc=f"{pair.est.name} vs {pair.spec.mode}", dynamic_ncols=True)
    t0 = time.time()
    for step in bar:
        x, y = data.batch(step)
        pair.step(step, x, y)
        done = step + 1
        if done % cfg.trainer.log_every == 0 or done == steps:
            means = pair.mean_losses(run_dir)
            if main:
                figs = log_step(done, comparer, means, pair.lrs(), runs, tb, history)
                bar.set_postfix({f"{r}_loss": f"{v:.3f}" for r, v in zip(runs, means)}
                                | ({"agree": f"{figs['pair/quantized_agreement']:.4f}"} if comparer else {}))
        if main and (done % cfg.trainer.eval_every == 0 or done == steps):
            last_eval = log_eval(done, models, data, cfg, comparer, tb, history)
        if done % cfg.trainer.checkpoint_every == 0 or done == steps:
            ckpt.check_finite(pair.first_bad, runs, run_dir)
            if main:
                ckpt.save(run_dir, done, resolved, models, pair.optims, pair.scheds, comparer, tracker, history,
                          pair.weights0)
    bar.close()
    if not main:
        return {}

    final_eval = last_eval if last_eval is not None else evaluate(models, data, cfg.precision)
    summary = final_summary(cfg, resolved, steps, pair.est, pair.spec, final_eval, comparer, tracker, history)
    tb.hparams(hparam_view(cfg), {k: v for k, v in summary.items() if "/" in k})
    tb.close()
    save_scatter(run_dir, pair.layers, pair.weights0, comparer, cfg.trainer.scatter_sample, cfg.seed)
    ckpt.write_json_atomic(run_dir / "summary.json", summary)
    summary["wall_s"] = time.time() - t0
    return summary


def compile_step(model, optimizer, scheduler, cfg):
    """One training step of one run: forward, backward, optimizer and scheduler step."""
    device = next(model.parameters()).device
    fwd = torch.compile(model) if cfg.compile else model
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format

    def step(x, y):
        with autocast(cfg.precision, device):
            loss = F.cross_entropy(fwd(x.contiguous(memory_format=fmt)).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return loss

    return step


def log_step(step, comparer, losses, lrs, runs, tb, history) -> dict:
    figs = {}
    if comparer is not None:
        figs = to_host(comparer.compute())
    if losses is not None:
        for r, v in zip(runs, losses):
            figs[f"{r}/loss"] = v
    for r, groups in zip(runs, lrs):
        figs[f"{r}/lr"] = groups[0]
    tb.scalars(figs, step)
    if losses is not None:
        history["log_step"].append(step)
        for r in runs:
            history[f"{r}/loss"].append(figs[f"{r}/loss"])
        if comparer is not None:
            history["pair/quantized_agreement"].append(figs["pair/quantized_agreement"])
            history["pair/alignment_error"].append(figs["pair/alignment_error"])
    return figs


def log_eval(step, models, data, cfg, comparer, tb, history) -> dict:
    figs = evaluate(models, data, cfg.precision)
    tb.scalars(figs, step)
    history["eval_step"].append(step)
    for k in ("est/test_loss", "est/test_acc", "twin/test_loss", "twin/test_acc"):
        if k in figs:
            history[k].append(figs[k])
    if comparer is not None and step > 0:
        for name, r in comparer.residuals().items():
            tb.histogram(f"layers/{name}/alignment_residual", r, step)
    return figs


def final_summary(cfg, resolved, steps, est, spec, final_eval, comparer, tracker, history) -> dict:
    out = {"steps": steps, "seed": cfg.seed, "estimator": est.name, "twin": spec.mode,
           "alpha": est.alpha if est.in_class else None,
           "twin_lr_factor": spec.lr_factor, "twin_lr_scale": spec.lr_scale, "twin_init": spec.init}
    out.update(final_eval)
    if comparer is not None:
        out.update(to_host(comparer.compute()))
    if tracker is not None:
        out.update({f"pair/{k}": v for k, v in to_host(tracker.compute()).items()})
    if history["log_step"]:
        out["est/loss"] = history["est/loss"][-1]
        if comparer is not None:
            out["twin/loss"] = history["twin/loss"][-1]
    if comparer is not None:
        for curve in ("loss", "test_loss", "test_acc"):
            out[f"pair/corr_{'train_loss' if curve == 'loss' else curve}"] = pearson(history[f"est/{curve}"], history[f"twin/{curve}"])
    out = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}
    out["history"] = history
    out["config"] = resolved
    return out


def hparam_view(cfg) -> dict:
    return {"estimator": cfg.estimator.name, "bits": cfg.estimator.bits, "k": str(cfg.estimator.get("k")),
            "optimizer": cfg.optimizer.name, "lr": cfg.optimizer.lr, "twin": cfg.pair.twin,
            "twin_lr_scale": cfg.pair.twin_lr_scale, "seed": cfg.seed, "model": cfg.model.name}


def save_scatter(run_dir, layers, weights0, comparer, n, seed) -> None:
    """A fixed random sample of quantized weights (init/final, both runs, and M(final est)) for plots."""
    if comparer is None:
        return
    est0 = torch.cat([w.flatten().float().cpu() for w in weights0[0]])
    twin0 = torch.cat([w.flatten().float().cpu() for w in weights0[1]])
    est1 = torch.cat([l.weight.detach().flatten().float().cpu() for _, l in layers[0]])
    twin1 = torch.cat([l.weight.detach().flatten().float().cpu() for _, l in layers[1]])
    mapped = torch.cat([comparer.mapped(l).flatten().float().cpu() for _, l in layers[0]])
    scale = torch.cat([torch.full((l.weight.numel(),), l.m) for _, l in layers[0]])
    idx = torch.randperm(est0.numel(), generator=torch.Generator().manual_seed(seed))[:n]
    sample = {k: v[idx].clone() for k, v in dict(est0=est0, twin0=twin0, est=est1, twin=twin1, est_mapped=mapped, m=scale).items()}
    torch.save(sample, run_dir / "weights_sample.pt")
