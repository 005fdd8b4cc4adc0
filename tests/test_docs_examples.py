"""docs/own-model-data.md as a user runs it: the saved mynets.py, its two commands, and the Python example."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from qatrun.cli import main as cli_main
from tests.test_compose import TINY_TRAIN, image_tree

PAGE = Path(__file__).resolve().parents[1] / "docs" / "own-model-data.md"
MNIST_TINY = ["dataset.batch_size=16", "dataset.eval_batch_size=32", "dataset.train_subset=64", "dataset.test_subset=32"]


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", PAGE.read_text(), re.S)


def commands() -> list[list[str]]:
    cmds = [shlex.split(line.split("#")[0]) for b in blocks("bash") for line in b.splitlines()]
    return [c[1:] for c in cmds if c[:2] == ["qatrun", "model=custom"]]


@pytest.mark.slow
@pytest.mark.parametrize("i", range(2))
def test_the_pages_commands_train_the_saved_model(i, tmp_path, monkeypatch, capsys):
    mynets = next(b for b in blocks("python") if "def build(num_classes, in_channels, width=16)" in b)
    (tmp_path / "mynets.py").write_text(mynets)
    image_tree(tmp_path / "flowers", side=40)
    monkeypatch.chdir(tmp_path)
    argv = commands()[i]
    extra = [] if any(a.startswith("dataset=") for a in argv) else MNIST_TINY
    cli_main([*argv, *extra, *TINY_TRAIN, "dataset.batch_size=4" if extra == [] else "seed=0",
              "hydra.run.dir=run"])
    assert "quantized layers (2): 0, 2\n" in capsys.readouterr().out
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["quantized_layers"] == ["0", "2"]
    assert s["config"]["dataset"]["name"] == ("imagefolder" if "dataset=imagefolder" in argv else "mnist")


@pytest.mark.slow
def test_the_python_example_runs_as_it_is(tmp_path):
    code = next(b for b in blocks("python") if "qatrun.run(model=build" in b)
    (tmp_path / "example.py").write_text(code)
    out = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    run_dir, layers = out.stdout.strip().splitlines()[-1].split(" ", 2)[:2]
    s = json.loads((Path(tmp_path, run_dir) / "summary.json").read_text())
    assert layers == "['0']" and s["steps"] == 20 and s["config"]["model"]["target"].startswith("live:model:")
    assert s["est/test_acc"] > 1 / 3  # the stripes are learnable: above chance after 20 steps
