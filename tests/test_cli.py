"""The command line at the keyboard (issue 12): resume, typed configuration, one-line errors, --help."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qatrun import preflight
from qatrun.train import train
from tests.conftest import make_cfg
from tests.test_reliability import user_error

QATRUN = [sys.executable, "-m", "qatrun"]


def run_in(cwd, *args, timeout=300):
    return subprocess.run([*QATRUN, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def refused(cwd, *args) -> str:
    """Exit code 2, one line 'qatrun: error: ...', and no directory created in ``cwd``."""
    before = sorted(p.name for p in cwd.iterdir())
    out = run_in(cwd, *args)
    line = user_error(out)
    assert out.returncode == 2, out.stderr
    assert sorted(p.name for p in cwd.iterdir()) == before, "a refused command created something"
    return line


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    d = tmp_path_factory.mktemp("finished") / "run"
    train(make_cfg("trainer.max_steps=10", "trainer.checkpoint_every=5"), d)
    return d


@pytest.mark.slow
def test_resume_a_typo_is_refused_and_creates_nothing(tmp_path):
    line = refused(tmp_path, "resume=outputs/typo")
    assert "resume=outputs/typo: no qatrun checkpoint there" in line and "checkpoint.pt" in line
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_resume_alone_continues_with_the_saved_config(finished, tmp_path):
    before = (finished / "summary.json").read_bytes()
    (finished / "summary.json").unlink()
    out = run_in(tmp_path, f"resume={finished}", "trainer.progress=false")  # operational: allowed
    assert out.returncode == 0, out.stderr[-2000:]
    # the saved 10-step, 2000-example config ran (the defaults would train 100 steps on 60,000 examples)
    assert (finished / "summary.json").read_bytes() == before
    assert json.loads(before)["config"]["dataset"]["train_subset"] == 2000
    assert list(tmp_path.iterdir()) == []  # no Hydra run directory for a resume


@pytest.mark.slow
def test_resume_with_agreeing_and_changed_overrides(finished, tmp_path):
    line = refused(tmp_path, f"resume={finished}", "dataset.train_subset=2000", "seed=3", "optimizer=adam")
    assert "config differs" in line and "seed (saved 0, given 3)" in line and "optimizer (saved sgd, given adam)" in line
    assert "train_subset" not in line  # agrees with the saved value


BAD = [
    (["optimizer.lr=abc"], "optimizer.lr=abc: optimizer.lr must be a number"),
    (["optimizer.momentum=abc"], "optimizer.momentum must be a number"),
    (["seed=abc"], "seed=abc: seed must be an integer"),
    (["trainer.changepoints=maybe"], "trainer.changepoints must be true or false"),
    (["optimizer.lrr=0.1"], "unknown key optimizer.lrr; did you mean optimizer.lr? valid keys in optimizer: lr, "
                            "momentum, name, nesterov"),
    (["+optimizer.lrr=0.1"], "adding keys with '+' is not allowed; valid keys in optimizer: lr, momentum"),
    (["optimizer=adam", "optimizer.momentum=0.9"], "valid keys in optimizer: betas, eps, lr, name, weight_decay"),
    (["estimator=tanh", "estimator.delta=0.1"], "unknown key estimator.delta; valid keys in estimator: bits, grid, k, name"),
    (["estimator=dsq"], "valid estimator options: approxsign, custom, dsq_anneal, ewgs, pwl, qnet, ste, tanh"),
    (["estimator.bits=9"], "bits must be an integer from 1 to 8"),
    (["hydra.run.dir=/proc/x"], "hydra.run.dir=/proc/x cannot be created"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args,message", BAD)
def test_user_errors_exit_2_in_one_line_before_any_work(tmp_path, args, message):
    assert message in refused(tmp_path, *args)


def test_typed_schema_refuses_in_compose():
    with pytest.raises(preflight.UserError, match=r"^dataset.batch_size=big: dataset.batch_size must be an integer$"):
        preflight.compose(["dataset.batch_size=big"])
    cfg = preflight.compose(["experiment=imagenet"])  # every preset fits the schema
    assert cfg.optimizer.lr == 0.1 and isinstance(cfg.trainer.epochs, int)


@pytest.mark.parametrize("group", ["dataset", "model", "optimizer", "estimator", "experiment"])
def test_every_option_composes_under_the_schema(group):
    """Every option composes, and where a group has a schema its keys are exactly the YAML's."""
    import yaml

    from qatrun.configs import __file__ as configs_init

    for option in preflight.options(group):
        cfg = preflight.compose([f"{group}={option}"])
        if group != "experiment":
            text = yaml.safe_load((Path(configs_init).parent / group / f"{option}.yaml").read_text())
            assert set(cfg[group]) == set(text) - {"defaults"}, option


def test_help_describes_the_tool(tmp_path):
    out = run_in(tmp_path, "--help")
    assert out.returncode == 0 and "powered by Hydra" not in out.stdout
    text = out.stdout
    assert "paired quantization-aware training" in text and "== Examples ==" in text
    for group in ("dataset", "model", "optimizer", "estimator", "experiment"):
        line = next(l for l in text.splitlines() if l.strip().startswith(group + " "))
        rest = text[text.index(line):text.index("== Keys")]
        assert all(o in rest for o in preflight.options(group)), group  # every option listed
    for mode in ("auto", "full", "ste", "nowarp", "warp_init", "warp_lr", "self", "none"):
        assert re.search(rf"^ +{mode} +\S", text, re.M), mode
    assert text.count("qatrun ") >= 3 and "estimator.k " in text
