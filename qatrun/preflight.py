"""Everything ``qatrun`` checks before it starts work: the overrides, every sweep point, the run
directory, a resume. Each problem becomes a ``UserError`` whose message names the key and what is
valid (``qatrun: error: ...``, exit code 2); nothing is created on the way.

* ``compose(overrides)`` composes like Hydra does, translating Hydra's and OmegaConf's exceptions
  (wrong type, unknown key, unknown option) into one line each. ``+key=`` additions are refused.
* ``check(cfg)`` runs the argument checks of a run without loading data or training.
* ``points(overrides)`` expands a sweep (``a=1,2 b=x,y``) into its points, as Hydra's basic sweeper does.
* ``resume(overrides)`` continues a run from its saved resolved config (README, "Reliability").
"""

from __future__ import annotations

import itertools
import json
import os
import re
import tempfile
from importlib import resources
from pathlib import Path

from omegaconf import OmegaConf, open_dict

from qatrun import checkpoint as ckpt
from qatrun import checks, estimators, optim
from qatrun.config import flatten, is_operational
from qatrun.data import DATASETS
from qatrun.models import MODELS
from qatrun.pair import resolve_twin
from qatrun.train import group, select_device

GROUPS = ("dataset", "model", "optimizer", "estimator", "experiment")
TYPES = {"Float": "a number", "Integer": "an integer", "Boolean": "true or false", "Bool": "true or false",
         "String": "a string"}


class UserError(ValueError):
    """A mistake in the command; the message is the whole explanation."""


def parse(overrides: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as exc:
        raise UserError(f"cannot parse the overrides: {' '.join(str(exc).split())}") from None
    for o in parsed:
        if o.is_add() or o.is_force_add():
            key = o.key_or_group
            raise UserError(f"{o.input_line}: adding keys with '+' is not allowed; {valid_keys(key)}")
        if o.is_delete():
            raise UserError(f"{o.input_line}: deleting keys with '~' is not allowed; set the key to a value instead")
    return parsed


def options(grp: str) -> list[str]:
    """The YAML options of a config group (``configs/<grp>/*.yaml``)."""
    root = resources.files("qatrun.configs").joinpath(grp)
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml")) if root.is_dir() else []


def valid_keys(key: str, choices: list[str] | None = None) -> str:
    """'valid keys in <parent>: ...' for a dotted key, from the defaults with the given group choices."""
    parent = key.rpartition(".")[0]
    try:
        cfg = _compose(choices or [])
        node = OmegaConf.select(cfg, parent) if parent else cfg
        names = sorted(node.keys()) if node is not None and OmegaConf.is_dict(node) else []
    except Exception:  # the listing is a courtesy; the error itself has been found already
        names = []
    where = parent or "the top level"
    return f"valid keys in {where}: {', '.join(names)}" if names else "see qatrun --help for the valid keys"


def _compose(overrides: list[str], hydra_cfg: bool = False):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module("qatrun.configs", version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=hydra_cfg)


def compose(overrides: list[str], hydra_cfg: bool = False):
    """The composed config (with the ``hydra`` node when ``hydra_cfg``), or a ``UserError``."""
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

    parsed = parse(overrides)
    choices = [o.input_line for o in parsed if o.key_or_group in GROUPS and not o.is_sweep_override()]
    try:
        return _compose(overrides, hydra_cfg)
    except MissingConfigException as exc:
        grp = next((o for o in parsed if o.key_or_group in GROUPS and f"'{o.key_or_group}/" in str(exc)), None)
        if grp is not None:
            raise UserError(f"{grp.input_line}: no such option; valid {grp.key_or_group} options: "
                            f"{', '.join(options(grp.key_or_group))}") from None
        raise UserError(" ".join(str(exc).split("Config search path")[0].split())) from None
    except (HydraException, OmegaConfBaseException) as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, OmegaConfBaseException) else exc
        key = getattr(cause, "full_key", None)
        given = next((o.input_line for o in parsed if o.key_or_group == key), key)
        if key and isinstance(cause, ValidationError):
            m = re.search(r"converted to (\w+)|not a valid (\w+)", str(cause))
            name = (m.group(1) or m.group(2)).capitalize() if m else ""
            want = TYPES.get(name, f"of type {name}" if name else "of another type")
            raise UserError(f"{given}: {key} must be {want}") from None
        if key and isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
            raise UserError(f"{given}: unknown key {key}; {valid_keys(key, choices)}") from None
        raise UserError(" ".join(str(exc).split())) from None


def check(cfg) -> None:
    """The checks a run makes before its first step, without data or models (ValueError on a problem)."""
    select_device(cfg.device)
    checks.one_of("precision", cfg.precision, ("fp32", "bf16"))
    DATASETS.get(cfg.dataset.name)
    MODELS.get(cfg.model.name)
    checks.positive_int("dataset.batch_size", cfg.dataset.batch_size)
    est_name, est_options = group(cfg.estimator)
    est = estimators.create(est_name, **est_options)
    opt_name = cfg.optimizer.name
    optim.OPTIMIZERS.get(opt_name)
    checks.positive("optimizer.lr", cfg.optimizer.lr)
    resolve_twin(cfg.pair.twin, est, optim.warps(opt_name), cfg.pair.twin_lr_scale)
    tr = cfg.trainer
    if tr.max_steps is not None:
        checks.positive("trainer.max_steps", tr.max_steps)
    else:
        checks.positive("trainer.epochs", tr.epochs)
    for key in ("log_every", "eval_every", "checkpoint_every"):
        checks.positive(f"trainer.{key}", tr[key])


