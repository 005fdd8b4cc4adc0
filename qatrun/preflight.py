"""Everything ``qatrun`` checks before it starts work: the overrides, every sweep point, the run
directory, a resume. Each problem becomes a ``UserError`` whose message names the key and what is
valid (``qatrun: error: ...``, exit code 2); nothing is created on the way.

* ``compose(overrides)`` composes like Hydra does, translating Hydra's and OmegaConf's exceptions
  (wrong type, unknown key, unknown option) into one line each. ``+key=`` additions are refused.
* ``check(cfg)`` runs the argument checks of a run without loading data or training.
* ``points(overrides)`` expands a sweep (``a=1,2 b=x,y``) into its points, as Hydra's basic sweeper does.
* ``resume(overrides)`` continues a run from its saved resolved config (docs/reliability.md).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import tempfile
from importlib import resources
from pathlib import Path

from omegaconf import OmegaConf, open_dict

from qatrun import checkpoint as ckpt
from qatrun import identity
from qatrun.checks import nearest
from qatrun.compose import compose_config
from qatrun.rundir import STATUS
from qatrun.config import OPERATIONAL, config_diff, flatten, with_added
from qatrun.schema import FAMILIES
from qatrun.spec import build as build_spec

GROUPS = (*FAMILIES, "experiment")  # the config groups a command chooses options of
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
        cfg = compose_config(choices or [])
        node = OmegaConf.select(cfg, parent) if parent else cfg
        names = sorted(node.keys()) if node is not None and OmegaConf.is_dict(node) else []
    except Exception:  # the listing is a courtesy; the error itself has been found already
        names = []
    where = parent or "the top level"
    return f"valid keys in {where}: {', '.join(names)}" if names else "see qatrun --help for the valid keys"


def near_key(key: str, choices: list[str]) -> str:
    """' did you mean optimizer.lr?' for a mistyped dotted key, from the keys beside it."""
    parent, _, leaf = key.rpartition(".")
    try:
        node = OmegaConf.select(compose_config(choices), parent) if parent else compose_config(choices)
        names = list(node.keys()) if OmegaConf.is_dict(node) else []
    except Exception:  # a courtesy: the error itself has been found already
        names = []
    hint = nearest(leaf, names)
    return hint.replace(" did you mean ", f" did you mean {parent}." if parent else " did you mean ", 1) if hint else ""


def compose(overrides: list[str], hydra_cfg: bool = False):
    """The composed config (with the ``hydra`` node when ``hydra_cfg``), or a ``UserError``."""
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

    parsed = parse(overrides)
    twin_chosen = any(o.get_key_element() == "estimator@twin_estimator" for o in parsed)
    for o in parsed:
        if o.key_or_group == "twin_estimator":
            raise UserError(f"{o.input_line}: the twin's estimator is a group option, chosen like the run's own: "
                            f"estimator@twin_estimator={o.value()} (then twin_estimator.KEY=VALUE for its keys)")
        if o.key_or_group.startswith("twin_estimator.") and not twin_chosen:
            raise UserError(f"{o.input_line}: the twin has no estimator of its own to set {o.key_or_group} on; choose "
                            f"one first: estimator@twin_estimator=NAME {o.input_line} (e.g. NAME=tanh)")
    choices = [o.input_line for o in parsed if o.key_or_group in GROUPS and not o.is_sweep_override()]
    try:
        return compose_config(overrides, hydra_cfg)
    except MissingConfigException as exc:
        grp = next((o for o in parsed if o.key_or_group in GROUPS and f"'{o.key_or_group}/" in str(exc)), None)
        if grp is not None:
            valid = options(grp.key_or_group)
            raise UserError(f"{grp.input_line}: no such option;{nearest(grp.value(), valid)} valid {grp.key_or_group} "
                            f"options: {', '.join(valid)}") from None
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
            raise UserError(f"{given}: unknown key {key};{near_key(key, choices)} {valid_keys(key, choices)}") from None
        raise UserError(" ".join(str(exc).split())) from None


def check(cfg) -> None:
    """The checks a run makes before its first step: the run's own ``qatrun.spec.build``, minus the training."""
    build_spec(cfg)


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
    too_long(p, key)
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


