"""torchrun + DDP on CPU (gloo, two processes) gives the single-process figures; cluster configs compose."""

import json
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_module

from tests.conftest import TINY

ARGS = [*[t for t in TINY if "max_steps" not in t], "trainer.max_steps=10", "trainer.changepoints=false"]


@pytest.mark.slow
def test_torchrun_two_processes_match_single_process(tmp_path):
    single = subprocess.run([sys.executable, "-m", "qatrun", *ARGS, f"hydra.run.dir={tmp_path / 'one'}"],
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
                          "-m", "qatrun", *ARGS, f"hydra.run.dir={tmp_path / 'two'}"],
                         capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a = json.loads((tmp_path / "one" / "summary.json").read_text())
    b = json.loads((tmp_path / "two" / "summary.json").read_text())
    for key in ("pair/quantized_agreement", "pair/alignment_error", "pair/inference_agreement", "est/test_acc",
                "twin/test_acc", "est/test_loss", "twin/test_loss", "est/loss", "twin/loss", "pair/logit_mse"):
        assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    assert a["history"]["log_step"] == b["history"]["log_step"]


def test_slurm_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    with initialize_config_module("qatrun.configs", version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "experiment=imagenet"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == 8 and launcher.timeout_min == 4320
    assert cfg.model.name == "resnet50" and cfg.dataset.name == "imagenet" and cfg.optimizer.lr == 0.1
