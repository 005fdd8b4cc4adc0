"""Run-directory names and the OmegaConf resolvers the configs call.

``hydra.run.dir`` (``configs/config.yaml``) ends in ``${qatrun_run_name:}``: both estimators with the
settings that tell them apart, the twin mode and the optimizer, e.g. ``tanh_sgd``,
``custom-sharp_bump_vs-tanh-k2.5_sgd``, ``tanh_vs-self_sgd``. An estimator's settings come from the
estimator itself (its registered builder's keyword parameters, ``ESTIMATORS.options``): a setting is
named when it is given and differs from the builder's default, so a new estimator's options name its runs
with nothing added here. A sweep's job directories are named by Hydra from what varies instead, which
keeps every committed run's directory as it is. ``qatrun_help`` fills ``qatrun --help``'s lists
(``qatrun.helptext``).
"""

from __future__ import annotations

import inspect

from qatrun.estimators import ESTIMATORS, create
from qatrun.helptext import help_text

DEFAULT_BITS = inspect.signature(create).parameters["bits"].default  # named only when another width is chosen


def setting_word(key: str, value) -> str:
    """One estimator setting in a directory name: an import path by its last part (``sharp_bump``), other
    text as itself, a number after its key (``k2.5``), a switch by its key."""
    if isinstance(value, bool):
        return key if value else f"no_{key}"
    if isinstance(value, (int, float)):
        return f"{key}{value:g}"
    text = str(value)
    return text.replace(":", ".").rsplit(".", 1)[-1] if "." in text or ":" in text else text


def estimator_label(node) -> str:
    """``tanh-k2.5``, ``custom-sharp_bump``, ``tanh-4bit``: the estimator's name, each setting that differs
    from its builder's default (in the builder's order), and the bits when they are not the default."""
    name = str(node.get("name"))
    parts = [name]
    options = ESTIMATORS.options(name) if name in ESTIMATORS else {}
    for key, (_, default) in options.items():
        value = node.get(key)
        if value is not None and (default is inspect.Parameter.empty or value != default):
            parts.append(setting_word(key, value))
    if node.get("bits") not in (None, DEFAULT_BITS):
        parts.append(f"{node.get('bits')}bit")
    return "-".join(parts)


def run_name(*, _root_) -> str:
    """``tanh_sgd`` for the default pair; ``custom-sharp_bump_vs-tanh-k2.5_sgd`` for an A-B pair,
    ``tanh_vs-self_sgd`` for a jitter floor (``hydra.run.dir`` in ``configs/config.yaml``)."""
    name = estimator_label(_root_.estimator)
    twin, mode = _root_.get("twin_estimator"), _root_.pair.twin
    if twin is not None:
        name += f"_vs-{estimator_label(twin)}" + ("" if mode == "auto" else f"-{mode}")
    elif mode != "auto":
        name += f"_vs-{mode}"
    return f"{name}_{_root_.optimizer.name}"


def register_resolvers() -> None:
    """``qatrun_help`` and ``qatrun_run_name`` (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("qatrun_help"):
        OmegaConf.register_new_resolver("qatrun_help", help_text)
    if not OmegaConf.has_resolver("qatrun_run_name"):
        OmegaConf.register_new_resolver("qatrun_run_name", lambda *, _root_: run_name(_root_=_root_))
