"""The lockstep loop: an estimator run and its twin on the same batches, in one process.

``train(cfg, run_dir)`` turns the config into a ``RunSpec`` (``qatrun.spec``: every check, as preflight
made them) and ``run(spec, run_dir)`` trains both runs step by step on identical batches from it alone,
logs the pair figures (docs/metrics.md, "Metric definitions") to TensorBoard and returns the final
figures, which it also writes to ``<run_dir>/summary.json`` (``qatrun.summary``). The hot loop makes no
host syncs: losses, distance travelled, change points and the NaN watch stay on the device until
``log_every``. The run directory's files, lock and guarded writes are ``qatrun.rundir``'s.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from qatrun import checkpoint as ckpt
from qatrun import checks, dist, rundir
from qatrun.data import DataShape, build_data
from qatrun.device import set_fp32_precision
from qatrun.errors import TrainingError
from qatrun.estimators import describe
from qatrun.files import write_atomic, write_json
from qatrun.metrics.common import to_host
from qatrun.models.deterministic import deterministic_pooling
from qatrun.pair import Pair, build_run
from qatrun.record import LAYOUT, Recorder
from qatrun.spec import RunSpec, build as build_spec
from qatrun.stop import Interrupted, StopNow, StopSignals
from qatrun.summary import compose, headline_metrics, summary_lines  # noqa: F401 (summary_lines: API)
from qatrun.tblog import TBLogger


def set_determinism(on: bool) -> None:
    """Both ways: a sweep runs its jobs in one process, and a job after a deterministic one is not (on CUDA
    it would keep torch's adaptive pooling, whose backward then raises: ``qatrun.models.deterministic``)."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(bool(on))


def pair_from_spec(spec: RunSpec, device, steps: int, measure: bool = True) -> Pair:
    """The pair described by ``spec`` (``qatrun.spec.build``), on ``device``, for ``steps`` steps."""
    model = build_run(spec.model, spec.shape.num_classes, spec.estimator, spec.seed, spec.he_init,
                      spec.shape.input_shape, spec.quantize_linear, quantizer=spec.quantizer,
                      quantizer_options=spec.quantizer_options, activation=spec.activation,
                      activation_options=spec.activation_options, **spec.model_options)
    if spec.deterministic and torch.device(device).type == "cuda":  # no deterministic CUDA kernel for the original
        deterministic_pooling(model)
    return Pair(model.to(device), spec.estimator, spec.twin, optimizer=spec.optimizer, lr=spec.lr,
                optimizer_options=dict(spec.optimizer_options), steps=steps, warmup_frac=spec.trainer.warmup_frac,
                precision=spec.precision, channels_last=spec.channels_last, compile=spec.compile,
                metrics=spec.trainer.metrics, measure=measure)


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
    return pair_from_spec(spec, device, steps, measure)


def log_figures(pair: Pair, step: int, losses: list[float] | None) -> dict:
    """The figures logged every ``log_every`` steps: the metrics' (per layer too), losses, lrs."""
    figs = to_host(pair.figures(per_layer=True))
    for run, v in zip(pair.runs, losses or []):
        figs[f"{run}/loss"] = v
    for run, lr in zip(pair.runs, pair.lrs()):
        figs[f"{run}/lr"] = lr
    return figs


def check_finite(pair: Pair, run_dir: Path) -> None:
    """Stop on a NaN/Inf loss, naming the run and the step and keeping the last good checkpoint."""
    bad = pair.first_nonfinite()
    if bad is not None:
        raise TrainingError(f"the {bad[0]} run's loss became NaN or Inf at step {bad[1]}; training stopped, "
                            f"{rundir.last_checkpoint_words(run_dir)}. Lower optimizer.lr or check the data.")


def train(cfg: DictConfig, run_dir: str | os.PathLike) -> dict:
    """Train the pair described by ``cfg``; write TensorBoard events, checkpoints and summary.json."""
    return run(build_spec(cfg), run_dir)


def run(spec: RunSpec, run_dir: str | os.PathLike) -> dict:
    """Train the pair of ``spec``. The run directory is this process's while it trains (``rundir.lock_dir``),
    and released at the end unless the caller (the command line) took it first. A run that stops on an error or
    a signal ends its ``status.json`` as failed (with the message) or interrupted, and raises one line."""
    where, held, runs = Path(run_dir), [], []
    try:
        with StopSignals(deferred=False) as stop:  # while it starts a signal stops it at once (nothing computed)
            return _train(spec, where, held, stop, runs)
    except Interrupted:
        raise
    except StopNow as exc:  # a signal while starting, or a second Ctrl-C: the last checkpoint stands
        raise _stopped_at_once(exc.signum, where, runs) from None
    except (Exception, KeyboardInterrupt) as exc:
        err = _one_line(exc, where)
        if runs and runs[0].wrote_status:
            state = "failed" if isinstance(exc, Exception) else "interrupted"
            rundir.end_status(where, state, runs[0].saved, runs[0].steps, error=str(err) or type(err).__name__)
        if err is exc:
            raise
        raise err from None
    finally:
        for d in held:
            rundir.unlock_dir(d)


def _one_line(exc: BaseException, where: Path) -> BaseException:
    """A failed write of this run (TensorBoard's writer and the rest) as one line, as ``rundir.guarded`` names it;
    any other exception as it is (a write elsewhere, data on another disk say, keeps its own message)."""
    if not isinstance(exc, OSError):
        return exc
    name = os.fsdecode(exc.filename) if exc.filename is not None else None
    if name is not None and not name.startswith(str(where)):
        return exc
    if name is None and exc.errno not in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.ENOENT):
        return exc

    def again():
        raise exc

    try:
        rundir.guarded(where, Path(name).relative_to(where) if name else Path("."), again)
    except TrainingError as line:
        return line
    return exc