def too_long(p: Path, key: str) -> None:
    """Refuse a path with a part longer than a file name may be, or longer than a path may be, here."""
    try:
        name_max, path_max = os.pathconf("/", "PC_NAME_MAX"), os.pathconf("/", "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf: the usual limits
        name_max, path_max = 255, 4096
    for part in p.parts:
        if len(os.fsencode(part)) > name_max:
            raise UserError(f"{key} cannot be created: its part {part[:24]}... is {len(os.fsencode(part))} bytes long, "
                            f"more than the {name_max} a file name may have here; choose a shorter {key}")
    if len(os.fsencode(str(p))) >= path_max:
        raise UserError(f"{key} cannot be created: it is {len(os.fsencode(str(p)))} bytes long, more than the "
                        f"{path_max - 1} a path may have here; choose a shorter {key}")


SUBDIR = "${hydra.job.num}_${hydra.job.override_dirname}"  # configs/config.yaml: hydra.sweep.subdir


def job_dir(cfg, pt: list[str], i: int, exclude: list[str]) -> Path | None:
    """Where Hydra will put sweep point ``i``: ``hydra.sweep.dir/<num>_<override_dirname>`` (Hydra's rule: the
    point's overrides but the excluded keys, sorted, joined by commas); None when the subdir was changed."""
    if OmegaConf.to_container(cfg.hydra.sweep, resolve=False).get("subdir") != SUBDIR:
        return None
    lines = sorted(o.input_line for o in parse(pt) if o.key_or_group not in exclude
                   and not o.key_or_group.startswith("hydra"))
    return Path(cfg.hydra.sweep.dir) / f"{i}_{','.join(lines)}"


def refuse_changed(run_dir: Path, cfg) -> None:
    """A command into a run directory whose checkpoint says another config is refused here, before Hydra
    rewrites that run's ``.hydra/``: the finished run's saved config keeps describing its results."""
    if (run_dir / ckpt.NAME).is_file():
        diff = config_diff(ckpt.load(run_dir / ckpt.NAME)["config"], identity.resolved(cfg))  # the resume rule, the one there is
        if diff:
            raise UserError(f"{run_dir} already holds a run whose config differs in {', '.join(diff)}; nothing was "
                            f"changed there: choose another directory, or continue it as saved with qatrun "
                            f"resume={shlex.quote(str(run_dir))}")


def check_command(overrides: list[str], multirun: bool) -> tuple[int, list[str], Path]:
    """Compose and check the run, or every point of a sweep. Returns the number of points, the keys job
    directory names leave out (the operational keys, ``qatrun.config.OPERATIONAL``, plus every key that does
    not vary) and the directory the command takes (the run's, or the sweep's)."""
    pts = points(overrides) if multirun else [list(overrides)]
    parsed = parse(overrides)
    if multirun and any(o.key_or_group == "resume" for o in parsed):
        raise UserError("resume continues one run (qatrun resume=DIR); to resume a sweep, run the same sweep "
                        "again with its hydra.sweep.dir: each job continues from its checkpoint")
    constant = [o.key_or_group for o in parsed if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")]
    varying = {o.key_or_group for o in parsed if o.is_sweep_override()}
    bad, exclude, where = [], [], None
    for i, pt in enumerate(pts):
        try:
            cfg = compose(pt, hydra_cfg=True)
            if i == 0:
                key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
                where = Path(OmegaConf.select(cfg, key))
                creatable(where, key)
                exclude = [k for k in OPERATIONAL if k != "hydra"] + constant  # qatrun.config: the one list
            run_dir = job_dir(cfg, pt, i, exclude) if multirun else where
            with open_dict(cfg):
                del cfg["hydra"]
            check(cfg)
            if run_dir is not None:
                refuse_changed(run_dir, cfg)
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
    return len(pts), exclude, where


def resume(overrides: list[str]):
    """``(run_dir, cfg)`` to continue the run named by ``resume=DIR`` with its saved resolved config.

    Other overrides must agree with the saved values or be operational (``qatrun.config.OPERATIONAL``);
    ``hydra.*`` keys are ignored (the run continues in DIR)."""
    parsed = parse(overrides)
    where = next(o.value() for o in parsed if o.key_or_group == "resume")
    run_dir = Path(str(where))
    path = run_dir / ckpt.NAME
    if not path.is_file() and (run_dir / ".hydra").is_dir():
        status = run_dir / STATUS
        state = json.loads(status.read_text()).get("state", "running") if status.is_file() else "running"
        raise UserError(f"resume={where}: that run stopped before its first checkpoint (its last state: {state}, "
                        "killed or interrupted before step 1 was saved), so there is nothing to continue; start it "
                        "again with its command (its overrides are in .hydra/overrides.yaml)")
    if not path.is_file():
        raise UserError(f"resume={where}: no qatrun checkpoint there ({path} does not exist); resume takes the "
                        "directory of an earlier run, the one holding checkpoint.pt")
    saved = with_added(ckpt.load(path)["config"])  # a checkpoint from before a key existed: the value it ran with
    flat, cfg, groups = flatten(saved), OmegaConf.create(saved), []
    for o in parsed:
        key = o.key_or_group
        if key == "resume" or key == "hydra" or key.startswith(("hydra.", "hydra/")):
            continue
        if o.is_sweep_override():
            raise UserError(f"{o.input_line}: a resume continues one run; sweep with qatrun -m instead")
        value = o.value()
        if key in GROUPS:  # choosing another option changes the math unless it is the saved one
            was = saved.get("experiment_name") if key == "experiment" else saved.get(key, {}).get("name")
            if value != was:
                groups.append(f"{key} (saved {was}, given {value})")
            continue
        if key not in flat:
            raise UserError(f"{o.input_line}: unknown key {key}; {valid_keys(key)}")
        OmegaConf.update(cfg, key, value, merge=True)
    # one rule for what a resume may change, the checkpoint's own (qatrun.config.config_diff)
    changed = config_diff(saved, OmegaConf.to_container(cfg))
    differ = groups + [f"{k} (saved {flat.get(k)}, given {flatten(OmegaConf.to_container(cfg)).get(k)})" for k in changed]
    if differ:
        raise UserError(f"cannot resume {run_dir}: the config differs from the saved one in {', '.join(differ)} "
                        "(these change the math); drop them to continue the run as saved, or start a new run")
    cfg.resume = str(run_dir)
    return run_dir, cfg
