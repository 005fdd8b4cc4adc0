"""Sweeps that report as they go: a Hydra callback (``hydra.callbacks.sweep`` in ``configs/config.yaml``).

``on_job_start`` prints ``job i/N``, the elapsed time and an estimate of the time left;
``on_multirun_end`` lists the failed points (each job that failed holds ``error.txt``), runs
``qatrun-report`` over the sweep into ``<sweep dir>/report/`` and prints its table. ``cli.main``
calls ``start(n)`` before the launch (the number of points, checked by ``qatrun.preflight``) and
``finish()`` after it, which exits with 1 when any point failed.

A sweep stops as a run does. SIGINT or SIGTERM to the launching process, to its process group, or to one job
writes ``<sweep dir>/.qatrun.stop``; each running point checkpoints and ends (the launching process passes
its signal on to joblib's worker processes, which start with ``worker_init`` so that a signal never kills an
idle one), the points not started are not started, and ``finish`` prints one line with the command that
continues the sweep (finished points are not retrained, the others resume) and exits with 128 + the signal.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback

from qatrun.rundir import ERROR, SUMMARY
from qatrun.stop import StopSignals, takes_over

FAILED: list[str] = []  # set by on_multirun_end, read by finish (same process: the launching one)
STOP = ".qatrun.stop"  # in the sweep directory: the signal that stopped the sweep
_sweep: dict = {}  # the launching process's sweep: its directory and the command that continues it
_signalled: list[int] = []  # the signals this process received during the sweep (a worker's too)


def start(n: int, sweep_dir=None, again: list[str] | None = None) -> None:
    # environment variables reach the joblib launcher's worker processes too
    os.environ["QATRUN_SWEEP_N"] = str(n)
    os.environ["QATRUN_SWEEP_T0"] = str(time.time())
    if sweep_dir is None:
        return
    _sweep.update(dir=Path(sweep_dir), again=again or [])
    (Path(sweep_dir) / STOP).unlink(missing_ok=True)  # the last stop's: this run continues that sweep
    for sig in StopSignals.CATCH:
        if getattr(signal.getsignal(sig), "qatrun_takes_over", False) or \
                signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(sig, _on_signal)
    _workers_start_with(worker_init)


def finish() -> None:
    """After the launch: a stopped sweep's one line (exit 128 + the signal), else exit 1 when a point failed."""
    stop = stopped(_sweep.get("dir"))
    if stop:
        _shut_down_workers()
        done = sum((p.parent / ".hydra").is_dir() for p in _sweep["dir"].glob(f"*/{SUMMARY}"))  # jobs, not the report
        print(f"qatrun: sweep interrupted ({stop}): {done} of {os.environ.get('QATRUN_SWEEP_N', '?')} points "
              f"finished, the others checkpointed or not started; continue with: {shlex.join(_sweep['again'])}",
              file=sys.stderr)
        sys.exit(128 + signal.Signals[stop].value)
    if FAILED:
        sys.exit(1)


def stopped(sweep_dir) -> str | None:
    """The name of the signal that stopped this sweep, or None."""
    if _signalled:
        return signal.Signals(_signalled[0]).name
    if sweep_dir is None:
        return None
    try:
        return (Path(sweep_dir) / STOP).read_text().strip() or "SIGTERM"  # empty: read while being written
    except OSError:
        return None