def _stopped_at_once(signum: int, where: Path, runs: list) -> Interrupted:
    """The ``Interrupted`` of a run stopped without a new checkpoint, its status.json saying so."""
    name = signal.Signals(signum).name
    if not runs:  # while starting: whatever checkpoint the directory holds is as it was
        return Interrupted(signum, None, None, where, "while starting", (where / rundir.CHECKPOINT).exists())
    r = runs[0]
    if r.wrote_status:
        rundir.end_status(where, "interrupted", r.saved, r.steps, signal=name)
    return Interrupted(signum, r.saved, r.steps, where, "a second time: at once", r.saved is not None)


class _Run:
    """One training run's moving parts: the pair, its data, the recorder and where it started."""

    def __init__(self, spec: RunSpec, run_dir: Path, held: list):
        self.spec, self.run_dir, self.main = spec, run_dir, dist.is_main()  # under torchrun only rank 0 writes
        if self.main:
            checks.writable_dir(run_dir)
            if rundir.lock_dir(run_dir):  # one process per run directory (released at exit, also on SIGKILL)
                held.append(run_dir)
            rundir.remove_stale_temps(run_dir)
        set_determinism(spec.deterministic)
        self.device = dist.setup(spec.device.type) or spec.device
        if self.device.type == "cuda":  # precision=fp32 is IEEE fp32 on CUDA too (no TF32), before anything compiles
            set_fp32_precision()
        self.data = build_data(spec.data, self.device, spec.seed, dist.world(), dist.rank(), **spec.data_options)
        self.steps = spec.steps(self.data.steps_per_epoch)
        if spec.compile:  # a fresh dynamo state per job: a Hydra sweep runs its jobs in one process, and one job's
            torch._dynamo.reset()  # caches broke the next estimator's compile
        self.pair = pair_from_spec(spec, self.device, self.steps, self.main)
        if self.main:
            print(f"quantized layers ({len(spec.quantized)}): {', '.join(spec.quantized)}")
            if spec.activation is not None:
                inputs = spec.quantized[1:]
                print(f"quantized inputs ({len(inputs)}, {spec.activation}, {spec.activation_options['bits']} bits): "
                      f"{', '.join(inputs) or 'none (one quantized layer: its input is the data)'}")
            for line in spec.warnings:
                print(f"qatrun: warning: {line}", file=sys.stderr)
        self.start = 0  # the curves kept: those of the metrics this pair measures
        self.rec = Recorder(list(self.pair.metrics) if self.pair.measured else spec.trainer.metrics)
        blob = ckpt.load_for_resume(run_dir, spec.run.config, spec.run.provenance)
        if blob is not None:
            self.start = ckpt.restore(blob, self.pair, self.rec)
        if self.main:
            self.rec.tb = TBLogger(str(run_dir / rundir.TB), purge_step=self.start + 1 if self.start else None)
        self.saved = self.start if blob is not None else None  # the last checkpoint's step: where a resume goes on
        self.wrote_status = False  # whether status.json is this process's (a failure then ends it as failed)

    def first_figures(self) -> None:
        """Step 0: the config and the first figures, the twin's init checked against the metrics' invariants."""
        if self.main:
            self.rec.tb.text("config", "```yaml\n" + OmegaConf.to_yaml(self.spec.run.config) + "\n```")
            self.rec.tb.layout(LAYOUT)
            problems = self.pair.start_problems(self.rec.record("log", 0, log_figures(self.pair, 0, None), keep=False))
            if problems:
                raise TrainingError(f"step-0 invariant broken: {'; '.join(problems)}; the twin's init map is wrong")
        log_eval(self.pair, self.rec, self.data, 0, self.main)

    def save(self, done: int) -> None:
        check_finite(self.pair, self.run_dir)
        if self.main:
            state = {"pair": self.pair.state_dict(), "history": self.rec.state_dict()}
            rundir.guarded(self.run_dir, rundir.CHECKPOINT, lambda: ckpt.save(
                self.run_dir, done, self.spec.run.config, state, self.spec.run.provenance))
        self.saved = done

    def log(self, done: int, bar) -> None:
        check_finite(self.pair, self.run_dir)
        means = self.pair.mean_losses()
        if self.main:
            figs = self.rec.record("log", done, log_figures(self.pair, done, means))
            agree = figs.get("pair/quantized_agreement")
            bar.set_postfix({f"{r}_loss": f"{v:.3f}" for r, v in zip(self.pair.runs, means)}
                            | ({"agree": f"{agree:.4f}"} if agree is not None else {}))

    def stop(self, signum: int, done: int) -> Interrupted:
        exc = Interrupted(signum, done, self.steps, self.run_dir)
        if self.main:
            rundir.write_status(self.run_dir, "interrupted", done, self.steps, signal=signal.Signals(signum).name)
            self.rec.tb.text("status", str(exc))
            self.rec.tb.close()
        return exc


