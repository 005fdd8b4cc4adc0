"""A run's identity, made one way for training, sweeps and preflight: the resolved config (without
``resume``: where a run continues is not part of what it computes), the provenance of the code it ran
(the qatrun version and the source digest of the user's code: a custom shape, model or dataset) and the
fingerprint of both (``qatrun.config.fingerprint``). A resume after the user's code changed is refused."""

from __future__ import annotations

from typing import NamedTuple

from omegaconf import OmegaConf

from qatrun import __version__, userimport
from qatrun.config import fingerprint

USER_CODE = ("estimator.shape", "twin_estimator.shape", "model.target", "dataset.target")


class RunIdentity(NamedTuple):
    config: dict
    provenance: dict
    fingerprint: str


def resolved(cfg) -> dict:
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("resume", None)
    return config


def provenance(config: dict) -> dict:
    out = {"qatrun": __version__}
    for key in USER_CODE:
        grp, _, leaf = key.partition(".")
        value = (config.get(grp) or {}).get(leaf)
        if isinstance(value, str) and value and not value.startswith(userimport.PREFIX):
            try:
                out[key] = userimport.source_digest(value)
            except Exception:  # the value was resolved already: a digest is a courtesy, never a failure
                out[key] = None
    return out


def of(cfg) -> RunIdentity:
    config = resolved(cfg)
    prov = provenance(config)
    return RunIdentity(config, prov, fingerprint(config, prov))
