"""``qatrun-bench`` (``make bench``): what does the pair cost next to plain PyTorch?

One process, one fixed batch (synthetic, generated on the device), several configurations of the
same architecture, measured after warm-up in interleaved rounds (median over rounds per config).
The qatrun config is the default one (``qatrun/configs``: tanh estimator, 2 bits, SGD momentum
0.9, adjusted-STE twin, ``log_every`` 10) with the case's model, precision and memory format, and
``trainer.warmup_frac=0`` so that the weights move from the first timed step on:

* ``plain`` (a): the float model trained with plain PyTorch only: ``build_model`` (plain
  ``nn.Module``\\ s), ``torch.optim.SGD(momentum=0.9)`` at the config's lr, cross-entropy,
  ``zero_grad(set_to_none)``, no lr scheduler,
  same precision (autocast) and memory format as the qatrun runs. On CUDA also ``plain_compiled``
  (the same step with ``torch.compile(model)``).
* ``single`` (b): one quantized qatrun run (tanh estimator, the default config, ``pair.twin=none``)
  built and stepped by the trainer's own ``train.Pair``.
* ``pair`` (c): the estimator run and its twin (``pair.twin=auto``) on the same batch, through the
  same ``train.Pair.step`` the loop in ``train.train`` calls: both steps, the loss sums and NaN
  watch, ``WeightComparer.accumulate`` and ``ChangePointTracker.update`` every step, and every
  ``log_every`` steps (default 10) ``Pair.mean_losses`` (host sync, NaN check) and ``train.log_step``
  (comparer metrics to floats; the TensorBoard writer is a no-op here). Evaluation and
  checkpoints (every 50/100 steps in the trainer) are not part of the step and are not timed.

Timing: every round runs ``--steps`` iterations (default ``log_every``, so each pair round holds
exactly one logging step) of every config; ms/step is the median over rounds (the fastest round
is reported too). On the CPU the configs alternate every iteration (``a b c a b c ...``, each
iteration timed alone: a neighbour's load then hits all configs alike); on the GPU each config
runs its ``--steps`` iterations between two ``torch.cuda.synchronize`` (the host runs ahead as in
training), configs in rotating order (``--interleave`` picks either). Inside the pair
iteration, sections (``est_step``, ``twin_step``, ``accumulate``, ``tracker``, ``log``) are
timed with ``perf_counter`` on the CPU (ops are synchronous there) and with CUDA events on the GPU
(no host sync; stream time between events). ``tracker`` (level indices of both runs plus
``ChangePointTracker.update``) over the pair step is the change-point cost.

Cases: ``cpu-small`` (small CNN, batch 600, what ``make bench`` runs without CUDA); with CUDA also
``gpu-small128``, ``gpu-small600`` and ResNet-50 batch 256 channels_last in fp32 and bf16. The GPU
cases run the qatrun configs with ``compile=true`` (``train.compile_step``: ``torch.compile`` of each
model, default mode, so no CUDA graphs; a compile failure falls back to eager and is noted) and
add ``plain_compiled``. The ``gpu-small128`` target (pair below one eager plain step) needs the
whole pair iteration in CUDA graphs, which the trainer does not offer: expect FAIL there.

Peak memory, the same definition on both devices: ``resident`` (parameters, buffers, optimizer
state, metric state: what lives between steps, gradients excluded) plus ``transient`` (the
largest amount allocated above that during one iteration, gradients included; for the pair one
iteration followed by a logging step). ``transient`` is measured, with the profiler's allocation
events on the CPU (``Total Allocated`` since the start, frees of pre-existing blocks not credited,
so an upper bound) and ``torch.cuda.max_memory_allocated`` on the GPU. ``resident`` is the sum of
the distinct tensor storages on the CPU and the measured ``memory_allocated`` growth from building
and warming the config up on the GPU (compiled graphs and CUDA-graph pools included).

Not unit tests: nothing here asserts a timing; the verdicts against the targets are printed and
written to the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from omegaconf import OmegaConf

from qatrun.models import build_model
from qatrun.train import Pair, log_step

# ----------------------------------------------------------------------------------------------
# Cases and targets
# ----------------------------------------------------------------------------------------------

# Steps the schedulers are built for: with no warm-up the lr stays ~lr (cosine ~1) while we time,
# so the weights move (and change level) as in the middle of a real run.
SCHEDULE_STEPS = 1_000_000


@dataclass(frozen=True)
class Case:
    name: str
    model: str
    batch: int
    device: str  # "cpu" | "cuda"
    precision: str = "fp32"  # fp32 | bf16 (autocast), for every config of the case
    channels_last: bool = False
    num_classes: int = 10
    channels: int = 1
    image_size: int = 28
    qat_compile: bool = False  # cfg.compile for the qatrun runs (torch.compile of each model)
    compiled_baseline: bool = False  # also time plain_compiled

    def describe(self) -> str:
        fmt = ", channels_last" if self.channels_last else ""
        comp = ", qatrun compile=true" if self.qat_compile else ""
        return f"{self.model} batch {self.batch} on {self.device}, {self.precision}{fmt}{comp}"


_R50 = dict(model="resnet50", batch=256, device="cuda", channels_last=True, num_classes=1000, channels=3,
            image_size=224, qat_compile=True, compiled_baseline=True)
CASES: dict[str, Case] = {
    "cpu-small": Case("cpu-small", "small_cnn", 600, "cpu"),
    "gpu-small128": Case("gpu-small128", "small_cnn", 128, "cuda", qat_compile=True, compiled_baseline=True),
    "gpu-small600": Case("gpu-small600", "small_cnn", 600, "cuda", qat_compile=True, compiled_baseline=True),
    "gpu-r50-fp32": Case("gpu-r50-fp32", precision="fp32", **_R50),
    "gpu-r50-bf16": Case("gpu-r50-bf16", precision="bf16", **_R50),
}


@dataclass(frozen=True)
class Target:
    case: str
    name: str
    key: str  # a key of the case's "checks" dict
    limit: float


# The targets. Each is checked only when its case ran.
TARGETS = [
    Target("cpu-small", "pair step / plain float step (eager)", "pair_over_plain", 2.2),
    Target("gpu-r50-bf16", "pair step / plain float step compiled", "pair_over_plain_compiled", 2.1),
    Target("gpu-small128", "pair step / ONE plain eager float step (needs CUDA graphs)", "pair_over_plain", 0.8),
    Target("gpu-r50-fp32", "change-point tracking / pair step", "changepoint_fraction", 0.10),
    Target("gpu-r50-bf16", "change-point tracking / pair step", "changepoint_fraction", 0.10),
    *[Target(c, "pair peak memory / one model (plain float) peak", "pair_peak_over_plain", 2.1) for c in CASES],
]

# ----------------------------------------------------------------------------------------------
# Timing helpers
# ----------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Sections:
    """Per-section durations inside an iteration without host syncs (CUDA events on the GPU)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.pending: list[tuple[str, object, object]] = []
        self.profiling = False

    @contextlib.contextmanager
    def __call__(self, name: str):
        rf = torch.profiler.record_function(f"qatrun/{name}") if self.profiling else contextlib.nullcontext()
        with rf:
            if self.cuda:
                start = torch.cuda.Event(enable_timing=True)
                start.record()
            else:
                start = time.perf_counter()
            yield
            if self.cuda:
                end = torch.cuda.Event(enable_timing=True)
                end.record()
            else:
                end = time.perf_counter()
        self.pending.append((name, start, end))

    def resolve(self) -> dict[str, float]:
        """Seconds per section since the last resolve (call after a device sync)."""
        out: dict[str, float] = {}
        for name, s, e in self.pending:
            dt = s.elapsed_time(e) / 1e3 if self.cuda else e - s
            out[name] = out.get(name, 0.0) + dt
        self.pending.clear()
        return out


