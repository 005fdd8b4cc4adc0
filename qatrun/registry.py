"""One registry style for every family (estimators, models, datasets, optimizers).

    MODELS = Registry("model")

    @MODELS.register("small_cnn")
    def small_cnn(num_classes: int = 10, ...): ...

    MODELS.build("small_cnn", num_classes=10, **cfg.model.kwargs)

An unknown name fails loudly with the valid names; ``build`` passes keyword options by name (a
config group maps onto the constructor's parameters) and turns an unknown or missing option into
a ``ValueError`` that lists what the builder accepts.
"""

from __future__ import annotations

import inspect
import typing
from typing import Callable, Generic, TypeVar

T = TypeVar("T", bound=Callable)


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
        return sorted(self._items)

    def __iter__(self):
        return iter(self.names())

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def get(self, name: str) -> T:
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
