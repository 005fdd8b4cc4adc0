"""The pair: the estimator run and its twin (``qatrun.build``), stepped in lockstep, measured, saved and restored.

The twin (arXiv 2405.05171; docs/configuration.md, "pair.twin") is a clipped-STE run that should track the
estimator run: for SGD it starts at ``M(w0)`` and trains its quantized weights at ``alpha * lr``; for Adam
it is plain STE with the same init and lr. The pair metrics (``qatrun.metrics``) are selected by name and
looped over; ``Pair`` names none of them.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from qatrun import dist
from qatrun.estimators import Estimator
from qatrun.build import activation_quantizers, autocast, build_run, calibrate, make_twin, param_groups  # noqa: F401
from qatrun.layers import quant_layers
from qatrun.metrics import METRICS, PairMetric, PairView, TestScores
from qatrun.metrics.changepoints import levels
from qatrun.metrics.common import to_host
from qatrun.optim import build_optimizer, build_scheduler
from qatrun.twin import ROLES, TWIN_CHOICES, TWIN_MODES, TwinSpec, alignment_map, resolve_twin  # noqa: F401 (API)


def compile_step(model, optimizer, scheduler, precision: str = "fp32", channels_last: bool = False,
                 compile: bool = False):
    """One training step of one run: forward, backward, optimizer and scheduler step; returns the loss."""
    device = next(model.parameters()).device
    fwd = torch.compile(model) if compile else model
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def step(x, y):
        with autocast(precision, device):
            loss = F.cross_entropy(fwd(x.contiguous(memory_format=fmt)).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return loss

    return step


# Checkpoints written before the metrics were plug-ins keep their state under these keys.
_OLD_STATE_KEYS = {"comparer": "weights", "tracker": "changepoints"}


def per_weight_range(layer) -> torch.Tensor:
    """Each weight's current range, flat, on the CPU (a fixed per-tensor range repeated)."""
    m = layer.m
    if isinstance(m, float):
        return torch.full((layer.weight.numel(),), m)
    return torch.as_tensor(m, dtype=torch.float32).cpu().expand(layer.weight.shape).reshape(-1)