class _NullTB:
    """Stands in for the TensorBoard writer in ``train.log_step``: the metrics are computed, not written."""

    def scalars(self, *_a, **_k):
        pass


# ----------------------------------------------------------------------------------------------
# The three configurations
# ----------------------------------------------------------------------------------------------


def _make_batch(case: Case, device: torch.device, seed: int = 0):
    from qatrun.data.synthetic import SyntheticImages

    data = SyntheticImages(case.num_classes, case.image_size, case.channels, length=case.batch, device=device,
                           seed=seed)
    return data.get_batch(0, case.batch)


class PlainStep:
    """(a) The baseline: plain PyTorch, no qatrun code in the step (the model is a plain nn.Module)."""

    def __init__(self, case: Case, x, y, lr: float, compiled: bool = False, seed: int = 0, model_kwargs=None):
        torch.manual_seed(seed)
        model = build_model(case.model, num_classes=case.num_classes, **(model_kwargs or {})).to(x.device)
        self.fmt = torch.channels_last if case.channels_last else torch.contiguous_format
        model = model.to(memory_format=self.fmt)
        self.model = model
        self.fwd = torch.compile(model) if compiled else model
        self.opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        self.x, self.y = x, y
        self.amp = dict(device_type=x.device.type, dtype=torch.bfloat16, enabled=case.precision == "bf16")
        self.optimizers = [self.opt]

    def iteration(self):
        # the batch arrives NCHW, as from a loader (and as the qatrun step gets it), and is
        # converted here, as a channels_last training loop would
        with torch.autocast(**self.amp):
            loss = F.cross_entropy(self.fwd(self.x.contiguous(memory_format=self.fmt)).float(), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def resident_tensors(self):
        return [*self.model.parameters(), *self.model.buffers(), *_optimizer_tensors(self.opt)]


class QatLoop:
    """(b)/(c) One iteration of ``train.train``'s loop, for one quantized run or for the pair:
    ``train.Pair`` (the trainer's own object) stepped on a fixed batch, logging every ``log_every``."""

    def __init__(self, cfg, x, y, num_classes: int, pair: bool, sections: Sections | None = None):
        if not pair:
            cfg = OmegaConf.merge(cfg, {"pair": {"twin": "none"}})
        self.cfg, self.x, self.y = cfg, x, y
        self.pair = Pair(cfg, num_classes, x.device, SCHEDULE_STEPS)
        self.models, self.optimizers, self.runs = self.pair.models, self.pair.optims, self.pair.runs
        self.comparer, self.tracker, self.spec, self.est = self.pair.comparer, self.pair.tracker, self.pair.spec, self.pair.est
        self.history = {"log_step": [], "est/loss": [], "twin/loss": [], "pair/quantized_agreement": [],
                        "pair/alignment_error": []}
        self.step = 0
        self.log_every = cfg.trainer.log_every
        self.sec = sections or Sections(x.device)
        self.run_dir = Path(tempfile.gettempdir())  # only named in a NaN error message
        self.tb = _NullTB()
        self.last_figs: dict = {}

    def iteration(self):
        self.pair.step(self.step, self.x, self.y, timer=self.sec)
        self.step += 1
        if self.step % self.log_every == 0:
            self.log()

    def log(self):
        with self.sec("log"):
            means = self.pair.mean_losses(self.run_dir)
            self.last_figs = log_step(self.step, self.comparer, means, self.pair.lrs(), self.runs, self.tb,
                                      self.history)

    def resident_tensors(self):
        out = []
        for m, o in zip(self.models, self.optimizers):
            out += [*m.parameters(), *m.buffers(), *_optimizer_tensors(o)]
        if self.comparer is not None:
            out += [*self.comparer._prev, self.comparer.travelled]
        if self.tracker is not None:
            out += list(self.tracker.state.values())
        return out + [self.pair.loss_sums, self.pair.first_bad]


def _optimizer_tensors(opt):
    return [v for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)]