def points(overrides: list[str]) -> list[list[str]]:
    """The sweep's points as override lists (the cartesian product of every ``a=1,2`` override)."""
    axes = []
    for o in parse(overrides):
        if o.is_sweep_override():
            key = o.get_key_element()
            axes.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            axes.append([o.input_line])
    return [list(p) for p in itertools.product(*axes)]


def creatable(path, key: str) -> None:
    """Refuse a directory that cannot be created or written, without creating it."""
    p = Path(path).absolute()
    anc = p
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise UserError(f"{key}={path} cannot be created: {anc} is a file, not a directory; choose another {key}")
    try:
        probe = tempfile.mkdtemp(dir=p if p.exists() else anc, prefix=".qatrun-probe-")
        os.rmdir(probe)
    except OSError as exc:
        raise UserError(f"{key}={path} cannot be created or written ({exc.strerror or exc}); "
                        f"choose another {key} or fix its permissions") from None


def check_command(overrides: list[str], multirun: bool) -> tuple[int, list[str]]:
    """Compose and check the run, or every point of a sweep. Returns the number of points and the keys
    job directory names leave out: the YAML's ``exclude_keys`` plus every key that does not vary."""
    pts = points(overrides) if multirun else [list(overrides)]
    parsed = parse(overrides)
    if multirun and any(o.key_or_group == "resume" for o in parsed):
        raise UserError("resume continues one run (qatrun resume=DIR); to resume a sweep, run the same sweep "
                        "again with its hydra.sweep.dir: each job continues from its checkpoint")
    constant = [o.key_or_group for o in parsed if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")]
    varying = {o.key_or_group for o in parsed if o.is_sweep_override()}
    bad, exclude = [], []
    for i, pt in enumerate(pts):
        try:
            cfg = compose(pt, hydra_cfg=True)
            if i == 0:
                key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
                creatable(OmegaConf.select(cfg, key), key)
                exclude = list(cfg.hydra.job.config.override_dirname.exclude_keys) + constant
            with open_dict(cfg):
                del cfg["hydra"]
            check(cfg)
        except UserError as exc:
            if not multirun or i == 0 and "hydra." in str(exc).split(":")[0]:
                raise
            bad.append((pt, str(exc)))
        except ValueError as exc:
            if not multirun:
                raise UserError(str(exc)) from None
            bad.append((pt, str(exc)))
    if bad:
        name = lambda pt: " ".join(o for o in pt if o.split("=")[0] in varying)  # noqa: E731
        lines = "\n".join(f"  [{name(p)}] {msg}" for p, msg in bad)
        raise UserError(f"{len(bad)} of {len(pts)} sweep points are invalid; nothing was launched:\n{lines}")
    return len(pts), exclude


def resume(overrides: list[str]):
    """``(run_dir, cfg)`` to continue the run named by ``resume=DIR`` with its saved resolved config.

    Other overrides must agree with the saved values or be operational (``qatrun.config.OPERATIONAL``);
    ``hydra.*`` keys are ignored (the run continues in DIR)."""
    parsed = parse(overrides)
    where = next(o.value() for o in parsed if o.key_or_group == "resume")
    run_dir = Path(str(where))
    path = run_dir / ckpt.NAME
    if not path.is_file():
        raise UserError(f"resume={where}: no qatrun checkpoint there ({path} does not exist); resume takes the "
                        "directory of an earlier run, the one holding checkpoint.pt")
    saved = ckpt.load(path)["config"]
    flat, cfg, differ = flatten(saved), OmegaConf.create(saved), []
    for o in parsed:
        key = o.key_or_group
        if key == "resume" or key == "hydra" or key.startswith(("hydra.", "hydra/")):
            continue
        if o.is_sweep_override():
            raise UserError(f"{o.input_line}: a resume continues one run; sweep with qatrun -m instead")
        value = o.value()
        if key in GROUPS:
            was = saved.get("experiment_name") if key == "experiment" else saved.get(key, {}).get("name")
            if value != was:
                differ.append(f"{key} (saved {was}, given {value})")
            continue
        if key not in flat:
            raise UserError(f"{o.input_line}: unknown key {key}; {valid_keys(key)}")
        if is_operational(key):
            OmegaConf.update(cfg, key, value, merge=True)
        elif (json.dumps(value) if isinstance(value, (list, tuple)) else value) != flat.get(key):
            differ.append(f"{key} (saved {flat.get(key)}, given {value})")
    if differ:
        raise UserError(f"cannot resume {run_dir}: the config differs from the saved one in {', '.join(differ)} "
                        "(these change the math); drop them to continue the run as saved, or start a new run")
    cfg.resume = str(run_dir)
    return run_dir, cfg
