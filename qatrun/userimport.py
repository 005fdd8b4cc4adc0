"""Import a user's object by path: ``pkg.module.name`` or ``pkg.module:name``.

Installed packages come first, then the current directory (the user's own project, as ``python -m``
would see it; appended to ``sys.path``, so it never shadows an installed module). Every failure is a
one-line ``ValueError`` naming the key, the path and the cause; an error in the module's own code (a
syntax error, an exception while importing it) names the file and line too. ``source_digest`` identifies
the source an imported function came from, so a run can tell when the user's code changed under it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import os
import re
import sys
import sysconfig
import traceback


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
    except ImportError as exc:  # the module is missing, or its own code imports something missing
        raise ValueError(f"{key}={path}: {where(exc)}cannot import module {mod_name!r} ({one_line(exc)})") from None
    except Exception as exc:  # the module's own code failed while importing
        raise ValueError(f"{key}={path}: {where(exc)}importing {mod_name!r} raised {type(exc).__name__}: "
                         f"{one_line(exc)}") from None
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise ValueError(f"{key}={path} does not name a callable: module {mod_name!r} has no function {attr!r}")
    return fn


def _user_frames(exc: BaseException) -> tuple[list, list]:
    """The frames ``exc`` passed through, outside frozen importlib, qatrun itself and the standard library:
    (those in the user's own files, those in installed packages)."""
    paths = lambda *names: {os.path.abspath(p) for p in map(sysconfig.get_path, names) if p}  # noqa: E731
    under = lambda path, roots: any(os.path.commonpath([path, r]) == r for r in roots)  # noqa: E731
    here = {os.path.dirname(os.path.abspath(__file__))}
    site, std = paths("purelib", "platlib"), paths("stdlib", "platstdlib")
    own, installed = [], []
    for f in traceback.extract_tb(exc.__traceback__):
        path = os.path.abspath(f.filename)
        if f.filename.startswith("<") or under(path, here):
            continue
        if under(path, site):  # before std: site-packages may lie inside the standard library's directory
            installed.append(f)
        elif not under(path, std):
            own.append(f)
    return own, installed


def where(exc: BaseException) -> str:
    """``file:line: `` where the user's module failed: the innermost frame of the user's own files that
    ``exc`` passed through (the failing line, or the line that called into a library), else the outermost
    frame of an installed package (the top of the module being imported); "" when there is neither."""
    own, installed = _user_frames(exc)
    f = own[-1] if own else installed[0] if installed else None
    return f"{f.filename}:{f.lineno}: " if f else ""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(exc).split())


def source_digest(obj) -> str | None:
    """sha256 (16 hex digits) of the source file of the module that defines ``obj`` (a function, or a path
    ``resolve`` accepts; ValueError when it does not resolve), or None when there is no such file (a builtin,
    an object made at run time). Only that file is covered: a helper the module imports from elsewhere is not."""
    if isinstance(obj, str):
        obj = resolve(obj, "source_digest")
    while isinstance(obj, functools.partial):
        obj = obj.func
    obj = inspect.unwrap(obj)  # decorated functions: the function that was decorated
    if not (inspect.isroutine(obj) or inspect.isclass(obj) or inspect.ismodule(obj)):
        obj = type(obj)  # a callable object: the class that defines its __call__
    try:
        filename = inspect.getsourcefile(obj)
    except TypeError:  # builtins and C functions
        return None
    try:
        with open(filename, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()[:16]
    except (OSError, TypeError):
        return None


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


def build_with(path: str, key: str, given: dict, options: dict | None = None):
    """Resolve the user's builder ``path`` (config key ``key``) and call it with whichever of ``given`` it accepts
    (all of them if it takes ``**kwargs``) plus ``options``; what it raises becomes one line naming the key."""
    import inspect

    fn = resolve(path, key)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in given.items() if takes_all or k in params} | dict(options or {})
    try:
        return fn(**kwargs)
    except Exception as exc:
        raise ValueError(f"{key}={path} raised {type(exc).__name__}: {exc}") from None
