"""Every config group option and every experiment preset composes and instantiates."""

from pathlib import Path

import pytest
import torch

from qatrun import estimators, optim
from qatrun.models import build_model
from qatrun.optim import build_optimizer
from qatrun.pair import resolve_twin
from qatrun.train import build_estimators, group
from tests.conftest import make_cfg

CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # the top-level configs/, shipped as qatrun.configs


def options(group):
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def test_groups_present():
    assert options("estimator") == ["approxsign", "custom", "dsq_anneal", "ewgs", "pwl", "qnet", "ste", "tanh"]
    assert options("optimizer") == ["adam", "sgd"]
    assert {"mnist", "imagenet", "synthetic"} <= set(options("dataset"))
    assert {"small_cnn", "resnet18", "resnet50"} <= set(options("model"))


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
    model = build_model(cfg.model.name, num_classes=10, **cfg.model.kwargs)
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
