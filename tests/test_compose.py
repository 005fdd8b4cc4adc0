"""Compose freely (issue 18): every dataset x model trains, every optimizer x estimator family builds
its pair and steps, and every combination that cannot work is refused by preflight in one line,
with nothing created."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from qatrun import checkpoint as ckpt
from qatrun import estimators, helptext, optim, schema
from qatrun.cli import main as cli_main
from qatrun.spec import build as build_spec
from qatrun.spec import build_estimators
from qatrun.train import pair_from_spec, train
from tests.conftest import make_cfg

TINY_TRAIN = ["trainer.max_steps=2", "trainer.log_every=1", "trainer.eval_every=2", "trainer.checkpoint_every=2",
              "trainer.progress=false", "trainer.scatter_sample=100", "device=cpu"]


def image_tree(root: Path, classes=("ant", "bee", "cat"), per_class=4, side=20) -> Path:
    """A tiny ImageFolder tree: root/{train,val}/<class>/*.png, each class its own colour."""
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(per_class):
                colour = tuple(int(v) for v in (80 * c, 40 * i, 255 - 80 * c))
                Image.new("RGB", (side, side), colour).save(d / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return image_tree(tmp_path_factory.mktemp("tree"))


DATASETS = {
    "mnist": (["dataset=mnist", "dataset.batch_size=16", "dataset.eval_batch_size=32", "dataset.train_subset=64",
               "dataset.test_subset=32"], (1, 28, 28)),
    "synthetic": (["dataset=synthetic", "dataset.num_classes=4", "dataset.image_size=16", "dataset.channels=3",
                   "dataset.batch_size=8", "dataset.eval_batch_size=8", "dataset.length=32",
                   "dataset.test_length=8"], (3, 16, 16)),
    "imagefolder": (["dataset=imagefolder", "dataset.batch_size=4", "dataset.eval_batch_size=6", "dataset.workers=0",
                     "dataset.image_size=16", "dataset.resize=18"], (3, 16, 16)),
}
MODELS = {
    "small_cnn": ["model=small_cnn", "model.width=4", "model.hidden=8"],
    "resnet18": ["model=resnet18"],
    "torchvision": ["model=torchvision", "model.arch=mobilenet_v3_small"],
    "custom": ["model=custom", "model.target=tests.usercode:tiny_net"],
}
EXPECTED_CONVS = {"resnet18": 20, "custom": 2}


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("data", DATASETS)
def test_every_dataset_trains_every_model(data, model, tree, tmp_path):
    overrides, shape = DATASETS[data]
    extra = [f"dataset.root={tree}"] if data == "imagefolder" else []
    cfg = make_cfg(*overrides, *extra, *MODELS[model], *TINY_TRAIN, tiny=False)
    s = train(cfg, tmp_path / "run")
    assert s["steps"] == 2 and s["est/loss"] > 0 and s["twin/loss"] > 0
    layers = s["quantized_layers"]
    assert layers and all("classifier" not in n and n not in ("fc", "fc2") for n in layers)
    if model in EXPECTED_CONVS:
        assert len(layers) == EXPECTED_CONVS[model]
    # the model was built for the data: its first convolution takes the data's channels
    blob = ckpt.load(tmp_path / "run" / "checkpoint.pt")
    first = next(v for k, v in blob["state"]["pair"]["models"][0].items() if k.endswith("weight") and v.dim() == 4)
    assert first.shape[1] == shape[0]
    assert s["pair/quantized_agreement"] <= 1.0 and s["twin_role"] == "warped"


def tiny_model_cfg(optimizer: str, estimator: str):
    bits = ["estimator.bits=1"] if estimator == "approxsign" else []
    return make_cfg(f"optimizer={optimizer}", f"estimator={estimator}", *bits, "model.width=4", "model.hidden=8",
                    "trainer.warmup_frac=0.0")


def refused_reason(optimizer: str, cfg) -> bool:
    """What the theory says: a warped twin (SGD-like) needs an estimator with an alpha and M."""
    est = build_estimators(cfg)[0]
    try:
        est.reference()
        has_map = True
    except estimators.NotInClassError:
        has_map = False
    return optim.twin_rule(optimizer) == "warp" and not has_map


@pytest.mark.parametrize("estimator", estimators.names())
@pytest.mark.parametrize("optimizer", optim.OPTIMIZERS.names())
def test_every_optimizer_and_estimator_builds_a_pair_that_steps(optimizer, estimator):
    cfg = tiny_model_cfg(optimizer, estimator)
    if refused_reason(optimizer, cfg):
        with pytest.raises(ValueError, match="pair.twin=ste"):
            build_spec(cfg)
        return
    spec = build_spec(cfg)
    rule = optim.twin_rule(optimizer)
    assert spec.twin.role == ("warped" if rule == "warp" else "plain_ste") and spec.twin.predicted
    pair = pair_from_spec(spec, torch.device("cpu"), steps=10)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    pair.step(0, x, y)
    for run, layers in enumerate(pair.layers):
        moved = [not torch.equal(w0, l.weight.detach()) for w0, (_, l) in zip(pair.weights0[run], layers)]
        assert all(moved), (pair.runs[run], moved)  # every quantized layer of both runs took the step


def refuse(tmp_path, monkeypatch, capsys, *argv, lines: int = 1) -> str:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        cli_main(list(argv))
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2, err
    assert err.startswith("qatrun: error: ") and len(err.splitlines()) == lines, err
    assert not any(tmp_path.iterdir()), list(tmp_path.iterdir())  # nothing created
    return err


@pytest.mark.parametrize("argv,words", [
    (["model=torchvision", "model.arch=convnext_tiny"], "cannot take this dataset's 1x28x28 inputs"),
    (["model=torchvision", "model.arch=resnet_18"], "did you mean resnet18"),
    (["model=custom", "model.target=tests.no_such_module:build"], "cannot import module"),
    (["model=custom", "model.target=tests.usercode:not_a_module"], "must return an nn.Module"),
    (["model=custom", "model.target=tests.usercode:no_classifier"], "no nn.Linear classifier"),
    (["model=custom"], "needs model.target"),
    (["dataset=imagefolder"], "dataset.root is not set"),
    (["dataset=synthetic", "dataset.image_size=30"], "divisible by 4"),
    (["estimator=ewgs"], "pair.twin=ste"),
    (["optimizer=adam", "optimizer.betas=[0.9,1.5]"], "optimizer=adam"),
    (["estimator@twin_estimator=tanh", "twin_estimator.bits=4"], "twin_estimator.bits=2"),
    (["estimator@twin_estimator=tanh", "pair.twin=self"], "does not use a twin estimator"),
])
def test_impossible_combinations_are_refused_in_one_line(tmp_path, monkeypatch, capsys, argv, words):
    assert words in refuse(tmp_path, monkeypatch, capsys, *argv)


def test_imagefolder_root_without_train_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "data" / "val" / "a").mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    err = refuse(work, monkeypatch, capsys, "dataset=imagefolder", f"dataset.root={tmp_path / 'data'}")
    assert "has no train/ folder" in err


def test_a_sweep_with_a_mismatched_twin_estimator_is_refused_before_launch(tmp_path, monkeypatch, capsys):
    err = refuse(tmp_path, monkeypatch, capsys, "-m", "estimator@twin_estimator=tanh", "twin_estimator.bits=4",
                 "seed=0,1", lines=3)  # one line, then one per point
    assert err.splitlines()[0].endswith("2 of 2 sweep points are invalid; nothing was launched:")
    assert all("twin_estimator.bits=2" in line for line in err.splitlines()[1:])


def test_the_data_states_its_shape_and_the_model_follows():
    for name, (overrides, shape) in DATASETS.items():
        if name == "imagefolder":
            continue
        spec = build_spec(make_cfg(*overrides, "model=resnet18", tiny=False))
        assert spec.shape.input_shape == shape
    spec = build_spec(make_cfg(*DATASETS["synthetic"][0], "dataset.num_classes=7", tiny=False))
    assert spec.shape.num_classes == 7 and spec.quantized == ["conv1", "conv2"]
    big = build_spec(make_cfg(*DATASETS["synthetic"][0], "dataset.image_size=224", "model=resnet18", tiny=False))
    small = build_spec(make_cfg("model=resnet18"))
    assert len(big.quantized) == len(small.quantized) == 20  # the rule is the same whatever the stem


def test_quantize_linear_quantizes_every_linear_but_the_classifier():
    spec = build_spec(make_cfg("model.quantize_linear=true"))
    assert spec.quantized == ["conv1", "conv2", "fc1"]
    spec = build_spec(make_cfg("model=torchvision", "model.arch=vit_b_32", "model.quantize_linear=true",
                               *DATASETS["synthetic"][0], "dataset.image_size=32", tiny=False))
    assert "conv_proj" in spec.quantized and "heads.head" not in spec.quantized
    assert any("mlp" in n for n in spec.quantized)


def test_help_lists_come_from_the_registries():
    text = helptext.help_text("groups")
    for family, (registry, _) in schema.FAMILIES.items():
        line = next(l for l in text.splitlines() if l.strip().startswith(family + " "))
        assert line.split(None, 1)[1].startswith(registry.names()[0])


def test_python_api_takes_a_model_factory_and_a_dataset_object(tmp_path):
    import qatrun
    from tests.usercode import Stripes, tiny_net

    short = ["trainer.max_steps=3", "trainer.log_every=1", "trainer.eval_every=3", "trainer.checkpoint_every=3",
             "trainer.progress=false", "device=cpu"]
    local = lambda num_classes, in_channels: tiny_net(num_classes, in_channels, width=4)  # noqa: E731 (no import path)
    s = qatrun.run(short, model=local, dataset=Stripes(seed=0, num_classes=4), run_dir=tmp_path / "a")
    assert s["run_dir"] == str(tmp_path / "a") and (tmp_path / "a" / "summary.json").exists()
    assert s["config"]["model"]["target"].startswith("live:model:") and s["config"]["dataset"]["name"] == "custom"
    assert s["quantized_layers"] == ["0", "2"] and s["steps"] == 3 and s["twin_role"] == "warped"
    # an importable factory is recorded by its import path, so the run can be resumed from the command line
    s = qatrun.run(short, model=tiny_net, dataset="synthetic", dataset__image_size=8, dataset__num_classes=3,
                   dataset__batch_size=4, dataset__eval_batch_size=4, dataset__length=8, dataset__test_length=4,
                   run_dir=tmp_path / "b")
    assert s["config"]["model"]["target"] == "tests.usercode:tiny_net"
    with pytest.raises(qatrun.preflight.UserError, match="optimizer.lr must be positive"):
        qatrun.run(short, optimizer__lr=-1, run_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_cli_trains_a_users_model_on_a_users_dataset(tmp_path, monkeypatch, capsys):
    """From the command line, with the user's module found in the current directory."""
    (tmp_path / "my_usercode.py").write_text((Path(__file__).parent / "usercode.py").read_text())
    monkeypatch.chdir(tmp_path)
    cli_main(["model=custom", "model.target=my_usercode:tiny_net", "dataset=custom", "dataset.target=my_usercode:stripes",
              "dataset.options={num_classes: 5}", *TINY_TRAIN, "hydra.run.dir=run"])
    out = capsys.readouterr().out
    assert "quantized layers (2): 0, 2\n" in out
    s = __import__("json").loads((tmp_path / "run" / "summary.json").read_text())
    assert s["quantized_layers"] == ["0", "2"] and s["config"]["dataset"]["options"] == {"num_classes": 5}
