"""The run directory: its file names, the lock that makes it one process's, and writes that lose nothing.

Every tool that reads or writes a run's files (training, the command line, preflight, the report, sweeps)
takes their names from here. A run directory holds::

    summary.json        the final figures, curves and resolved config (qatrun.summary)
    status.json         running / interrupted / finished / diverged, and the step
    checkpoint.pt       the latest checkpoint (qatrun.checkpoint)
    weights_sample.pt   a fixed sample of quantized weights for the report's scatter plots
    same_as.txt         a sweep point that another job of the sweep already computed
    error.txt           a sweep point that failed, with its message
    tb/                 TensorBoard events
"""

from __future__ import annotations

import os
from pathlib import Path

from qatrun.errors import TrainingError
from qatrun.files import os_error_line, write_json

SUMMARY = "summary.json"
STATUS = "status.json"
CHECKPOINT = "checkpoint.pt"
WEIGHTS_SAMPLE = "weights_sample.pt"
SAME_AS = "same_as.txt"
ERROR = "error.txt"
TB = "tb"
LOCK = ".qatrun.lock"
WRITTEN = (CHECKPOINT, SUMMARY, WEIGHTS_SAMPLE, STATUS)  # written atomically: a crash leaves ``.<name>.<random>``

_held: dict[str, int] = {}  # directory -> the open lock file (kept open: the lock lives as long as the process)


def lock_dir(path) -> bool:
    """Take the run directory ``path`` for this process (created if needed): an exclusive ``fcntl`` lock on
    ``path/.qatrun.lock``, released when the process ends, also by SIGKILL. A second process is refused
    with a ``ValueError`` naming the holder's pid. Idempotent within one process: True when this call took
    the lock, False when this process held it already."""
    import fcntl

    path = Path(path).absolute()
    if str(path) in _held:
        return False
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ValueError(f"run directory {path} is in use by another qatrun process (pid {holder}); wait for it to "
                         "finish, or choose another hydra.run.dir") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _held[str(path)] = fd
    return True


def unlock_dir(path) -> None:
    fd = _held.pop(str(Path(path).absolute()), None)
    if fd is not None:
        os.close(fd)


def remove_stale_temps(path) -> list[Path]:
    """Drop the temporary files an interrupted atomic write left (``.<name>.<random>``); call with the lock."""
    gone = []
    for p in Path(path).glob(".*.*"):
        if p.is_file() and p.name != LOCK and any(p.name.startswith(f".{n}.") for n in WRITTEN):
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def last_checkpoint_words(run_dir: Path) -> str:
    last = Path(run_dir) / CHECKPOINT
    return f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"


def guarded(run_dir: Path, name, write) -> None:
    """Run ``write()``; a failed write (full disk, directory removed or read-only) becomes one line naming its
    cause and the last good checkpoint."""
    try:
        write()
    except OSError as exc:
        raise TrainingError(f"{os_error_line(exc, Path(run_dir) / name, run_dir)}; "
                            f"{last_checkpoint_words(run_dir)}") from None


def write_status(run_dir: Path, state: str, step: int, steps: int, **more) -> None:
    """``status.json``: running, interrupted (with the signal), finished or diverged, and the step: how the
    report and a user tell an interrupted run from a finished one."""
    guarded(run_dir, STATUS, lambda: write_json(Path(run_dir) / STATUS,
                                                {"state": state, "step": step, "steps": steps, **more}))
