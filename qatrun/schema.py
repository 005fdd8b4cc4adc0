"""Typed configuration, generated from the registries: one Hydra schema node per group option.

(``qatrun --help``'s lists are ``qatrun.helptext``; run-directory names and the resolvers ``qatrun.runname``.)

The values stay in ``configs/`` (YAML only). A group option's keys are the family's shared fields
(``SHARED``) plus its builder's own parameters (``Registry.options``: the signature, typed by its hints,
without what the runner supplies), every field ``MISSING``, so the YAML must give each one. Each YAML
option lists its schema first in its defaults list (``/schema/<group>/<option>@_here_``), so a wrong
type (``optimizer.lr=abc``) or an unknown key (``optimizer.lrr=0.1``) is refused while Hydra composes,
before any work. Adding an option is one registered builder plus one YAML file: nothing here changes.
``configs/__init__.py`` calls ``register()``, so every composition of ``qatrun.configs`` sees the schemas.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from omegaconf import MISSING

from qatrun.data import DATASETS
from qatrun.estimators import ESTIMATORS
from qatrun.models import MODELS
from qatrun.optim import OPTIMIZERS
from qatrun.quantizers import ACTIVATIONS, QUANTIZERS

# family -> (its registry, the fields every option has beside its builder's parameters)
FAMILIES = {
    "dataset": (DATASETS, {"name": str}),
    "model": (MODELS, {"name": str, "he_init": bool, "quantize_linear": bool}),
    "optimizer": (OPTIMIZERS, {"name": str}),
    "estimator": (ESTIMATORS, {"name": str, "bits": int, "grid": str}),
    "quantizer": (QUANTIZERS, {"name": str}),
    "activation": (ACTIVATIONS, {"name": str}),
}
PRIMITIVE = (int, float, bool, str)


def config_type(hint) -> object:
    """A type hint as OmegaConf can hold it: primitives, Optional, List/Dict of primitives; else Any."""
    if hint in PRIMITIVE or hint is Any:
        return hint
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and rest[0] in PRIMITIVE:
            return Optional[rest[0]] if len(rest) < len(args) else rest[0]
        return Any
    if origin in (list, tuple, List, Tuple) and args:
        inner = [a for a in args if a is not Ellipsis]
        return List[inner[0]] if len(set(inner)) == 1 and inner[0] in PRIMITIVE else List[Any]
    if origin in (dict, Dict):
        return Optional[Dict[str, Any]]
    return Any


def fields_of(family: str, name: str) -> dict[str, object]:
    """The keys of group option ``family/name`` with their config types, shared fields first."""
    registry, shared = FAMILIES[family]
    out = dict(shared)
    for key, (hint, _) in registry.options(name).items():
        out.setdefault(key, config_type(hint))
    return out


def node(family: str, name: str) -> type:
    cls = f"{family.capitalize()}_{name}"
    return dataclasses.make_dataclass(cls, [(k, t, field(default=MISSING)) for k, t in fields_of(family, name).items()])


# --- the root ------------------------------------------------------------------------------------
@dataclass
class Pair:
    twin: str = MISSING
    twin_lr_scale: float = MISSING
    mirror_extension: str = MISSING


@dataclass
class Trainer:
    epochs: int = MISSING
    max_steps: Optional[int] = MISSING
    warmup_frac: float = MISSING
    log_every: int = MISSING
    eval_every: int = MISSING
    checkpoint_every: int = MISSING
    checkpoint_minutes: float = MISSING
    changepoints: bool = MISSING
    metrics: Any = MISSING  # "all" or a list of metric names
    progress: bool = MISSING
    scatter_sample: int = MISSING


@dataclass
class Config:
    dataset: Any = MISSING  # each group's node carries its own schema (above)
    model: Any = MISSING
    optimizer: Any = MISSING
    estimator: Any = MISSING
    twin_estimator: Any = None  # the twin's own estimator group (null: the STE)
    quantizer: Any = MISSING  # how each quantized layer's range is set (configs/quantizer/)
    activation: Any = None  # the quantized inputs (configs/activation/; null: float inputs)
    experiment_name: str = MISSING
    seed: int = MISSING
    device: str = MISSING
    deterministic: bool = MISSING
    precision: str = MISSING
    channels_last: bool = MISSING
    compile: bool = MISSING
    resume: Optional[str] = MISSING
    pair: Pair = field(default_factory=Pair)
    trainer: Trainer = field(default_factory=Trainer)


def register() -> None:
    """Store the schemas as ``schema/config`` and ``schema/<group>/<option>`` (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(group="schema", name="config", node=Config)
    for family, (registry, _) in FAMILIES.items():
        for name in registry.names():
            cs.store(group=f"schema/{family}", name=name, node=node(family, name))
