"""Hydra's composition of qatrun's configs (``qatrun.configs``, ``config.yaml``), written once: preflight
(which turns Hydra's exceptions into one-line errors around it), the benchmark and the tests compose with it,
so they all read the config a run would get."""

from __future__ import annotations


def compose_config(overrides=(), hydra_cfg: bool = False):
    """The composed config for these overrides (with the ``hydra`` node when ``hydra_cfg``); Hydra's and
    OmegaConf's own exceptions propagate (``qatrun.preflight.compose`` words them)."""
    from hydra import compose, initialize_config_module  # Hydra's compose API: only where a config is composed

    with initialize_config_module("qatrun.configs", version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra_cfg)