def mark_stopped(sweep_dir, signum: int) -> None:
    """Record that ``signum`` stopped the sweep (the first signal's name stays)."""
    try:
        fd = os.open(Path(sweep_dir) / STOP, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError:
        return  # marked already, or the directory is gone: the points stop on their own signal then
    os.write(fd, signal.Signals(signum).name.encode())
    os.close(fd)


@takes_over
def _on_signal(signum, frame) -> None:
    """The launching process: mark the sweep stopped and pass the signal on to joblib's workers (a second
    Ctrl-C as itself: they stop at once)."""
    first = not _signalled
    _signalled.append(signum)
    if _sweep:
        mark_stopped(_sweep["dir"], signum)
    for pid in _worker_pids():
        try:
            os.kill(pid, signal.SIGTERM if first else signum)
        except OSError:
            pass


@takes_over
def _note(signum, frame) -> None:
    """A worker between points: the signal is noted (the points after it are not started), not fatal."""
    _signalled.append(signum)


def worker_init() -> None:
    """joblib's worker processes start with this (``_workers_start_with``): a signal to an idle worker is noted,
    never fatal (a dead worker would make joblib kill the others, perhaps mid-checkpoint)."""
    for sig in StopSignals.CATCH:
        signal.signal(sig, _note)


def _workers_start_with(init) -> None:
    """joblib's loky backend (the one Hydra's joblib launcher asks for) with ``init`` run in each new worker."""
    from joblib import register_parallel_backend
    from joblib._parallel_backends import LokyBackend

    class Loky(LokyBackend):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("initializer", init)
            super().__init__(*args, **kwargs)

    register_parallel_backend("loky", Loky)


def _worker_pids() -> list[int]:
    """This process's joblib (loky) workers, from /proc (Linux); none found elsewhere."""
    import glob

    pids = []
    for children in glob.glob(f"/proc/{os.getpid()}/task/*/children"):
        try:
            pids += [int(p) for p in Path(children).read_text().split()]
        except OSError:
            continue
    out = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"loky" in cmd and b"resource_tracker" not in cmd:
            out.append(pid)
    return out


def _shut_down_workers() -> None:
    """End joblib's workers now (they are idle: every point has returned), so that none outlives the command."""
    try:
        from joblib.externals.loky import reusable_executor
    except ImportError:
        return
    if reusable_executor._executor is not None:
        reusable_executor._executor.shutdown(wait=True)


def hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s // 60 % 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def progress(i: int, n: int, elapsed: float) -> str:
    """``job i/N``, the elapsed time and, once a job has finished, the time left at the mean pace."""
    left = f", about {hms(elapsed / (i - 1) * (n - i + 1))} left" if i > 1 else ""
    return f"job {i}/{n}, elapsed {hms(elapsed)}{left}"


class SweepCallback(Callback):
    def on_job_start(self, config, **kwargs) -> None:
        hc = HydraConfig.get()
        if str(hc.mode) != "RunMode.MULTIRUN" or "QATRUN_SWEEP_N" not in os.environ or stopped(hc.sweep.dir):
            return
        elapsed = time.time() - float(os.environ["QATRUN_SWEEP_T0"])
        print(f"[sweep] {progress(hc.job.num + 1, int(os.environ['QATRUN_SWEEP_N']), elapsed)}: "
              f"{hc.job.override_dirname or '(no varying key)'}", file=sys.stderr, flush=True)

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if stopped(sweep_dir):
            return  # finish says what stopped it and how to continue; the report waits for the finished sweep
        FAILED[:] = [f"{p.parent.name}: {p.read_text().splitlines()[1]}" for p in sorted(sweep_dir.glob(f"*/{ERROR}"))]
        hparams_experiment(sweep_dir)
        try:
            from qatrun.report import report

            res = report([sweep_dir], sweep_dir / "report", formats=("png",), pair_figs=False)
            n = sum(c["n_seeds"] for c in res["comparisons"])
            print(f"\n{n} finished run(s) in {sweep_dir}; report in {sweep_dir / 'report'}\n")
            print((sweep_dir / "report" / "table.md").read_text())
        except FileNotFoundError:
            print(f"\nno finished run in {sweep_dir}; no report", file=sys.stderr)
        if FAILED:
            print(f"qatrun: {len(FAILED)} sweep point(s) failed (details in each job's {ERROR}):", file=sys.stderr)
            for line in FAILED:
                print(f"  {line}", file=sys.stderr)


HPARAMS_DIR = "hparams"  # <sweep dir>/hparams/: the sweep's HParams experiment (tensorboard --logdir <sweep dir>)


def hparams_experiment(sweep_dir: Path) -> None:
    """The sweep's HParams experiment, from its finished runs' summaries: the keys that differ between the
    points first and checked, the headline metric first. Nothing when no run finished."""
    import json

    from qatrun.metrics.names import headline_first
    from qatrun.tblog import write_experiment

    runs = []
    for p in sorted(sweep_dir.glob(f"*/{SUMMARY}")):
        try:
            s = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(s, dict) and isinstance(s.get("hparams"), dict):
            runs.append(s)
    if runs:
        metrics = headline_first(sorted({k for s in runs for k, v in s.items() if "/" in k and isinstance(v, float)}))
        write_experiment(sweep_dir / HPARAMS_DIR, [s["hparams"] for s in runs], metrics)
