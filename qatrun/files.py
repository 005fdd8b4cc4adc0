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