def _storage_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        s = t.untyped_storage()
        key = (s.device.type, s.data_ptr())
        if key not in seen:
            seen.add(key)
            total += s.nbytes()
    return total


def make_cfg(case: Case, log_every: int | None = None, overrides=()):
    """The default qatrun config (tanh vs adjusted STE, SGD) set up for ``case``."""
    from hydra import compose, initialize_config_module

    ov = [f"model={case.model}", f"device={case.device}", f"precision={case.precision}",
          f"channels_last={str(case.channels_last).lower()}", f"compile={str(case.qat_compile).lower()}",
          "trainer.warmup_frac=0.0", "trainer.progress=false", *overrides]
    if log_every is not None:
        ov.append(f"trainer.log_every={log_every}")
    with initialize_config_module("qatrun.configs", version_base="1.3"):
        return compose("config", overrides=ov)


# ----------------------------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------------------------


def _zero_grads(runner) -> None:
    for o in runner.optimizers:
        o.zero_grad(set_to_none=True)


def measure_memory(runner, device: torch.device, resident_gpu: int | None, pair: bool) -> dict:
    """Peak = resident + transient of one iteration (plus a logging step for the pair); see the module doc."""
    import gc

    _zero_grads(runner)
    gc.collect()
    resident = _storage_bytes(runner.resident_tensors())
    out = {"resident_state_bytes": resident}

    def one():
        runner.iteration()
        if pair and hasattr(runner, "log"):
            runner.log()

    if device.type == "cuda":
        _sync(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        one()
        _sync(device)
        transient = torch.cuda.max_memory_allocated(device) - start
        out.update(resident_bytes=resident_gpu, resident_method="measured memory_allocated growth (build + warm-up)",
                   transient_method="torch.cuda.max_memory_allocated")
    else:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            one()
        transient = _cpu_peak_from_profile(prof)
        out.update(resident_bytes=resident, resident_method="sum of distinct tensor storages",
                   transient_method="profiler allocation events (upper bound)")
    out["transient_bytes"] = int(transient)
    out["peak_bytes"] = int(out["resident_bytes"] + transient) if out["resident_bytes"] is not None else None
    return out


def _cpu_peak_from_profile(prof) -> int:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f).get("traceEvents", [])
    tot = [e["args"].get("Total Allocated", 0) for e in events
           if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type", 0) == 0]
    return max([0, *tot])


def _profile_pair(runner: QatLoop, iterations: int = 1, top: int = 12) -> dict:
    """torch.profiler over pair iterations: section totals, quantizer fwd/bwd, top ops."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if runner.x.is_cuda else [])
    runner.sec.profiling = True
    try:
        with profile(activities=acts) as prof:
            for _ in range(iterations):
                runner.iteration()
            if runner.comparer is not None:
                runner.log()
            _sync(runner.x.device)
    finally:
        runner.sec.profiling = False
        runner.sec.resolve()
    avg = prof.key_averages()
    ms = lambda us: round(us / 1e3 / iterations, 3)  # noqa: E731
    sections = {e.key.removeprefix("qatrun/"): ms(e.cpu_time_total) for e in avg if e.key.startswith("qatrun/")}
    quant = {e.key: ms(e.cpu_time_total) for e in avg if "QuantizeWeight" in e.key}
    ops = sorted((e for e in avg if not e.key.startswith("qatrun/")), key=lambda e: e.self_cpu_time_total,
                 reverse=True)[:top]
    return {
        "iterations": iterations,
        "note": "ms per pair iteration under the profiler (the log section once in total)",
        "sections_ms": sections,
        "quantizer_ms": quant,
        "top_ops_self_cpu_ms": {e.key: ms(e.self_cpu_time_total) for e in ops},
    }


def run_case(case: Case, warmup: int = 2, steps: int = 10, rounds: int = 3, log_every: int | None = None,
             profile: bool = False, verbose: bool = True, keep: bool = False, interleave: str = "auto",
             overrides=()) -> dict:
    """Build every config of ``case``, warm up, time interleaved rounds; return the figures.

    ``interleave``: ``step`` alternates the configs every iteration inside a round (each config
    still runs ``steps`` iterations per round, timed one by one: what the CPU wants, where a
    neighbour's load drifts and a sync is free); ``block`` runs each config's ``steps`` iterations
    between two syncs, configs in rotating order (what the GPU wants: the host runs ahead within a
    block, as in training); ``auto``: step on the CPU, block on the GPU.
    ``keep=True`` also returns the runners (``result["_runners"]``, not JSON) for inspection.
    """
    device = torch.device(case.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"case {case.name} needs CUDA")
    if interleave == "auto":
        interleave = "step" if device.type == "cpu" else "block"
    if interleave not in ("step", "block"):
        raise ValueError(f"interleave must be auto, step or block, got {interleave!r}")
    say = print if verbose else (lambda *a, **k: None)
    cfg = make_cfg(case, log_every, overrides)
    x, y = _make_batch(case, device, cfg.seed)
    lr = float(cfg.optimizer.lr)

    kw = dict(seed=cfg.seed, model_kwargs=dict(cfg.model.kwargs))  # the same architecture as the qatrun runs
    builders = {"plain": lambda: PlainStep(case, x, y, lr, **kw)}
    if case.compiled_baseline:
        builders["plain_compiled"] = lambda: PlainStep(case, x, y, lr, compiled=True, **kw)
    builders["single"] = lambda: QatLoop(cfg, x, y, case.num_classes, pair=False)
    builders["pair"] = lambda: QatLoop(cfg, x, y, case.num_classes, pair=True)

    runners, resident_gpu, notes = {}, {}, {}
    load0 = _loadavg()
    for name, build in builders.items():
        say(f"  building {name} + {warmup} warm-up steps ...", flush=True)
        _sync(device)
        before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        t0 = time.perf_counter()
        note = notes.setdefault(name, {})
        r = build()
        compiled = name == "plain_compiled" or (name in ("single", "pair") and case.qat_compile)
        try:
            for _ in range(max(warmup, 3) if compiled else warmup):
                r.iteration()
            _sync(device)
        except Exception as exc:  # a torch.compile failure must not lose the other numbers
            if not compiled:
                raise
            note["compile_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            if name == "plain_compiled":
                say(f"  {name}: torch.compile failed, dropped ({note['compile_error']})", flush=True)
                continue
            say(f"  {name}: torch.compile failed, running it eager ({note['compile_error']})", flush=True)
            r = QatLoop(_without_compile(cfg), x, y, case.num_classes, pair=name == "pair")
            note["ran_eager"] = True
            for _ in range(warmup):
                r.iteration()
            _sync(device)
        if isinstance(r, QatLoop):
            r.sec.resolve()
        _zero_grads(r)
        if device.type == "cuda":
            resident_gpu[name] = torch.cuda.memory_allocated(device) - before
        note["build_and_warmup_s"] = round(time.perf_counter() - t0, 2)
        runners[name] = r

    names = list(runners)
    per_round = {n: [] for n in names}
    sec_rounds: list[dict[str, float]] = []
    for rnd in range(rounds):
        order = names[rnd % len(names):] + names[: rnd % len(names)]
        if interleave == "block":
            for n in order:
                r = runners[n]
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(steps):
                    r.iteration()
                _sync(device)
                per_round[n].append((time.perf_counter() - t0) / steps)
        else:
            tot = dict.fromkeys(order, 0.0)
            for _ in range(steps):
                for n in order:
                    _sync(device)
                    t0 = time.perf_counter()
                    runners[n].iteration()
                    _sync(device)
                    tot[n] += time.perf_counter() - t0
            for n in order:
                per_round[n].append(tot[n] / steps)
        sec_rounds.append({k: v / steps for k, v in runners["pair"].sec.resolve().items()})
        runners["single"].sec.resolve()
        say(f"  round {rnd + 1}/{rounds}: " + ", ".join(f"{n} {per_round[n][-1] * 1e3:.1f} ms" for n in names),
            flush=True)
    load1 = _loadavg()

    ms = {n: statistics.median(v) * 1e3 for n, v in per_round.items()}
    ms_min = {n: min(v) * 1e3 for n, v in per_round.items()}
    sections = {k: statistics.median(s.get(k, 0.0) for s in sec_rounds) * 1e3 for k in sec_rounds[0]}
    bases = [n for n in names if n.startswith("plain")]
    res = {
        "case": asdict(case),
        "warmup": warmup, "steps_per_round": steps, "rounds": rounds, "interleave": interleave,
        "log_every": int(cfg.trainer.log_every),
        "estimator": runners["pair"].est.name,
        "twin": f"{cfg.pair.twin} -> {runners['pair'].spec.estimator.name}",
        "twin_init": runners["pair"].spec.init, "twin_lr_factor": runners["pair"].spec.lr_factor,
        "ms_per_step": ms,
        "ms_per_step_min": ms_min,
        "ms_per_step_rounds": {n: [v * 1e3 for v in vs] for n, vs in per_round.items()},
        "ratios": {f"{n}_over_{b}": ms[n] / ms[b] for b in bases for n in names if not n.startswith("plain")},
        "ratios_from_min": {f"{n}_over_{b}": ms_min[n] / ms_min[b] for b in bases for n in names
                            if not n.startswith("plain")},
        "pair_sections_ms": sections,
        "changepoint_ms": sections.get("tracker", 0.0),
        "changepoint_fraction": sections.get("tracker", 0.0) / ms["pair"],
        "loadavg_1min": {"before": load0, "after": load1},
        "notes": notes,
    }
    res["ratios"]["pair_over_single"] = ms["pair"] / ms["single"]
    res["ratios_from_min"]["pair_over_single"] = ms_min["pair"] / ms_min["single"]

    say("  memory pass ...", flush=True)
    mem = {n: measure_memory(r, device, resident_gpu.get(n), pair=n == "pair") for n, r in runners.items()}
    res["memory"] = mem
    if mem["plain"]["peak_bytes"]:
        res["ratios"]["pair_peak_over_plain"] = mem["pair"]["peak_bytes"] / mem["plain"]["peak_bytes"]
        res["ratios"]["pair_peak_over_single"] = mem["pair"]["peak_bytes"] / mem["single"]["peak_bytes"]

    if profile:
        say("  profiling the pair ...", flush=True)
        res["profile"] = _profile_pair(runners["pair"])

    res["checks"] = {
        "pair_over_plain": res["ratios"]["pair_over_plain"],
        "pair_over_plain_compiled": res["ratios"].get("pair_over_plain_compiled"),
        "changepoint_fraction": res["changepoint_fraction"],
        "pair_peak_over_plain": res["ratios"].get("pair_peak_over_plain"),
    }
    res["targets"] = [
        {"name": t.name, "key": t.key, "limit": t.limit, "value": res["checks"].get(t.key),
         "pass": None if res["checks"].get(t.key) is None else bool(res["checks"][t.key] <= t.limit)}
        for t in TARGETS if t.case == case.name
    ]
    if keep:
        res["_runners"] = runners
    return res


def _without_compile(cfg):
    from omegaconf import open_dict

    cfg2 = cfg.copy()
    with open_dict(cfg2):
        cfg2.compile = False
    return cfg2


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def _mb(b) -> str:
    return "n/a" if b is None else f"{b / 2**20:.1f} MB"


def format_case(res: dict) -> str:
    c = res["case"]
    ms = res["ms_per_step"]
    lines = [f"== {c['name']}: " + Case(**c).describe()
             + f" | {res['rounds']} rounds x {res['steps_per_round']} steps ({res['interleave']}-interleaved)"
             + f" after {res['warmup']} warm-up,"
             + f" log_every={res['log_every']}, {res['estimator']} vs {res['twin']} twin"
             + f" (init {res['twin_init']}, lr x {res['twin_lr_factor']:.4g})"]
    hdr = f"  {'config':<16}{'ms/step':>10}{'min':>10}{'max':>10}{'vs plain':>10}"
    if "plain_compiled" in ms:
        hdr += f"{'vs compiled':>13}"
    hdr += f"{'peak mem':>12}{'resident':>12}{'transient':>12}"
    lines.append(hdr)
    for n, v in ms.items():
        rr = res["ms_per_step_rounds"][n]
        row = f"  {n:<16}{v:>10.2f}{min(rr):>10.2f}{max(rr):>10.2f}{v / ms['plain']:>9.2f}x"
        if "plain_compiled" in ms:
            row += f"{v / ms['plain_compiled']:>12.2f}x"
        m = res["memory"].get(n, {})
        row += f"{_mb(m.get('peak_bytes')):>12}{_mb(m.get('resident_bytes')):>12}{_mb(m.get('transient_bytes')):>12}"
        lines.append(row)
    r, rm = res["ratios"], res["ratios_from_min"]
    lines.append(f"  ratios: b/a = {r['single_over_plain']:.2f}x, c/a = {r['pair_over_plain']:.2f}x, "
                 f"c/b = {r['pair_over_single']:.2f}x"
                 + (f", c/a_compiled = {r['pair_over_plain_compiled']:.2f}x" if "pair_over_plain_compiled" in r else "")
                 + (f", pair peak / plain peak = {r['pair_peak_over_plain']:.2f}x" if "pair_peak_over_plain" in r else ""))
    lines.append(f"  same from the fastest round of each config: b/a = {rm['single_over_plain']:.2f}x, "
                 f"c/a = {rm['pair_over_plain']:.2f}x"
                 + (f", c/a_compiled = {rm['pair_over_plain_compiled']:.2f}x" if "pair_over_plain_compiled" in rm else ""))
    load = [v for v in res["loadavg_1min"].values() if v is not None]
    cores = os.cpu_count() or 1
    if load and max(load) > 1.25 * cores:
        lines.append(f"  WARNING: 1-min load average {max(load):.1f} on {cores} cores: other processes shared the "
                     "machine, timings are noisy (interleaving spreads the noise over all configs)")
    if res["pair_sections_ms"]:
        lines.append("  pair sections (ms/step, median; log amortized over log_every): "
                     + ", ".join(f"{k} {v:.2f}" for k, v in res["pair_sections_ms"].items()))
        lines.append(f"  change-point tracking: {res['changepoint_ms']:.2f} ms/step = "
                     f"{100 * res['changepoint_fraction']:.1f}% of the pair step")
    over = ms["pair"] - 2 * ms["plain"]
    lines.append(f"  pair overhead over 2 x plain: {over:+.2f} ms/step ({over / ms['pair'] * 100:+.1f}% of the pair step)")
    for n, note in res["notes"].items():
        if "compile_error" in note:
            what = "ran eager" if note.get("ran_eager") else "dropped"
            lines.append(f"  NOTE {n}: torch.compile failed, {what}: {note['compile_error']}")
    if "profile" in res:
        p = res["profile"]
        lines.append("  profile (one pair iteration + one log, torch.profiler, ms):")
        lines.append("    sections: " + ", ".join(f"{k} {v:.2f}" for k, v in p["sections_ms"].items()))
        if p["quantizer_ms"]:
            lines.append("    quantizer: " + ", ".join(f"{k} {v:.2f}" for k, v in p["quantizer_ms"].items()))
        lines.append("    top ops (self CPU): " + ", ".join(f"{k} {v:.1f}" for k, v in p["top_ops_self_cpu_ms"].items()))
    for t in res["targets"]:
        verdict = "n/a" if t["pass"] is None else ("PASS" if t["pass"] else "FAIL")
        val = "n/a" if t["value"] is None else (f"{t['value']:.2f}x" if t["key"] != "changepoint_fraction"
                                                  else f"{100 * t['value']:.1f}%")
        lim = f"{t['limit']}x" if t["key"] != "changepoint_fraction" else f"{100 * t['limit']:.0f}%"
        lines.append(f"  {verdict:<5}{t['name']}: {val} vs target <= {lim}")
    return "\n".join(lines)


def _device_name(case_device: str) -> str:
    if case_device == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def meta() -> dict:
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _device_name("cpu"),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "argv": sys.argv[1:],
    }


def _clean(obj):
    """JSON-safe: drop private keys, NaN/inf -> None."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="qatrun-bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="auto",
                   help=f"comma-separated from {', '.join(CASES)}; 'auto' (default): cpu-small, plus every gpu-* "
                        "case when CUDA is available; 'all': every case")
    p.add_argument("--steps", type=int, default=None,
                   help="timed iterations per config per round (default: log_every, so each pair round holds one log)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up iterations per config (default 2 CPU, 5 GPU)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; ms/step is the median (default 3)")
    p.add_argument("--log-every", type=int, default=None, help="pair logging interval (default: the config's, 10)")
    p.add_argument("--batch", type=int, default=None, help="override every selected case's batch size")
    p.add_argument("--qat-compile", choices=("case", "on", "off"), default="case",
                   help="cfg.compile for the qatrun runs: the case's default (on for GPU cases), or force on/off")
    p.add_argument("--profile", dest="profile", action="store_true", default=None,
                   help="torch.profiler over one pair iteration (default: on for CPU cases)")
    p.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument("--interleave", choices=("auto", "step", "block"), default="auto",
                   help="alternate configs every iteration (step) or every --steps iterations (block); "
                        "auto: step on CPU, block on GPU")
    p.add_argument("--out", default="results/bench.json", help="JSON output (default results/bench.json)")
    p.add_argument("--quiet", action="store_true", help="only the final tables")
    a = p.parse_args(argv)
    for key in ("steps", "warmup", "rounds", "log_every", "batch"):
        v = getattr(a, key)
        if v is not None and v < (0 if key == "warmup" else 1):
            p.error(f"--{key.replace('_', '-')} must be {'>= 0' if key == 'warmup' else 'positive'}, got {v}")
    return a


def select_cases(spec: str) -> list[Case]:
    if spec == "auto":
        names = ["cpu-small"] + ([n for n in CASES if n.startswith("gpu-")] if torch.cuda.is_available() else [])
    elif spec == "all":
        names = list(CASES)
    else:
        names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in CASES]
    if bad:
        raise SystemExit(f"qatrun-bench: unknown case(s) {', '.join(bad)}; valid: {', '.join(CASES)}, auto, all")
    cases = [CASES[n] for n in names]
    no_cuda = [c.name for c in cases if c.device == "cuda" and not torch.cuda.is_available()]
    if no_cuda:
        raise SystemExit(f"qatrun-bench: case(s) {', '.join(no_cuda)} need CUDA, which is not available")
    return cases


