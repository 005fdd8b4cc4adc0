"""qatrun.run, the Python API (issue 12), and estimator.shape from the user's own directory."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import qatrun
from qatrun.preflight import UserError
from tests.conftest import TINY

SHORT = [t for t in TINY if not t.startswith("trainer.max_steps")] + ["trainer.max_steps=4"]


@pytest.mark.slow
def test_run_with_a_list_returns_the_summary(tmp_path):
    s = qatrun.run(SHORT, run_dir=tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["steps"] == 4 and s["pair/quantized_agreement"] == saved["pair/quantized_agreement"]
    assert (tmp_path / "run" / ".hydra" / "config.yaml").exists()


@pytest.mark.slow
def test_run_with_keyword_arguments(tmp_path):
    s = qatrun.run(SHORT, run_dir=tmp_path / "run", seed=1, trainer__max_steps=2, optimizer="adam",
                   **{"dataset.train_subset": 500})
    assert (s["steps"], s["seed"]) == (2, 1)
    assert s["config"]["optimizer"]["name"] == "adam" and s["config"]["dataset"]["train_subset"] == 500


def test_run_default_directory_and_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"^optimizer.lr=abc: optimizer.lr must be a number$"):
        qatrun.run(optimizer__lr="abc")
    with pytest.raises(UserError, match="unknown key trainer.max_step;"):
        qatrun.run(trainer__max_step=3)
    with pytest.raises(TypeError, match="list of overrides"):
        qatrun.run("seed=1")
    assert not (tmp_path / "outputs").exists()  # refused before any work
    qatrun.run(SHORT, estimator="ste")
    (run,) = tmp_path.glob("outputs/*/*_ste_sgd")
    assert (run / "summary.json").exists()


@pytest.mark.slow
def test_shape_from_the_current_directory(tmp_path):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "shapes.py").write_text("import torch\ndef soft(u):\n    return 0.3 + 1.4 * torch.sin(torch.pi * u) ** 2\n")
    script = Path(sys.executable).parent / "qatrun"  # the console script: no current directory on sys.path
    out = subprocess.run([str(script), *SHORT, "estimator=custom", "estimator.shape=mypkg.shapes.soft",
                          f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["estimator"] == "custom" and 0 < s["alpha"] < 1


@pytest.mark.slow
def test_the_quantizers_train_from_the_python_api_and_the_cli(tmp_path):
    """Every weight quantizer and both activation quantizers, typed as a user types them: keyword arguments to
    ``qatrun.run`` and a ``qatrun -m`` sweep from the shell. Each run must carry its own setting through to the
    quantizer it trained and the summary's labels (a run that ignored the option would be the tensor default)."""
    short = [t for t in SHORT if not t.startswith("trainer.max_steps")] + ["trainer.max_steps=2"]
    s = qatrun.run(short, run_dir=tmp_path / "api", quantizer="lsq", quantizer__scope="channel",
                   activation="pact", activation__bits=2)
    assert s["hparams"]["quantizer"] == "lsq" and s["hparams"]["activation"] == "pact"
    assert s["config"]["quantizer"]["scope"] == "channel" and s["config"]["activation"]["bits"] == 2
    assert s["in_theorem"] is False and s["pair/range_drift"] >= 0 and s["pair/alignment_error"] is None
    assert s["quantized_inputs"] == s["quantized_layers"][1:] != []

    script = Path(sys.executable).parent / "qatrun"
    out = subprocess.run([str(script), "-m", *short, "quantizer=tensor,channel,dynamic", "activation=fixed",
                          "activation.bits=4", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    runs = {}
    for path in (tmp_path / "sweep").glob("[0-9]*/summary.json"):  # the jobs, not the sweep's report
        summary = json.loads(path.read_text())
        runs[summary["hparams"]["quantizer"]] = summary
    assert sorted(runs) == ["channel", "dynamic", "tensor"]
    for name, summary in runs.items():
        assert summary["hparams"]["activation"] == "fixed" and summary["config"]["activation"]["bits"] == 4
        assert summary["quantized_inputs"] == summary["quantized_layers"][1:] != []
        assert summary["in_theorem"] is (name != "dynamic")
        assert ("pair/range_drift" in summary) is (name == "dynamic")
