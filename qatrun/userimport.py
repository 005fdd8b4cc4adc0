"""Import a user's object by path: ``pkg.module.name`` or ``pkg.module:name``.

Installed packages come first, then the current directory (the user's own project, as ``python -m``
would see it; appended to ``sys.path``, so it never shadows an installed module). Every failure is a
``ValueError`` naming the key, the path and the cause.
"""

from __future__ import annotations

import importlib
import os
import re
import sys


def import_module(mod_name: str):
    try:
        return importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        top, cwd = mod_name.partition(".")[0], os.getcwd()
        if exc.name != top or cwd in sys.path or not any(os.path.exists(os.path.join(cwd, top + s)) for s in ("", ".py")):
            raise
        sys.path.append(cwd)
        return importlib.import_module(mod_name)


def resolve(path: str, key: str):
    """The callable named by ``path`` (``pkg.module:fn`` or ``pkg.module.fn``) for config key ``key``."""
    if isinstance(path, str) and path.startswith(PREFIX):
        if path not in LIVE:
            raise ValueError(f"{key}={path} was a Python object handed to qatrun.run in another process; "
                             "pass it to qatrun.run again (or name it by an import path, pkg.module:fn)")
        return LIVE[path]
    if not isinstance(path, str) or not ("." in path or ":" in path):
        raise ValueError(f"{key} must name a function as 'pkg.module:fn' (or 'pkg.module.fn'), got {path!r}")
    mod_name, _, attr = path.rpartition(":") if ":" in path else path.rpartition(".")
    try:
        mod = import_module(mod_name)
    except SyntaxError as exc:
        raise ValueError(f"{key}={path}: {exc.filename}:{exc.lineno}: syntax error: {exc.msg}") from None
    except ImportError as exc:
        raise ValueError(f"{key}={path}: cannot import module {mod_name!r} ({exc})") from None
    except Exception as exc:  # the module's own code failed while importing
        raise ValueError(f"{key}={path}: importing {mod_name!r} raised {type(exc).__name__}: {exc}") from None
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise ValueError(f"{key}={path}: module {mod_name!r} has no function {attr!r}")
    return fn


# Objects handed to ``qatrun.run`` (a model factory, a dataset) that no import path names: the config
# records ``live:<kind>:<name>`` and ``resolve`` returns the object from here, in this process only.
LIVE: dict[str, object] = {}
PREFIX = "live:"


def live(obj, kind: str) -> str:
    """A config value standing for ``obj`` in this process (an importable function gets its import path)."""
    mod, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    if callable(obj) and mod and mod != "__main__" and "<" not in qual:
        try:
            if resolve(f"{mod}:{qual}", kind) is obj:
                return f"{mod}:{qual}"
        except ValueError:
            pass
    name = re.sub(r"[^A-Za-z0-9_.]", "_", qual or type(obj).__name__).strip("_.") or "object"
    key = f"{PREFIX}{kind}:{name}:{len(LIVE)}"
    LIVE[key] = obj if callable(obj) else (lambda **_: obj)
    return key
