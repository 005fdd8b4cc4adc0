"""The ImageNet path end to end on a generated ImageFolder tree, ResNet-18 at a tiny input size,
and the synthetic dataset; CUDA-only checks skip cleanly."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from qatrun.train import train
from tests.conftest import make_cfg


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 2)):
        for c in ("n01", "n02", "n03"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(d / f"{i}.JPEG")
    return root


def imagenet_cfg(root, *extra):
    return make_cfg(
        "experiment=imagenet", f"dataset.root={root}", "dataset.batch_size=6", "dataset.eval_batch_size=3",
        "dataset.workers=0", "dataset.image_size=32", "dataset.resize=36", "model=resnet18", "precision=fp32",
        "channels_last=false", "trainer.max_steps=3", "trainer.log_every=1", "trainer.eval_every=3",
        "trainer.checkpoint_every=3", "trainer.progress=false", "device=cpu", *extra, tiny=False)


@pytest.mark.slow
def test_resnet18_pair_on_imagefolder_tree(tree, tmp_path):
    s = train(imagenet_cfg(tree), tmp_path)
    layer_keys = [k for k in s if k.startswith("layers/") and k.endswith("quantized_agreement")]
    assert len(layer_keys) == 20  # every convolution of ResNet-18 quantized, fc float
    assert s["twin_init"] == "mirror" and s["steps"] == 3
    assert s["history"]["pair/quantized_agreement"][0] <= 1.0
    assert 0.0 <= s["est/test_acc"] <= 1.0 and s["config"]["dataset"]["name"] == "imagenet"
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 3


def test_imagenet_resume_continues_data_order(tree, tmp_path):
    """Killed after step 3 of 6 and resumed: same data order (the val images have no augmentation,
    the train crops do, so only the order is exact: compare the sampler's batches)."""
    from qatrun.data.imagenet import StepBatchSampler

    s = StepBatchSampler(18, 6, seed=0)
    full = [b for b in s]
    s2 = StepBatchSampler(18, 6, seed=0)
    s2.start(2)
    assert [b for b in s2] == full[2:]
    two = [StepBatchSampler(18, 6, seed=0, world=2, rank=r) for r in (0, 1)]
    assert [a + b for a, b in zip(*two)] == full  # ranks split each global batch


def test_imagenet_missing_root(tmp_path):
    with pytest.raises(ValueError, match="train"):
        train(imagenet_cfg(tmp_path / "nope"), tmp_path / "run")


@pytest.mark.slow
def test_synthetic_pair_learns(tmp_path):
    s = train(make_cfg("dataset=synthetic", "dataset.num_classes=10", "dataset.image_size=28", "dataset.channels=1",
                       "dataset.batch_size=64", "dataset.eval_batch_size=128", "dataset.length=1280",
                       "dataset.test_length=256", "dataset.signal=1.0", "trainer.max_steps=30", "trainer.log_every=10",
                       "trainer.eval_every=30", "trainer.progress=false", "optimizer.lr=0.01", tiny=False), tmp_path)
    assert s["est/test_acc"] > 0.5 and s["twin/test_acc"] > 0.5  # chance is 0.1
    assert s["pair/quantized_agreement"] > 0.95


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_channels_last_pair(tmp_path):
    s = train(make_cfg("device=cuda", "precision=bf16", "channels_last=true", "trainer.max_steps=10"), tmp_path)
    assert s["pair/quantized_agreement"] > 0.98


@pytest.mark.slow
def test_reproduce_imagenet_script_end_to_end(tree, tmp_path):
    """``make reproduce-imagenet``'s script on the generated tree: ResNet-18 on CPU, every comparison
    through torchrun (one process), then the report with a verdict paragraph."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    tiny = ["model=resnet18", "dataset.batch_size=6", "dataset.eval_batch_size=3", "dataset.workers=0",
            "dataset.image_size=32", "dataset.resize=36", "precision=fp32", "channels_last=false", "device=cpu",
            "trainer.max_steps=3", "trainer.log_every=3", "trainer.eval_every=3", "trainer.progress=false",
            "dataset.train_subset=12", "dataset.test_subset=3",
            "optimizer.lr=0.001"]  # 3 tiny steps that do not explode (a loss 5x up and chance at the end is divergence)
    bindir = Path(sys.executable).parent
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PY": sys.executable, "REPORT": str(bindir / "qatrun-report")}
    res = subprocess.run(["bash", "scripts/reproduce_imagenet.sh", str(tree), "1", *tiny], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    runs = {d.name: json.loads((d / "summary.json").read_text()) for d in (tmp_path / "out" / "runs").iterdir()
            if d.is_dir()}
    assert set(runs) == {"sgd", "control", "adam", "jitter"}
    assert (runs["sgd"]["twin_init"], runs["control"]["twin_init"]) == ("mirror", "identity")
    assert runs["control"]["twin_lr_factor"] == runs["sgd"]["twin_lr_factor"] < 1  # lr x alpha, no warp
    assert runs["adam"]["config"]["optimizer"]["name"] == "adam" and runs["jitter"]["twin"] == "self"
    assert all(r["config"]["model"]["name"] == "resnet18" for r in runs.values())
    assert (tmp_path / "out" / "table.md").exists() and (tmp_path / "out" / "findings.md").exists()
    bad = subprocess.run(["bash", "scripts/reproduce_imagenet.sh", str(tmp_path / "nope")], cwd=repo, env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "must hold train/ and val/" in bad.stderr
