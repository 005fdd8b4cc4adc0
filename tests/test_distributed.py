"""torchrun + DDP on CPU (gloo, two processes) gives the single-process figures; cluster configs compose."""

import json
import subprocess
import sys

import pytest

from qatrun.compose import compose_config
from tests.conftest import TINY

ARGS = [*[t for t in TINY if "max_steps" not in t], "trainer.max_steps=10", "trainer.changepoints=false"]


def _torchrun(nproc: int, port: int, run_dir):
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                          f"--master_port={port}", "-m", "qatrun", *ARGS, f"hydra.run.dir={run_dir}"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
def test_torchrun_two_processes_match_single_process(tmp_path):
    single = subprocess.run([sys.executable, "-m", "qatrun", *ARGS, f"hydra.run.dir={tmp_path / 'one'}"],
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    a = json.loads((tmp_path / "one" / "summary.json").read_text())
    b = _torchrun(2, 29517, tmp_path / "two")
    for key in ("pair/quantized_agreement", "pair/alignment_error", "pair/inference_agreement", "est/test_acc",
                "twin/test_acc", "est/test_loss", "twin/test_loss", "est/loss", "twin/loss", "pair/logit_mse"):
        assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    assert a["history"]["log_step"] == b["history"]["log_step"]
    assert a["distributed"] is None and b["distributed"] == {"backend": "gloo", "world_size": 2}

    # One process under torchrun joins a group of one (what the GPU check runs with NCCL): DDP and the
    # collectives run, and over one rank they change nothing: the figures equal the plain run's exactly.
    c = _torchrun(1, 29518, tmp_path / "torchrun1")
    assert c["distributed"] == {"backend": "gloo", "world_size": 1}
    for key in ("pair/quantized_agreement", "pair/alignment_error", "est/test_acc", "twin/test_loss", "est/loss",
                "pair/logit_mse", "history"):
        assert c[key] == a[key], key


def test_slurm_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose_config(["hydra/launcher=slurm", "experiment=imagenet"], hydra_cfg=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == 8 and launcher.timeout_min == 4320
    assert cfg.model.name == "resnet50" and cfg.dataset.name == "imagenet" and cfg.optimizer.lr == 0.1