def run(argv=None) -> dict:
    """Parse ``argv``, run the selected cases, print the tables, write and return the JSON dict."""
    a = parse_args(argv)
    cases = select_cases(a.cases)
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the profiler's "no GPU" error line on CPU-only hosts
    out = {"meta": meta(), "cases": {}}
    texts = []
    for case in cases:
        if a.batch is not None:
            case = replace(case, batch=a.batch)
        if a.qat_compile != "case":
            case = replace(case, qat_compile=a.qat_compile == "on")
        cfg_log = a.log_every if a.log_every is not None else 10
        steps = a.steps if a.steps is not None else cfg_log
        warmup = a.warmup if a.warmup is not None else (2 if case.device == "cpu" else 5)
        profile = a.profile if a.profile is not None else case.device == "cpu"
        if not a.quiet:
            print(f"[{case.name}] {case.describe()}", flush=True)
        t0 = time.perf_counter()
        res = run_case(case, warmup=warmup, steps=steps, rounds=a.rounds, log_every=a.log_every, profile=profile,
                       verbose=not a.quiet, interleave=a.interleave)
        res["device_name"] = _device_name(case.device)
        res["wall_s"] = round(time.perf_counter() - t0, 1)
        out["cases"][case.name] = _clean(res)
        texts.append(format_case(res))
        if not a.quiet:
            print(texts[-1], flush=True)
    out["targets"] = [dict(case=n, **t) for n, r in out["cases"].items() for t in r["targets"]]
    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    if a.quiet:
        print("\n".join(texts))
    print(f"\nqatrun-bench: wrote {path}")
    return out


def main(argv=None) -> None:
    """Console script ``qatrun-bench`` (returns None: the exit status stays 0)."""
    try:
        run(argv)
    except ValueError as exc:  # bad options met late (e.g. a config override): one line
        print(f"qatrun-bench: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
