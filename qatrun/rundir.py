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

_held: dict[str, int] = {}  # directory -> its open descriptor, locked (kept open: the lock lives as long as the process)


def lock_dir(path) -> bool:
    """Take the run directory ``path`` for this process (created if needed): an exclusive ``fcntl.flock`` on the
    directory itself, which the kernel releases when the process ends, also by SIGKILL, and which no file
    operation can take away (a lock on a file inside was lost when the file was deleted). ``.qatrun.lock``
    holds the holder's pid, for the message only. A second process is refused with a ``ValueError`` naming
    that pid. Idempotent within one process: True when this call took the lock, False when this process held
    it already."""
    import fcntl

    path = Path(path).absolute()
    if str(path) in _held:
        return False
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ValueError(f"run directory {path} is in use by another qatrun process (pid {_holder(path)}); wait for "
                         "it to finish, or choose another hydra.run.dir") from None
    _held[str(path)] = fd
    try:
        (path / LOCK).write_text(str(os.getpid()))
    except OSError:
        pass  # the pid is information; the lock is held already
    return True


def _holder(path: Path) -> str:
    try:
        return (path / LOCK).read_text(errors="replace").strip()[:32] or "unknown"
    except OSError:
        return "unknown"


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


def now_at(run_dir) -> Path | None:
    """Where the run directory this process locked is now: itself, the place it was moved to, or None when it
    was removed (the kernel follows the locked descriptor: ``/proc/self/fd``). ``run_dir`` itself where this
    process holds no lock on it or cannot tell."""
    fd = _held.get(str(Path(run_dir).absolute()))
    if fd is None:
        return Path(run_dir)
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return Path(run_dir)
    return None if target.endswith(" (deleted)") else Path(target)


def last_checkpoint_words(run_dir: Path) -> str:
    where = now_at(run_dir)
    if where is None:
        return "its checkpoints went with it"
    last = where / CHECKPOINT
    return f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"


def guarded(run_dir: Path, name, write) -> None:
    """Run ``write()``; a failed write (full disk, directory removed, moved or read-only) becomes one line
    naming its cause and the last good checkpoint."""
    try:
        write()
    except OSError as exc:
        where = now_at(run_dir)
        if where is not None and where != Path(run_dir).resolve():  # the descriptor names the real path
            import shlex

            raise TrainingError(f"the run directory {run_dir} was moved to {where} while the run was going (writing "
                                f"{name}); {last_checkpoint_words(run_dir)}; continue with: qatrun resume="
                                f"{shlex.quote(str(where))}") from None
        raise TrainingError(f"{os_error_line(exc, Path(run_dir) / name, run_dir)}; "
                            f"{last_checkpoint_words(run_dir)}") from None


def write_status(run_dir: Path, state: str, step: int, steps: int, **more) -> None:
    """``status.json``: running, interrupted (with the signal), finished or diverged, and the step: how the
    report and a user tell an interrupted run from a finished one."""
    guarded(run_dir, STATUS, lambda: write_json(Path(run_dir) / STATUS,
                                                {"state": state, "step": step, "steps": steps, **more}))


def end_status(run_dir: Path, state: str, step: int | None, steps: int | None, **more) -> None:
    """The last ``status.json`` of a run that stopped on an error or a signal (failed / interrupted, with the
    message): best effort, as the fault may be the directory itself; the run's own line says what happened."""
    where = now_at(run_dir)  # a directory moved mid-run: its status where it went
    if where is None:
        return
    try:
        write_status(where, state, step, steps, **more)
    except TrainingError:
        pass
