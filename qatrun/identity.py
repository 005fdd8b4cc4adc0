"""A run's identity, made one way for training, sweeps and preflight: the resolved config (without
``resume``: where a run continues is not part of what it computes), the provenance of the code it ran
(the qatrun version and the source digest of the user's code: a custom shape, model or dataset) and the
fingerprint of both (``qatrun.config.fingerprint``). A resume after the user's code changed is refused.

On CPU the bits also depend on the number of threads torch computes with (its reductions split the work by
thread), so a CPU run's provenance records ``cpu_threads``: two runs that differ in it are two fingerprints,
and a resume with another count is refused. A run saved without it (older runs, GPU runs) keeps its
fingerprint, and a finished point without it still counts as finished (``matches``)."""

from __future__ import annotations

from typing import NamedTuple

import torch
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


THREADS = "cpu_threads"  # the provenance key: torch's intra-op threads of a run on CPU


def on_cpu(config: dict) -> bool:
    device = config.get("device")
    return device == "cpu" or (device == "auto" and not torch.cuda.is_available())


def of(cfg) -> RunIdentity:
    config = resolved(cfg)
    prov = provenance(config)
    if on_cpu(config):
        prov[THREADS] = torch.get_num_threads()
    return RunIdentity(config, prov, fingerprint(config, prov))


def matches(saved_fingerprint, saved_provenance, run: RunIdentity) -> bool:
    """Whether a saved run (a summary's fingerprint and provenance) computed what ``run`` computes: the same
    fingerprint, or, saved before the thread count was recorded, the same fingerprint without it."""
    if saved_fingerprint == run.fingerprint:
        return True
    if isinstance(saved_provenance, dict) and THREADS not in saved_provenance and THREADS in run.provenance:
        legacy = {k: v for k, v in run.provenance.items() if k != THREADS}
        return saved_fingerprint == fingerprint(run.config, legacy)
    return False
