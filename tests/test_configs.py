"""Every config group option and every experiment preset composes and instantiates."""

from pathlib import Path

import pytest
import torch

import yaml
from omegaconf import OmegaConf

from qatrun import estimators, helptext, optim, schema
from qatrun.models import build_model
from qatrun.optim import build_optimizer
from qatrun.pair import resolve_twin
from qatrun.spec import build as build_spec
from qatrun.spec import build_estimators, group
from tests.conftest import make_cfg

CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # the top-level configs/, shipped as qatrun.configs


def options(group):
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


FAMILIES = ("dataset", "model", "optimizer", "estimator")


def help_lists() -> dict:
    """``qatrun --help``'s group lists, parsed from the rendered text."""
    text, out, cur = helptext.help_text("groups"), {}, None
    for line in text.splitlines():
        head = line.split()[0] if line.strip() else ""
        if line.startswith("  ") and not line.startswith("   ") and head:
            cur = head
            line = line[len("  ") + len(head):]
        if cur and not line.strip().startswith("("):
            out.setdefault(cur, []).extend(w.strip() for w in line.split(",") if w.strip())
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_registry_yaml_and_help_name_the_same_options(family):
    registry = schema.FAMILIES[family][0]
    assert len(registry.names()) >= 3
    assert registry.names() == options(family) == sorted(help_lists()[family])


def test_help_lists_every_preset():
    assert help_lists()["experiment"] == options("experiment")


@pytest.mark.parametrize("family,name", [(f, n) for f in FAMILIES for n in options(f)])
def test_yaml_gives_exactly_the_builders_keys(family, name):
    """Each YAML option sets every key its schema (shared fields + the builder's parameters) has, no other."""
    text = yaml.safe_load((CONFIGS / family / f"{name}.yaml").read_text())
    assert set(text) - {"defaults"} == set(schema.fields_of(family, name))
    node = make_cfg(f"{family}={name}", tiny=False)[family]
    assert set(node) == set(schema.fields_of(family, name))
    assert not [k for k in node if OmegaConf.is_missing(node, k)]


def test_a_new_optimizer_is_one_builder_and_one_yaml(tmp_path):
    """Register a builder, drop its YAML on the search path: it composes, typed, and builds."""
    @optim.OPTIMIZERS.register("test_sgd_plain", twin_rule="warp", why="test")
    def test_sgd_plain(groups, lr: float, dampening: float):
        return torch.optim.SGD(groups, lr=lr, dampening=dampening)

    try:
        schema.register()
        (tmp_path / "optimizer").mkdir()
        (tmp_path / "optimizer" / "test_sgd_plain.yaml").write_text(
            "defaults:\n  - /schema/optimizer/test_sgd_plain@_here_\n  - _self_\nname: test_sgd_plain\n"
            "lr: 0.05\ndampening: 0.1\n")
        search = f"hydra.searchpath=[file://{tmp_path}]"
        cfg = make_cfg("optimizer=test_sgd_plain", search)
        assert cfg.optimizer.dampening == 0.1
        with pytest.raises(Exception, match="dampening"):
            make_cfg("optimizer=test_sgd_plain", "optimizer.dampening=abc", search)
        spec = build_spec(cfg)
        assert (spec.optimizer, spec.lr, spec.optimizer_options) == ("test_sgd_plain", 0.05, {"dampening": 0.1})
        assert spec.twin.role == "warped"  # its twin rule drives pair.twin=auto
    finally:
        optim.OPTIMIZERS._items.pop("test_sgd_plain"), optim.OPTIMIZERS._meta.pop("test_sgd_plain")


@pytest.mark.parametrize("name", options("estimator"))
def test_estimator_options_instantiate(name):
    cfg = make_cfg(f"estimator={name}")
    est = estimators.create(*group(cfg.estimator)[:1], **group(cfg.estimator)[1])
    w = torch.linspace(-0.5, 0.5, 11)
    assert est.grad(w, 0.4, torch.ones_like(w)).shape == w.shape


@pytest.mark.parametrize("name", options("optimizer"))
def test_optimizer_options_instantiate(name):
    cfg = make_cfg(f"optimizer={name}")
    model = build_model("small_cnn", num_classes=10)
    opt_name, options = group(cfg.optimizer)
    opt = build_optimizer(opt_name, [{"params": list(model.parameters())}], options.pop("lr"), **options)
    assert opt.param_groups[0]["lr"] == cfg.optimizer.lr


@pytest.mark.parametrize("name", options("model"))
def test_model_options_build(name):
    cfg = make_cfg(f"model={name}")
    options = {k: v for k, v in group(cfg.model)[1].items() if k not in ("he_init", "quantize_linear", "target")}
    if name == "custom":
        options = {"target": "tests.usercode:tiny_net"}
    model = build_model(cfg.model.name, 10, (1, 28, 28), **options)
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("name", options("experiment"))
def test_experiment_presets_compose(name):
    cfg = make_cfg(f"experiment={name}")
    assert cfg.experiment_name == name
    est, twin_est = build_estimators(cfg)
    resolve_twin(cfg.pair.twin, est, optim.warps(cfg.optimizer.name), cfg.pair.twin_lr_scale, twin_est)  # valid


@pytest.mark.parametrize("name", options("estimator"))
def test_estimator_options_compose_as_the_twins(name):
    """Any estimator option is also a twin estimator option, with its own keys."""
    cfg = make_cfg(f"estimator@twin_estimator={name}", "twin_estimator.bits=1" if name == "approxsign" else "seed=0")
    est, twin_est = build_estimators(cfg)
    assert twin_est.name == name and est.name == "tanh"
    assert make_cfg().get("twin_estimator") is None  # the default twin is the STE


def test_preset_deltas():
    assert make_cfg("experiment=adam").optimizer.betas[1] == 0.95
    j = make_cfg("experiment=jitter")
    assert (j.pair.twin, j.pair.twin_lr_scale) == ("self", 1.01)
    base, down = make_cfg(tiny=False), make_cfg("experiment=scaledown", tiny=False)
    assert down.optimizer.lr == pytest.approx(0.1 * base.optimizer.lr)
    assert down.trainer.epochs == 3 * base.trainer.epochs
    assert make_cfg("experiment=bits4").estimator.bits == 4
    assert make_cfg("experiment=sgd_nowarp").pair.twin == "ste"
