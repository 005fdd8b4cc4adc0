"""``qatrun``: check the command, compose the Hydra config, call ``train``, print the final figures.

Before Hydra starts, ``qatrun.preflight`` checks the overrides, every sweep point and the run
directory, so a mistake ends with one line ``qatrun: error: ...`` and exit code 2, before any work
and without creating a directory. ``resume=DIR`` continues a run from its saved config without Hydra.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
import traceback
from pathlib import Path

from qatrun import stop  # light, and first: a Ctrl-C while torch and Hydra load is one line too

if stop.is_command_line():
    stop.catch_early()

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from qatrun import dist, identity, preflight, sweep  # noqa: E402
from qatrun.errors import TrainingError  # noqa: E402
from qatrun.health import EXIT_DIVERGED  # noqa: E402
from qatrun.rundir import ERROR, LOCK, SAME_AS, SUMMARY, lock_dir  # noqa: E402
from qatrun.stop import Interrupted  # noqa: E402
from qatrun.summary import summary_lines  # noqa: E402
from qatrun.train import train  # noqa: E402  (torch and the registries: --help composes the config, which needs them)


def fail(message: str) -> None:
    print(f"qatrun: error: {message}", file=sys.stderr)
    sys.exit(2)


def execute(cfg: DictConfig, run_dir) -> dict:
    """Train, print the figures; a user error raises ``ValueError`` (a NaN: ``TrainingError``)."""
    try:
        summary = train(cfg, run_dir)
    finally:
        dist.teardown()
    stop.early_words[0] = f"after the run ended; its files are written ({run_dir})"
    if dist.is_main():
        print(f"\nrun directory: {run_dir}")
        print("\n".join(summary_lines(summary)))
        if summary.get("diverged"):
            print(f"qatrun: warning: the pair diverged: {summary['diverged_why']}; its figures are not a result "
                  "(summary.json says diverged: true; qatrun-report keeps it out of its tables)", file=sys.stderr)
    return summary


def interrupted(exc) -> None:
    """A run stopped by SIGINT/SIGTERM after its checkpoint: one line, exit 128 + the signal."""
    print(f"qatrun: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)


def quote(value: str) -> str:
    """An override value Hydra's grammar reads back as this string."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def again(argv: list[str], sweep_dir: Path) -> list[str]:
    """The command that continues a sweep in ``sweep_dir``: the same overrides, that directory."""
    given = [a for a in argv if not a.startswith(("hydra.sweep.dir=", "hydra.run.dir="))]
    where = str(sweep_dir) if re.fullmatch(r"[\w./+-]+", str(sweep_dir)) else quote(str(sweep_dir))
    return ["qatrun", *given, f"hydra.sweep.dir={where}"]


def remove_if_empty(run_dir: Path) -> None:
    """A run that failed before its first step leaves nothing: drop a directory holding only Hydra's files."""
    if run_dir.is_dir() and all(p.name in (".hydra", LOCK) or p.suffix == ".log" for p in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)


