"""Checkpoints that lose nothing: atomic writes, safe loads, refusing a resume that changes the math.

``save(run_dir, step, config, state)`` writes ``state`` (a dict of state dicts: the pair's, the
logged curves) with the step (the data order is a function of the step), the resolved config and
the RNG states to a temporary file, fsyncs it and renames it over the old one, so a crash
mid-write leaves the previous checkpoint intact. ``load`` checks the payload's sha256 (the file's first
line), then reads with ``torch.load(weights_only=True)`` and checks the layout; ``restore`` puts it back.
A checkpoint without its sha256 line is refused: nothing tells its content from a damaged copy (a stripped
first line and flipped bits in a weight resumed silently with other figures).
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
    checked = raw.startswith(MAGIC)
    if checked:
        head, _, payload = raw.partition(b"\n")
        want, got = head[len(MAGIC):].decode(errors="replace"), hashlib.sha256(payload).hexdigest()
        if want != got:
            saved, now = differing_prefixes(want, got)
            raise CheckpointError(f"checkpoint {path} is corrupt: its content does not match its sha256 (saved "
                                  f"{saved}..., now {now}...); it was left untouched; delete it (or the run "
                                  "directory) to start the run over")
        raw = payload
    try:
        blob = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle rejected by weights_only, not a file torch wrote...
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated, corrupt or not a qatrun checkpoint: "
                              f"{type(exc).__name__}); delete it to start the run over") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a qatrun checkpoint (expected format {FORMAT})")
    if not checked:
        raise CheckpointError(f"checkpoint {path} has no sha256 line (its first line, {MAGIC.decode()}...), so nothing "
                              "can tell its content from a damaged copy; it was left untouched; delete it (or the run "
                              "directory) to start the run over")
    why = layout_problem(blob)
    if why:
        raise CheckpointError(f"checkpoint {path} has its sha256 but not the layout qatrun writes ({why}); it was left "
                              "untouched; delete it (or the run directory) to start the run over")
    blob["config"], blob["provenance"] = json.loads(blob["config"]), json.loads(blob.get("provenance") or "{}")
    blob["path"] = str(path)
    return blob


def differing_prefixes(want: str, got: str) -> tuple[str, str]:
    """The two digests cut where they first differ (12 characters at least), escaped: a saved digest that
    matches in its first 12 characters, or carries a stray ``\\r``, shows where it differs."""
    n = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
    n = max(12, n + 1)
    return tuple(s[:n].encode("unicode_escape").decode() for s in (want, got))


def _json_object(text) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (TypeError, ValueError):
        return False


def layout_problem(blob: dict) -> str | None:
    """What in a loaded checkpoint is not where ``save`` puts it, in words, or None."""
    if not isinstance(blob.get("step"), int) or isinstance(blob.get("step"), bool) or blob["step"] < 0:
        return f"step is {blob.get('step')!r}, not an integer >= 0"
    if not _json_object(blob.get("config")):
        return "config is not a JSON object"
    if blob.get("provenance") and not _json_object(blob["provenance"]):
        return "provenance is not a JSON object"
    state, rng = blob.get("state"), blob.get("rng")
    if not isinstance(state, dict) or not all(isinstance(state.get(k), dict) for k in ("pair", "history")):
        return "state is not a dict holding the dicts 'pair' and 'history'"
    if not isinstance(rng, dict) or not isinstance(rng.get("cpu"), torch.Tensor):
        return "rng holds no CPU generator state"
    return None


def restore(blob: dict, pair, recorder) -> int:
    """Put ``blob`` (from ``load_for_resume``) back into ``pair``, ``recorder`` and the RNGs; the step to
    continue from. A state that does not fit them (a checkpoint built by hand with its digest recomputed)
    is a CheckpointError, not a traceback; one of another model stays the pair's own ValueError."""
    try:
        pair.load_state_dict(blob["state"]["pair"])
        recorder.load_state_dict(blob["state"]["history"])
        restore_rng(blob)
    except (AttributeError, KeyError, IndexError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {blob.get('path')} has its sha256 but its state does not fit this run "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no message'}); "
                              "it was left untouched; delete it (or the run directory) to start the run over") from None
    return blob["step"]


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
    if "cpu_threads" in changed:  # qatrun.identity.THREADS: CPU bits depend on torch's thread count
        saved, now = blob["provenance"]["cpu_threads"], provenance["cpu_threads"]
        raise CheckpointError(f"cannot resume {run_dir}: it ran on CPU with {saved} thread(s), this process has {now}, "
                              "and CPU results depend on the thread count; resume with OMP_NUM_THREADS="
                              f"{saved}, or start a new run")
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