def _train(spec: RunSpec, run_dir: Path, held: list, stop: StopSignals, runs: list) -> dict:
    r = _Run(spec, run_dir, held)
    runs.append(r)
    stop.deferred = True  # built: a signal now waits for the step to end and writes its checkpoint
    pair, tr, steps = r.pair, spec.trainer, r.steps
    if r.start == 0:
        pair.calibrate(r.data.batch(0)[0])  # the activation ranges from the first training batch, before any eval
        r.first_figures()
    last_eval = None  # the figures of the eval at the final step, reused by the summary
    bar = tqdm(range(r.start, steps), initial=r.start, total=steps, disable=not (tr.progress and r.main),
               desc=f"{describe(pair.est)} vs {pair.spec.role}", dynamic_ncols=True)
    t0 = last_save = time.time()
    if r.main:
        rundir.write_status(run_dir, "running", r.start, steps)
        r.wrote_status = True
    with stop:
        for step in bar:
            x, y = r.data.batch(step)
            pair.step(step, x, y)
            done = step + 1
            if done % tr.log_every == 0 or done == steps:
                r.log(done, bar)
            if done % tr.eval_every == 0 or done == steps:  # every rank evaluates its shard
                last_eval = log_eval(pair, r.rec, r.data, done, r.main)
            overdue = time.time() - last_save >= 60 * tr.checkpoint_minutes  # a long run never holds more unsaved
            if done % tr.checkpoint_every == 0 or done == steps or overdue or stop.signum:
                r.save(done)
                last_save = time.time()
            if stop.signum and done < steps:
                bar.close()
                exc = r.stop(stop.signum, done)
                stop.after_checkpoint()
                raise exc
    bar.close()
    final_eval = last_eval if last_eval is not None else pair.evaluate(r.data.test_batches())  # a finished run again
    if not r.main:
        return {}
    return _finish(r, final_eval, t0)


def _finish(r: _Run, final_eval: dict, t0: float) -> dict:
    """The summary, the HParams record, the weight sample and the final status."""
    pair, run_dir, steps = r.pair, r.run_dir, r.steps
    summary = compose(pair, r.spec, steps, final_eval, r.rec.history, r.device)
    r.rec.tb.hparams(summary["hparams"], headline_metrics(summary), steps)
    r.rec.tb.close()
    sample = pair.weight_sample(r.spec.trainer.scatter_sample, r.spec.seed)
    if sample is not None:
        rundir.guarded(run_dir, rundir.WEIGHTS_SAMPLE, lambda: write_atomic(
            run_dir / rundir.WEIGHTS_SAMPLE, lambda f: torch.save(sample, f)))
    rundir.guarded(run_dir, rundir.SUMMARY, lambda: write_json(run_dir / rundir.SUMMARY, summary))
    rundir.write_status(run_dir, "diverged" if summary["diverged"] else "finished", steps, steps)
    summary["wall_s"] = time.time() - t0
    return summary


def log_eval(pair: Pair, rec: Recorder, data, step: int, main: bool = True) -> dict:
    figs = pair.evaluate(data.test_batches())
    if not main:
        return figs
    figs = rec.record("eval", step, figs)
    if step > 0:
        for name, values in pair.histograms().items():
            rec.tb.histogram(name, values, step)
    return figs