@hydra.main(version_base="1.3", config_path="pkg://qatrun.configs", config_name="config")
def _main(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = str(hc.mode) == "RunMode.MULTIRUN"
    if multirun and sweep.stopped(hc.sweep.dir):  # a signal stopped the sweep: the points not started wait
        remove_if_empty(run_dir)
        return None
    if multirun:  # a sweep run again retries its failed points: the last try's error.txt is stale now
        (run_dir / ERROR).unlink(missing_ok=True)
    if multirun and (twin := finished_twin(cfg, run_dir)) is not None:  # a sweep run again: not retrained
        done = json.loads(twin.read_text())
        where = "finished already" if twin.parent == run_dir else f"is the same run as {twin.parent}"
        print(f"qatrun: job {hc.job.num} [{hc.job.override_dirname}] {where} "
              f"(fingerprint {done['fingerprint']}): not retrained", file=sys.stderr)
        if twin.parent != run_dir:
            (run_dir / SAME_AS).write_text(f"{twin.parent}\n")
        return done.get("pair/quantized_agreement")
    try:
        summary = execute(cfg, run_dir)
    except Interrupted as exc:  # the whole command stops, a sweep too; the job resumes when run again
        if not multirun:
            remove_if_empty(run_dir)  # stopped while starting: Hydra's files alone are not a run
            interrupted(exc)
        sweep.mark_stopped(hc.sweep.dir, exc.signum)  # the other points stop; sweep.finish says it in one line
        return None
    except (ValueError, TrainingError) as exc:  # user errors: one line, no traceback
        if not multirun:
            remove_if_empty(run_dir)
            fail(str(exc))
        return record_failure(run_dir, hc, str(exc))
    except Exception as exc:  # in a sweep a crash of one point must not stop the others
        if not multirun:
            raise
        return record_failure(run_dir, hc, f"{type(exc).__name__}: {exc}", traceback.format_exc())
    if summary.get("diverged"):
        if not multirun:
            sys.exit(EXIT_DIVERGED)
        return record_failure(run_dir, hc, f"diverged: {summary['diverged_why']}")
    return summary.get("pair/quantized_agreement")


def finished_twin(cfg: DictConfig, run_dir: Path) -> Path | None:
    """The summary.json of a finished job of the same sweep with this job's fingerprint (re-running a sweep
    with one more value shifts the job numbers; the finished points are found by what they computed): this
    job's own first. A finished point is not even reopened: its checkpoint may predate a state format that
    can no longer be continued (a twin rule's saved state that has since changed), and its figures stand as
    computed."""
    mine = identity.of(cfg)
    own = run_dir / SUMMARY
    if own.exists():  # this very job: not retrained if it computed this; else it continues as a resume
        return own if _finished_with(own, mine) else None
    for p in sorted(run_dir.parent.glob(f"*/{SUMMARY}")):
        if _finished_with(p, mine):
            return p
    return None


def _finished_with(summary: Path, run: identity.RunIdentity) -> bool:
    """Whether ``summary`` is a readable, undiverged result of what ``run`` computes (``identity.matches``: its
    fingerprint, the CPU thread count included where the summary records it)."""
    try:
        s = json.loads(summary.read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(s, dict) and identity.matches(s.get("fingerprint"), s.get("provenance"), run)
            and not s.get("diverged"))


def record_failure(run_dir: Path, hc, message: str, details: str = "") -> None:
    """A failed sweep point: its message and traceback in its job directory; the sweep goes on."""
    overrides = hc.job.override_dirname
    (run_dir / ERROR).write_text(f"{overrides}\n{message}\n{details}")
    print(f"qatrun: error: job {hc.job.num} [{overrides}] failed: {message}", file=sys.stderr)
    return None


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    flags = [a for a in argv if a.startswith("-")]
    if not set(flags) - {"-m", "--multirun"}:  # --help, --cfg, --info...: Hydra's own
        multirun, overrides = bool(flags), [a for a in argv if not a.startswith("-")]
        try:
            if not multirun and any(a.startswith("resume=") for a in overrides):
                run_dir, cfg = preflight.resume(overrides)
                try:
                    summary = execute(cfg, run_dir)
                except Interrupted as exc:
                    interrupted(exc)
                if summary.get("diverged"):
                    sys.exit(EXIT_DIVERGED)
                return
            n, exclude, where = preflight.check_command(overrides, multirun)
            if int(os.environ.get("RANK", "0")) == 0:  # under torchrun rank 0 owns it (it alone writes)
                lock_dir(where)  # the run's (or the sweep's) directory is this process's from here on
            # Hydra then uses this very directory (its ${now:} is resolved once, here)
            argv.append(f"hydra.{'sweep' if multirun else 'run'}.dir={quote(str(where))}")
        except (ValueError, TrainingError) as exc:  # UserError, CheckpointError, a check's message; a failed run
            fail(str(exc))
        if multirun:
            sweep.start(n, where, again(argv, where))
            # job directories named by what varies: 3_estimator.bits=4,optimizer=adam
            argv.append(f"hydra.job.config.override_dirname.exclude_keys=[{','.join(repr(k) for k in exclude)}]")
    sys.argv = [sys.argv[0], *argv]
    _main()
    if flags:
        sweep.finish()


if __name__ == "__main__":
    main()
