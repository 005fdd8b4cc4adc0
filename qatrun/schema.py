"""Typed configuration: one dataclass schema per config group, registered in Hydra's ConfigStore.

The values stay in ``configs/`` (YAML only); every field here is ``MISSING`` and only fixes the type
and the set of keys. Each YAML option lists its schema first in its defaults list
(``/schema/<group>/<option>@_here_``), so a wrong type (``optimizer.lr=abc``) or an unknown key
(``optimizer.lrr=0.1``) is refused while Hydra composes, before any work. ``configs/__init__.py``
calls ``register()``, so every composition of ``qatrun.configs`` sees the schemas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING


# --- dataset -------------------------------------------------------------------------------------
@dataclass
class DatasetBase:
    name: str = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING


@dataclass
class Subsets:
    train_subset: Optional[int] = MISSING
    test_subset: Optional[int] = MISSING


@dataclass
class Mnist(DatasetBase, Subsets):
    download: bool = MISSING
    root: Optional[str] = MISSING
    mean: float = MISSING
    std: float = MISSING


@dataclass
class Imagenet(DatasetBase, Subsets):
    root: Optional[str] = MISSING
    workers: int = MISSING
    image_size: int = MISSING
    resize: int = MISSING


@dataclass
class Synthetic(DatasetBase):
    num_classes: int = MISSING
    image_size: int = MISSING
    channels: int = MISSING
    length: int = MISSING
    test_length: int = MISSING
    signal: float = MISSING


# --- model ---------------------------------------------------------------------------------------
@dataclass
class Model:
    name: str = MISSING
    he_init: bool = MISSING
    kwargs: Dict[str, Any] = field(default_factory=dict)  # builder options, checked by the model registry


# --- optimizer -----------------------------------------------------------------------------------
@dataclass
class OptimizerBase:
    name: str = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING


@dataclass
class Sgd(OptimizerBase):
    momentum: float = MISSING
    nesterov: bool = MISSING


@dataclass
class Adam(OptimizerBase):
    betas: List[float] = MISSING
    eps: float = MISSING


# --- estimator -----------------------------------------------------------------------------------
@dataclass
class EstimatorBase:
    name: str = MISSING
    bits: int = MISSING
    grid: str = MISSING


@dataclass
class Tanh(EstimatorBase):
    k: Optional[float] = MISSING


@dataclass
class Pwl(Tanh):
    alpha: Optional[float] = MISSING


@dataclass
class Custom(EstimatorBase):
    shape: str = MISSING


@dataclass
class Ewgs(EstimatorBase):
    delta: float = MISSING


@dataclass
class Qnet(EstimatorBase):
    beta: float = MISSING


@dataclass
class DsqAnneal(Tanh):
    k_end: float = MISSING
    schedule: str = MISSING


# --- the root ------------------------------------------------------------------------------------
@dataclass
class Pair:
    twin: str = MISSING
    twin_lr_scale: float = MISSING


@dataclass
class Trainer:
    epochs: int = MISSING
    max_steps: Optional[int] = MISSING
    warmup_frac: float = MISSING
    log_every: int = MISSING
    eval_every: int = MISSING
    checkpoint_every: int = MISSING
    changepoints: bool = MISSING
    progress: bool = MISSING
    scatter_sample: int = MISSING


@dataclass
class Config:
    dataset: Any = MISSING  # each group's node carries its own schema (above)
    model: Any = MISSING
    optimizer: Any = MISSING
    estimator: Any = MISSING
    twin_estimator: Any = None  # the twin's own estimator group (null: the STE)
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


SCHEMAS = {
    "dataset": {"mnist": Mnist, "imagenet": Imagenet, "synthetic": Synthetic},
    "model": {"small_cnn": Model, "resnet18": Model, "resnet50": Model},
    "optimizer": {"sgd": Sgd, "adam": Adam},
    "estimator": {"tanh": Tanh, "pwl": Pwl, "ste": EstimatorBase, "custom": Custom, "ewgs": Ewgs, "qnet": Qnet,
                  "approxsign": EstimatorBase, "dsq_anneal": DsqAnneal},
}


def register() -> None:
    """Store the schemas as ``schema/config`` and ``schema/<group>/<option>`` (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(group="schema", name="config", node=Config)
    for group, options in SCHEMAS.items():
        for name, node in options.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