class Pair:
    """The estimator run and its twin (or the run alone) and one lockstep iteration of both.

    Built from plain values: the estimator run's quantized ``model`` (see ``build_run``), its
    estimator, the ``TwinSpec``, the optimizer (registry name, peak ``lr`` and its own options) and
    the schedule length. ``measure=False`` (torchrun ranks other than 0) skips the metrics.
    ``train.train`` drives it; the benchmark times exactly the same code.
    """

    def __init__(self, model: nn.Module, estimator: Estimator, spec: TwinSpec, *, optimizer: str, lr: float,
                 optimizer_options: dict, steps: int, warmup_frac: float, precision: str = "fp32",
                 channels_last: bool = False, compile: bool = False, metrics=tuple(METRICS.names()),
                 measure: bool = True):
        self.est, self.spec, self.precision = estimator, spec, precision
        device = next(model.parameters()).device
        models = [model]
        if spec.estimator is not None:
            models.append(make_twin(model, spec))
        if channels_last:
            models = [m.to(memory_format=torch.channels_last) for m in models]
        self.optims = [build_optimizer(optimizer, param_groups(model, lr), lr, **optimizer_options)]
        if len(models) == 2:  # the twin's quantized weights get lr * alpha in a group of their own
            groups = param_groups(models[1], lr * spec.lr_scale, spec.lr_factor)
            self.optims.append(build_optimizer(optimizer, groups, lr, **optimizer_options))
        self.scheds = [build_scheduler(o, steps, warmup_frac) for o in self.optims]
        self.models, self.runs = models, ["est", "twin"][: len(models)]
        self.layers = [quant_layers(m) for m in models]
        fixed = all(layer.wq.is_fixed for ls in self.layers for _, layer in ls)
        self.view = PairView(self.layers[0], self.layers[-1], alignment_map(estimator, spec), spec.init == "mirror",
                             fixed) if len(models) == 2 else None
        # rank 0 measures; a metric whose hooks run collectives is built on every rank
        self.metrics = {n: METRICS.build(n, view=self.view) for n in metrics if self.view is not None
                        and (measure or METRICS.get(n).every_rank) and METRICS.get(n).applies(self.view)}
        self.measured = self.view is not None and measure
        self.stepped = [(n, m) for n, m in self.metrics.items() if type(m).update is not PairMetric.update]
        self.weights0 = [[l.weight.detach().clone() for _, l in ls] for ls in self.layers]
        self.step_fns = [compile_step(dist.wrap(m, device), o, s, precision, channels_last, compile)
                         for m, o, s in zip(models, self.optims, self.scheds)]
        # Progress (fraction of the steps done) for estimators whose g changes over training: one 0-dim
        # device tensor, filled in place each step (no host sync).
        self.steps, self.progress = steps, torch.zeros((), device=device)
        self.timed = [e for e in {id(x): x for x in (estimator, spec.estimator) if x is not None}.values()
                      if e.needs_progress]
        for e in self.timed:
            e.bind_progress(self.progress)
        self.loss_sums = torch.zeros(len(models), device=device)
        self.first_bad = torch.full((len(models),), -1, dtype=torch.long, device=device)
        self.since = 0
        self.calibrating = bool(activation_quantizers(model))  # until the first batch (or a checkpoint) sets them

    def calibrate(self, x) -> None:
        """The activation ranges from the training batch ``x``, once (no-op without quantized inputs, or once
        calibrated or restored). Before anything else runs the models: an evaluation first would calibrate each
        run on a test batch, and under torchrun each rank on its own shard."""
        if self.calibrating:
            calibrate(self.models, x, self.precision)
            self.calibrating = False

    def step(self, step: int, x, y, timer=None) -> None:
        """One lockstep iteration on batch (x, y): both runs, then the on-device metric accumulators.
        ``timer(name)`` (a context manager factory) lets the benchmark time each section."""
        timer = timer or (lambda name: contextlib.nullcontext())
        self.calibrate(x)
        if self.timed:
            self.progress.fill_(step / self.steps)
        for i, fn in enumerate(self.step_fns):
            with timer(f"{self.runs[i]}_step"):
                loss = fn(x, y).detach()
                self.loss_sums[i] += loss
                self.first_bad[i] = torch.where((self.first_bad[i] < 0) & ~torch.isfinite(loss), step + 1,
                                                self.first_bad[i])
        for name, metric in self.stepped:
            with timer(metric.section or name):
                metric.update(step)
        self.since += 1

    def first_nonfinite(self) -> tuple[str, int] | None:
        """(run, step) of the first NaN/Inf loss so far on any rank, or None (one host sync; under torchrun one
        all-reduce, so every rank decides alike)."""
        never = torch.iinfo(torch.long).max
        first = dist.min_(torch.where(self.first_bad >= 0, self.first_bad, never))
        for run, step in zip(self.runs, torch.where(first == never, -1, first).tolist()):
            if step >= 0:
                return run, step
        return None

    def mean_losses(self) -> list[float]:
        """The mean loss of each run since the last call (one host sync; the global batch's under torchrun)."""
        means = dist.mean(self.loss_sums / max(self.since, 1)).tolist()
        self.loss_sums.zero_()
        self.since = 0
        return means

    def lrs(self) -> list[float]:
        """Each run's current lr of its quantized weights."""
        return [s.get_last_lr()[0] for s in self.scheds]

    def figures(self, per_layer: bool = False) -> dict[str, torch.Tensor]:
        """Every selected metric's figures (0-dim device tensors; ``per_layer``: the per-layer ones too, as
        logged; empty without a measured twin)."""
        out = {}
        for metric in self.metrics.values():
            out.update(metric.compute(per_layer))
        return out

    def start_problems(self, figures: dict) -> list[str]:
        """What the metrics find wrong with the pair at step 0 (the twin's init map), in words."""
        return [p for m in self.metrics.values() if (p := m.start_problem(figures)) is not None]

    def histograms(self) -> dict[str, torch.Tensor]:
        out = {}
        for metric in self.metrics.values():
            out.update(metric.histograms())
        return out

    @torch.no_grad()
    def evaluate(self, test_batches) -> dict[str, float]:
        """Test loss and accuracy of each run and the metrics' evaluation figures. Under torchrun every rank
        evaluates its shard of the test set (``test_batches`` yields this rank's) and the sums are
        all-reduced, so every rank returns the figures of the whole set."""
        for m in self.models:
            m.eval()
        device = self.loss_sums.device
        scores = TestScores(len(self.models), device)
        with autocast(self.precision, device):
            for x, y in test_batches:
                logits = [m(x).float() for m in self.models]
                losses = [F.cross_entropy(lg, y, reduction="none") for lg in logits]
                scores.update(logits, y, losses)
                for metric in self.metrics.values():
                    metric.eval_batch(logits[0], logits[-1], y, losses[0], losses[-1])
        for m in self.models:
            m.train()
        all_sum = dist.sum_ if dist.active() else None
        if all_sum is not None:
            scores.reduce(all_sum)
        acc, loss = scores.compute()
        out = {}
        for run, a, l in zip(self.runs, acc, loss):
            out |= {f"{run}/test_acc": a, f"{run}/test_loss": l}
        for metric in self.metrics.values():
            out |= metric.eval_compute(all_sum)
        return to_host(out)

    def weight_sample(self, n: int, seed: int) -> dict[str, torch.Tensor] | None:
        """A fixed random sample of ``n`` quantized weights for the report's scatter plots: initial and
        final weights of both runs, ``map(w_est)``, the range ``m``, the final level index of each
        run (each on its own grid, ``m`` and ``m_twin``), and the grid's rounding thresholds in units of ``m``
        (the same for every layer)."""
        if not self.measured:
            return None
        to_twin = self.view.to_twin if self.view.use_mirror else (lambda layer: layer.weight.detach())
        flat = lambda ts: torch.cat([t.flatten().float().cpu() for t in ts])
        (_, first), *_ = self.layers[0]
        sample = dict(
            est0=flat(self.weights0[0]), twin0=flat(self.weights0[1]),
            est=flat(l.weight.detach() for _, l in self.layers[0]),
            twin=flat(l.weight.detach() for _, l in self.layers[1]),
            est_mapped=flat(to_twin(l) for _, l in self.layers[0]),
            m=torch.cat([per_weight_range(l) for _, l in self.layers[0]]),
            m_twin=torch.cat([per_weight_range(l) for _, l in self.layers[1]]),
            level_est=torch.cat([t.flatten().long().cpu() for t in levels(self.layers[0])]),
            level_twin=torch.cat([t.flatten().long().cpu() for t in levels(self.layers[1])]),
        )
        idx = torch.randperm(sample["est0"].numel(), generator=torch.Generator().manual_seed(seed))[:n]
        sample = {k: v[idx].clone() for k, v in sample.items()}
        sample["thresholds"] = first.grid.thresholds(1.0).float().cpu()
        return sample

    def resident_tensors(self) -> list[torch.Tensor]:
        """Everything that lives between steps (parameters, buffers, optimizer and metric state)."""
        out = []
        for m, o in zip(self.models, self.optims):
            out += [*m.parameters(), *m.buffers()]
            out += [v for st in o.state.values() for v in st.values() if isinstance(v, torch.Tensor)]
        for metric in self.metrics.values():
            out += metric.resident()
        return out + [self.loss_sums, self.first_bad]

    def state_dict(self) -> dict:
        return {
            "models": [m.state_dict() for m in self.models],
            "optims": [o.state_dict() for o in self.optims],
            "scheds": [s.state_dict() for s in self.scheds],
            "metrics": {name: metric.state_dict() for name, metric in self.metrics.items()},
            "weights0": self.weights0,
            # the loss accumulators since the last log: a checkpoint between two logs (an interrupt, the
            # wall-clock checkpoint) resumes to the same logged means
            "losses": {"sums": self.loss_sums, "since": self.since, "first_bad": self.first_bad},
        }

    def load_state_dict(self, state: dict) -> None:
        try:
            for m, s in zip(self.models, state["models"]):
                m.load_state_dict(s)
        except RuntimeError as exc:
            raise ValueError(f"checkpoint holds weights of another model: {str(exc).splitlines()[0]}") from None
        for o, s in zip(self.optims, state["optims"]):
            o.load_state_dict(s)
        for sc, s in zip(self.scheds, state["scheds"]):
            sc.load_state_dict(s)
        saved = state.get("metrics") or {new: state[old] for old, new in _OLD_STATE_KEYS.items() if state.get(old)}
        for name, metric in self.metrics.items():
            if name not in saved and not metric.state_dict():  # a metric that keeps nothing between steps
                continue
            if name not in saved:
                raise ValueError(f"the checkpoint holds no state of metric {name!r} (it has {', '.join(saved) or 'none'})"
                                 "; resume with the trainer.metrics it was written with")
            metric.load_state_dict(saved[name])
        self.weights0 = state["weights0"]
        if "losses" in state:  # checkpoints before the wall-clock checkpoint were written at log steps only
            self.loss_sums.copy_(state["losses"]["sums"])
            self.first_bad.copy_(state["losses"]["first_bad"])
            self.since = int(state["losses"]["since"])
