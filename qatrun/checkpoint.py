"""Checkpoints that lose nothing: atomic writes, safe loads, refusing a resume that changes the math.

``save(run_dir, step, config, state)`` writes ``state`` (a dict of state dicts: the pair's, the
logged curves) with the step (the data order is a function of the step), the resolved config and
the RNG states to a temporary file, fsyncs it and renames it over the old one, so a crash
mid-write leaves the previous checkpoint intact. ``load`` checks the payload's sha256 (the file's first
line), then reads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import torch

from qatrun.config import config_diff
from qatrun.files import write_atomic

FORMAT = "qatrun-checkpoint-v2"
NAME = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why and what to do."""


MAGIC = b"QATRUN-CHECKPOINT sha256="  # the first line: the digest of the payload that follows it


def save(run_dir, step: int, config: dict, state: dict, provenance: dict | None = None) -> None:
    """Write the checkpoint atomically: one header line with the payload's sha256, then the payload
    (a ``torch.save`` zip); ``load`` refuses a payload whose digest does not match (a flipped byte)."""
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    blob = {"format": FORMAT, "step": step, "config": json.dumps(config, sort_keys=True), "state": state, "rng": rng,
            "provenance": json.dumps(provenance or {}, sort_keys=True)}
    buf = io.BytesIO()
    torch.save(blob, buf)
    payload = buf.getvalue()
    header = MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n"
    write_atomic(Path(run_dir) / NAME, lambda f: (f.write(header), f.write(payload)))


def load(path) -> dict:
    """The checkpoint at ``path``: ``{"step", "config" (dict), "state", "rng", "provenance" (dict)}``, its digest
    checked first (a checkpoint written before digests, a bare zip, loads without the check)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc.strerror or exc})") from None
    if raw.startswith(MAGIC):
        head, _, payload = raw.partition(b"\n")
        want, got = head[len(MAGIC):].decode(errors="replace"), hashlib.sha256(payload).hexdigest()
        if want != got:
            raise CheckpointError(f"checkpoint {path} is corrupt: its content does not match its sha256 (saved "
                                  f"{want[:12]}..., now {got[:12]}...); it was left untouched; delete it (or the run "
                                  "directory) to start the run over")
        raw = payload
    try:
        blob = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle rejected by weights_only, not a file torch wrote...
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated, corrupt or not a qatrun checkpoint: "
                              f"{type(exc).__name__}); delete it to start the run over") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a qatrun checkpoint (expected format {FORMAT})")
    blob["config"] = json.loads(blob["config"])
    blob["provenance"] = json.loads(blob.get("provenance") or "{}")
    return blob


def load_for_resume(run_dir, config: dict, provenance: dict | None = None) -> dict | None:
    """The checkpoint in ``run_dir`` if there is one, refused when ``config`` changes the math or the source of
    a user's code in ``provenance`` (a shape's digest) changed."""
    path = Path(run_dir) / NAME
    if not path.exists():
        return None
    blob = load(path)
    diff = config_diff(blob["config"], config)
    if diff:
        raise CheckpointError(f"cannot resume {run_dir}: the config differs from the saved one in {', '.join(diff)} "
                              "(these change the math); use the saved config or a new run directory")
    changed = sorted(k for k, v in (provenance or {}).items() if k in blob["provenance"] and blob["provenance"][k] != v)
    if changed:
        what = ", ".join(f"{k} (saved {blob['provenance'][k]}, now {provenance[k]})" for k in changed)
        raise CheckpointError(f"cannot resume {run_dir}: the source of {what} changed since the checkpoint, so the "
                              "rest of the run would compute something else; restore it, or start a new run")
    return blob


def restore_rng(blob: dict) -> None:
    """The saved CPU RNG state, and the saved CUDA states of the devices this machine has: a resume on
    fewer GPUs (allowed: it does not change the math) restores GPUs 0 .. n-1 and drops the rest; GPUs
    beyond the saved ones keep their own state."""
    torch.set_rng_state(blob["rng"]["cpu"])
    if "cuda" in blob["rng"] and torch.cuda.is_available():
        for i, state in enumerate(blob["rng"]["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, i)
