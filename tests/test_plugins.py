"""A new model and a new dataset are one file each: dropped into a package named by QATRUN_PLUGINS, each
registers itself where it is defined and joins its family (registry, typed schema, a composed config)
with no import line anywhere else."""

import os
import subprocess
import sys
import textwrap

MODEL = '''
import torch.nn as nn

from qatrun.models.base import MODELS


@MODELS.register("toy_mlp")
def toy_mlp(num_classes: int = 10, input_shape=(1, 8, 8), hidden: int = 16) -> nn.Module:
    c, h, w = input_shape
    return nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * h * w, hidden),
                         nn.ReLU(), nn.Linear(hidden, num_classes))
'''

DATASET = '''
import torch

from qatrun import checks
from qatrun.data.base import DATASETS, DataShape


@DATASETS.register("toy_blobs")
class ToyBlobs:
    @staticmethod
    def shape(batch_size: int, classes: int, side: int, **_) -> DataShape:
        checks.positive_int("dataset.batch_size", batch_size)
        checks.positive_int("dataset.classes", classes, minimum=2)
        return DataShape((1, side, side), classes)

    def __init__(self, device, seed, world, rank, shape, batch_size: int, classes: int, side: int, steps: int = 4):
        self.device, self.input_shape, self.num_classes = torch.device(device), shape.input_shape, shape.num_classes
        self.batch_size, self.steps_per_epoch, self.seed = batch_size, steps, seed

    def batch(self, step):
        g = torch.Generator().manual_seed(self.seed * 1000 + step % self.steps_per_epoch)
        y = torch.randint(0, self.num_classes, (self.batch_size,), generator=g)
        return torch.randn(self.batch_size, *self.input_shape, generator=g) + y.view(-1, 1, 1, 1), y

    def test_batches(self):
        yield self.batch(10_000)
'''

MODEL_YAML = """defaults:
  - /schema/model/toy_mlp@_here_
  - _self_
name: toy_mlp
he_init: true
quantize_linear: false
hidden: 8
"""

CHECK = '''
import pytest
from qatrun import schema
from qatrun.compose import compose_config
from qatrun.data import DATASETS, build_data, describe
from qatrun.models import MODELS, build_model, check_model

assert "toy_mlp" in MODELS.names() and "toy_blobs" in DATASETS.names()
shape = describe("toy_blobs", batch_size=4, classes=3, side=8)
assert shape == ((1, 8, 8), 3)
with pytest.raises(ValueError, match="dataset.classes"):  # the dataset's own check, in its shape
    describe("toy_blobs", batch_size=4, classes=1, side=8)
with pytest.raises(ValueError, match="unknown options colour; it takes batch_size, classes, side, steps"):
    describe("toy_blobs", batch_size=4, classes=3, side=8, colour=1)
data = build_data("toy_blobs", "cpu", batch_size=4, classes=3, side=8)
x, y = data.batch(0)
assert tuple(x.shape) == (4, 1, 8, 8) and data.input_shape == (1, 8, 8)
assert build_model("toy_mlp", 3, (1, 8, 8))(x).shape == (4, 3)
assert check_model("toy_mlp", {"hidden": 8}, (1, 8, 8), 3) == ["0"]
assert set(schema.fields_of("model", "toy_mlp")) >= {"name", "hidden"}
assert list(schema.fields_of("dataset", "toy_blobs")) == ["name", "batch_size", "classes", "side", "steps"]
cfg = compose_config(["hydra.searchpath=[file://CONF]", "model=toy_mlp"])  # its YAML from the user's own folder
assert cfg.model.hidden == 8
print("ok")
'''


def test_a_model_and_a_dataset_are_one_file_each_in_a_plugin_package(tmp_path):
    pkg = tmp_path / "toyplug"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "toy_model.py").write_text(textwrap.dedent(MODEL))
    (pkg / "toy_data.py").write_text(textwrap.dedent(DATASET))
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "toy_mlp.yaml").write_text(MODEL_YAML)
    env = {**os.environ, "QATRUN_PLUGINS": "toyplug"}
    code = CHECK.replace("CONF", str(tmp_path / "conf"))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def test_a_plugin_that_does_not_import_is_one_line(tmp_path):
    env = {**os.environ, "QATRUN_PLUGINS": "no_such_plugin_pkg"}
    code = "from qatrun.models import MODELS\nMODELS.names()"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "ValueError: QATRUN_PLUGINS=no_such_plugin_pkg: cannot import 'no_such_plugin_pkg'" in out.stderr


def test_the_families_find_their_own_modules_by_name():
    from qatrun.data import DATASETS
    from qatrun.models import MODELS

    assert {"small_cnn", "resnet18", "resnet50", "torchvision", "custom"} <= set(MODELS.names())
    assert {"mnist", "synthetic", "imagefolder", "imagenet", "custom"} <= set(DATASETS.names())
    for pkg in ("models", "data"):  # no member is imported by name in its package's __init__
        init = (os.path.dirname(__import__(f"qatrun.{pkg}", fromlist=["x"]).__file__)) + "/__init__.py"
        text = open(init).read()
        for member in ("small_cnn", "resnet", "synthetic", "imagefolder", "custom"):
            assert f"qatrun.{pkg}.{member} import" not in text
