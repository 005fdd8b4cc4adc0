"""Files that lose nothing: atomic writes (temp file, fsync, rename) and JSON-safe values."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


def write_atomic(path, write) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, rename it over ``path``:
    a crash mid-write leaves the previous file intact."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def jsonable(o):
    """JSON-safe copy: NaN/Inf -> None, numpy and 0-dim torch scalars -> Python, tuples -> lists,
    keys starting with ``_`` dropped (private working state)."""
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items() if not str(k).startswith("_")}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if hasattr(o, "item") and getattr(o, "ndim", None) == 0:  # numpy / torch scalars
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def write_json(path, obj, atomic: bool = True) -> None:
    text = json.dumps(jsonable(obj), indent=2, sort_keys=True)
    if atomic:
        write_atomic(path, lambda f: f.write(text.encode()))
    else:
        Path(path).write_text(text + "\n")


# --- one process per run directory ---------------------------------------------------------------------
LOCK = ".qatrun.lock"
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
        if p.is_file() and p.name != LOCK and not p.name.startswith(".write-test-"):
            if any(p.name.startswith(f".{n}.") for n in ("checkpoint.pt", "summary.json", "weights_sample.pt",
                                                          "status.json")):
                p.unlink(missing_ok=True)
                gone.append(p)
    return gone


def os_error_line(exc: OSError, path, run_dir=None, need: int | None = None) -> str:
    """One line naming the cause of a failed write: a full disk (with the space needed and free), a run
    directory removed or made read-only while the run was going, else the system's words."""
    import errno
    import shutil

    path, where = Path(path), Path(run_dir or Path(path).parent)
    if exc.errno == errno.ENOSPC:
        try:
            free = shutil.disk_usage(where if where.exists() else where.parent).free
        except OSError:
            free = None
        sizes = (f"; {need / 2**20:.1f} MB needed" if need else "") + \
                (f", {free / 2**20:.1f} MB free" if free is not None else "")
        return f"no space left on device writing {path}{sizes}; free some space, then resume"
    if exc.errno == errno.ENOENT and not where.exists():
        return f"the run directory {where} was removed while the run was going (writing {path.name})"
    if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return f"cannot write {path}: the run directory {where} became read-only while the run was going"
    return f"{path}: {exc.strerror or exc}"
