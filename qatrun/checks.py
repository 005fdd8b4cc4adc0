"""Argument checks, one home for all of them: each raises ``ValueError`` naming the key and what is valid.

Booleans are refused where a number is expected (``True`` is an ``int`` in Python, never a count).
"""

from __future__ import annotations

import difflib
import math
import tempfile
from pathlib import Path


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def positive_int(key: str, v, *, allow_none: bool = False, minimum: int = 1) -> int | None:
    """An integer >= ``minimum`` (``None`` passes when ``allow_none``: "all" / "unset")."""
    if v is None and allow_none:
        return None
    if not _is_int(v) or v < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{key} must be {what}{' or null' if allow_none else ''}, got {v!r}")
    return v


def positive(key: str, v) -> float:
    """A finite number > 0."""
    if not _is_number(v) or not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{key} must be positive, got {v!r}")
    return v


def in_range(key: str, v, lo: float, hi: float, *, hi_open: bool = True) -> float:
    """A finite number in ``[lo, hi)`` (or ``[lo, hi]`` with ``hi_open=False``)."""
    ok = _is_number(v) and math.isfinite(v) and lo <= v and (v < hi if hi_open else v <= hi)
    if not ok:
        raise ValueError(f"{key} must be in [{lo}, {hi}{')' if hi_open else ']'}, got {v!r}")
    return v


def nearest(word: str, valid) -> str:
    """' did you mean X?' for the valid names closest to ``word`` (case-insensitive first), or ''."""
    valid = list(valid)
    same = [v for v in valid if v.lower() == str(word).lower()]
    near = same or difflib.get_close_matches(str(word).lower(), valid, n=2, cutoff=0.6)
    return f" did you mean {' or '.join(near)}?" if near else ""


def one_of(key: str, v, choices, *, suggest: bool = False) -> str:
    """``v`` when it is one of ``choices``; else a ValueError naming ``key`` and the valid values (with
    ``suggest``, the nearest of them first: ``did you mean periodic?``)."""
    if v not in choices:
        hint = nearest(str(v), map(str, choices)) if suggest else ""
        raise ValueError(f"unknown {key} {v!r};{hint} valid: {', '.join(map(str, choices))}")
    return v


def writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and prove a file can be written there."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ValueError(f"output directory {path} cannot be written ({exc.strerror or exc}); "
                         "choose another with hydra.run.dir=... or fix its permissions") from None
    return path
