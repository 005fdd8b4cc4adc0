"""Checkpoints that lose nothing: atomic writes, safe loads, refusing a resume that changes the math.

A checkpoint holds both models, optimizers and schedulers, the RNG states, the step (the data
order is a function of the step), the metric accumulators and the logged curves. It is written to
a temporary file, fsynced and renamed over the old one, so a crash mid-write leaves the previous
checkpoint intact; it is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import torch

FORMAT = "qatrun-checkpoint-v1"
NAME = "checkpoint.pt"
# Keys that may differ on resume: they change where or how a run reports, not its math.
RESUME_FREE = ("resume", "trainer.progress", "trainer.checkpoint_every", "dataset.root", "hydra")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why and what to do."""


def check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ValueError(f"output directory {run_dir} cannot be written ({exc.strerror or exc}); "
                         "choose another with hydra.run.dir=... or fix its permissions") from None


def check_positive(values: dict) -> None:
    for key, v in values.items():
        if v is None or isinstance(v, bool) or not (v > 0 and math.isfinite(v)):
            raise ValueError(f"{key} must be positive, got {v!r}")


def check_finite(first_bad: torch.Tensor, runs: list[str], run_dir: Path) -> None:
    """Stop on a NaN/Inf loss (one host sync, at logging/checkpoint time only)."""
    bad = first_bad.tolist()
    for run, step in zip(runs, bad):
        if step >= 0:
            from qatrun.train import TrainingError

            last = run_dir / NAME
            kept = f"the last good checkpoint is kept at {last}" if last.exists() else "no checkpoint was written yet"
            raise TrainingError(f"the {run} run's loss became NaN or Inf at step {step}; training stopped, {kept}. "
                                "Lower optimizer.lr or check the data.")


def write_atomic(path: Path, write) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, obj) -> None:
    write_atomic(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True).encode()))


def _rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save(run_dir, step, resolved, models, optims, scheds, comparer, tracker, history, weights0) -> None:
    state = {
        "format": FORMAT,
        "step": step,
        "config": json.dumps(resolved, sort_keys=True),
        "models": [m.state_dict() for m in models],
        "optims": [o.state_dict() for o in optims],
        "scheds": [s.state_dict() for s in scheds],
        "comparer": comparer.state_dict() if comparer is not None else None,
        "tracker": tracker.state_dict() if tracker is not None else None,
        "history": history,
        "weights0": weights0,
        "rng": _rng_state(),
    }
    write_atomic(Path(run_dir) / NAME, lambda f: torch.save(state, f))


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_diff(saved: dict, current: dict) -> list[str]:
    a, b = _flatten(saved), _flatten(current)
    free = lambda k: any(k == f or k.startswith(f + ".") for f in RESUME_FREE)
    return sorted(k for k in set(a) | set(b) if not free(k) and a.get(k, "<missing>") != b.get(k, "<missing>"))


def load(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle rejected by weights_only, not a file torch wrote...
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated, corrupt or not a qatrun checkpoint: "
                              f"{type(exc).__name__}); delete it to start the run over") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a qatrun checkpoint (expected format {FORMAT})")
    return state


def load_if_present(run_dir: Path, resolved: dict) -> dict | None:
    path = Path(run_dir) / NAME
    if not path.exists():
        return None
    state = load(path)
    diff = config_diff(json.loads(state["config"]), resolved)
    if diff:
        raise CheckpointError(f"cannot resume {run_dir}: the config differs from the saved one in {', '.join(diff)} "
                              "(these change the math); use the saved config or a new run directory")
    return state


def restore(state, models, optims, scheds, comparer, tracker, history) -> int:
    try:
        for m, s in zip(models, state["models"]):
            m.load_state_dict(s)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint holds weights of another model: {str(exc).splitlines()[0]}") from None
    for o, s in zip(optims, state["optims"]):
        o.load_state_dict(s)
    for sc, s in zip(scheds, state["scheds"]):
        sc.load_state_dict(s)
    if comparer is not None:
        comparer.load_state_dict(state["comparer"])
    if tracker is not None:
        tracker.load_state_dict(state["tracker"])
    history.clear()
    history.update(state["history"])
    torch.set_rng_state(state["rng"]["cpu"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return int(state["step"])
