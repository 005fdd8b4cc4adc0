"""One registry style for every family (estimators, models, datasets, optimizers).

    MODELS = Registry("model")

    @MODELS.register("small_cnn")
    def small_cnn(num_classes: int = 10, ...): ...

    MODELS.build("small_cnn", num_classes=10, **cfg.model.kwargs)

An unknown name fails loudly with the valid names; ``build`` passes keyword options by name (a
config group maps onto the constructor's parameters) and turns an unknown or missing option into
a ``ValueError`` that lists what the builder accepts.

Members register where they are defined, and a family's package finds its modules by name
(``discover``, as big_vision finds its evaluators): a new member is one new file, with no import line
elsewhere. Members outside qatrun come from the packages or modules named in ``QATRUN_PLUGINS``
(comma-separated), imported the same way the first time any registry is asked for its members.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import typing
from typing import Callable, Generic, TypeVar

T = TypeVar("T", bound=Callable)

PLUGINS_ENV = "QATRUN_PLUGINS"
_plugins_loaded = False


def discover(package: str) -> list[str]:
    """Import every module of ``package`` by name (``_private`` ones aside), so that each registers its own
    members; a plain module is imported itself. Returns the modules imported."""
    from qatrun.userimport import import_module  # the user's current directory too, as for a custom model

    pkg = import_module(package)
    if not hasattr(pkg, "__path__"):
        return [package]
    found = [f"{package}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")]
    for name in found:
        importlib.import_module(name)
    return found


def load_plugins() -> list[str]:
    """Import the packages named in ``QATRUN_PLUGINS`` (once per process): a researcher's models, datasets,
    estimators or optimizers, each registered in its own module, join their families without editing qatrun."""
    global _plugins_loaded
    if _plugins_loaded:
        return []
    _plugins_loaded = True  # first: a plug-in importing a registry must not import the plug-ins again
    found = []
    for name in filter(None, (n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            found += discover(name)
        except ImportError as exc:
            raise ValueError(f"{PLUGINS_ENV}={os.environ[PLUGINS_ENV]}: cannot import {name!r} ({exc}); name "
                             "importable packages or modules, separated by commas") from None
    return found


class Registry(Generic[T]):
    """``supplied``: the builder parameters the runner fills in (not config keys); ``options(name)``
    lists the others, which are the keys of the option's YAML file (``qatrun.schema`` types them)."""

    def __init__(self, family: str, supplied: tuple[str, ...] = ()):
        self.family, self.supplied = family, tuple(supplied)
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict] = {}

    def register(self, name: str, **meta) -> Callable[[T], T]:
        """Decorator: register a class or function under ``name`` (``meta``: facts about it)."""
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.family} {name!r} is registered twice")
            self._items[name], self._meta[name] = obj, meta
            return obj
        return deco

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._items)

    def __iter__(self):
        return iter(self.names())

    def __contains__(self, name: str) -> bool:
        load_plugins()
        return name in self._items

    def get(self, name: str) -> T:
        load_plugins()
        if name not in self._items:
            raise ValueError(f"unknown {self.family} {name!r}; valid {self.family}s: {', '.join(self.names())}")
        return self._items[name]

    def meta(self, name: str) -> dict:
        self.get(name)
        return self._meta[name]

    def options(self, name: str) -> dict[str, tuple[object, object]]:
        """The builder's own options in signature order: ``{key: (type hint, default or MISSING)}``."""
        fn = self.get(name)
        target = fn
        if inspect.isclass(fn):
            target = fn.__init__ if fn.__init__ is not object.__init__ else fn.__new__
        try:
            hints = typing.get_type_hints(target)
        except Exception:  # an unresolvable annotation: the key stays untyped
            hints = {}
        out = {}
        for p in list(inspect.signature(fn).parameters.values()):
            if p.name in self.supplied or p.name in ("self", "cls") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            out[p.name] = (hints.get(p.name, typing.Any), p.default)
        return out

    def build(self, name: str, *args, **kwargs):
        """Call the builder registered as ``name``; bad keyword options name what it accepts."""
        fn = self.get(name)
        try:
            inspect.signature(fn).bind(*args, **kwargs)
        except TypeError as exc:
            accepted = [p for p in inspect.signature(fn).parameters if p not in ("self", "args", "kwargs")]
            raise ValueError(f"{self.family} {name!r}: {exc}; it takes {', '.join(accepted)}") from None
        return fn(*args, **kwargs)
