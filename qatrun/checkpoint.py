"""Checkpoints that lose nothing: atomic writes, safe loads, refusing a resume that changes the math.

``save(run_dir, step, config, state)`` writes ``state`` (a dict of state dicts: the pair's, the
logged curves) with the step (the data order is a function of the step), the resolved config and
the RNG states to a temporary file, fsyncs it and renames it over the old one, so a crash
mid-write leaves the previous checkpoint intact. ``load`` reads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from qatrun.config import config_diff
from qatrun.files import write_atomic

FORMAT = "qatrun-checkpoint-v2"
NAME = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why and what to do."""


def save(run_dir, step: int, config: dict, state: dict) -> None:
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    blob = {"format": FORMAT, "step": step, "config": json.dumps(config, sort_keys=True), "state": state, "rng": rng}
    write_atomic(Path(run_dir) / NAME, lambda f: torch.save(blob, f))


def load(path) -> dict:
    """The checkpoint at ``path``: ``{"step", "config" (dict), "state", "rng"}``."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle rejected by weights_only, not a file torch wrote...
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated, corrupt or not a qatrun checkpoint: "
                              f"{type(exc).__name__}); delete it to start the run over") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a qatrun checkpoint (expected format {FORMAT})")
    blob["config"] = json.loads(blob["config"])
    return blob


def load_for_resume(run_dir, config: dict) -> dict | None:
    """The checkpoint in ``run_dir`` if there is one, refused when ``config`` changes the math."""
    path = Path(run_dir) / NAME
    if not path.exists():
        return None
    blob = load(path)
    diff = config_diff(blob["config"], config)
    if diff:
        raise CheckpointError(f"cannot resume {run_dir}: the config differs from the saved one in {', '.join(diff)} "
                              "(these change the math); use the saved config or a new run directory")
    return blob


def restore_rng(blob: dict) -> None:
    """The saved CPU RNG state, and the saved CUDA states of the devices this machine has: a resume on
    fewer GPUs (allowed: it does not change the math) restores GPUs 0 .. n-1 and drops the rest; GPUs
    beyond the saved ones keep their own state."""
    torch.set_rng_state(blob["rng"]["cpu"])
    if "cuda" in blob["rng"] and torch.cuda.is_available():
        for i, state in enumerate(blob["rng"]["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, i)
