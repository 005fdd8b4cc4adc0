"""Sweeps that report as they go: a Hydra callback (``hydra.callbacks.sweep`` in ``configs/config.yaml``).

``on_job_start`` prints ``job i/N``, the elapsed time and an estimate of the time left;
``on_multirun_end`` lists the failed points (each job that failed holds ``error.txt``), runs
``qatrun-report`` over the sweep into ``<sweep dir>/report/`` and prints its table. ``cli.main``
calls ``start(n)`` before the launch (the number of points, checked by ``qatrun.preflight``) and
``finish()`` after it, which exits with 1 when any point failed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback

from qatrun.rundir import ERROR, SUMMARY

FAILED: list[str] = []  # set by on_multirun_end, read by finish (same process: the launching one)


def start(n: int) -> None:
    # environment variables reach the joblib launcher's worker processes too
    os.environ["QATRUN_SWEEP_N"] = str(n)
    os.environ["QATRUN_SWEEP_T0"] = str(time.time())


def finish() -> None:
    if FAILED:
        sys.exit(1)


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
        if str(hc.mode) != "RunMode.MULTIRUN" or "QATRUN_SWEEP_N" not in os.environ:
            return
        elapsed = time.time() - float(os.environ["QATRUN_SWEEP_T0"])
        print(f"[sweep] {progress(hc.job.num + 1, int(os.environ['QATRUN_SWEEP_N']), elapsed)}: "
              f"{hc.job.override_dirname or '(no varying key)'}", file=sys.stderr, flush=True)

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
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
