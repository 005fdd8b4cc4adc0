"""``scripts/gpu_check.sh --dry-run``: the GPU check's own install and data path, on the CPU.

A copy of the checkout (what the GPU machine gets), the carried folder ``.gpu/mnist`` with gzipped idx
files (a small fake MNIST here; the wheels are not needed where Hydra is installed), then the script:
a non-editable install into its own site folder, the config composed from there with the working
directory outside the checkout, the MNIST files unpacked, a 2-step CPU pair with downloads off, the bench,
the cuda tests collected from outside the checkout (skipped on a CPU).
"""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MNIST = {"train-images-idx3-ubyte": (2051, (1200, 28, 28)), "train-labels-idx1-ubyte": (2049, (1200,)),
         "t10k-images-idx3-ubyte": (2051, (200, 28, 28)), "t10k-labels-idx1-ubyte": (2049, (200,))}


def _copy_checkout(dest: Path) -> None:
    """The tracked and untracked-not-ignored files the install needs (what travels to the GPU machine)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "--", "pyproject.toml", "README.md",
                            "qatrun", "configs", "scripts", "tests"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split("\n")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(src.read_bytes())


def _fake_mnist(folder: Path) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for name, (magic, shape) in MNIST.items():
        data = rng.integers(0, 256 if magic == 2051 else 10, size=shape, dtype=np.uint8)
        header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in shape)
        (folder / f"{name}.gz").write_bytes(gzip.compress(header + data.tobytes()))


def _run(repo: Path, tmp: Path, tag: str):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp), "PY": sys.executable, "OUT": str(tmp / f"out_{tag}"),
           "QATRUN_SITE": str(tmp / f"site_{tag}"), "QATRUN_DATA": str(tmp / f"data_{tag}"),
           "KINETO_LOG_LEVEL": "5"}
    return subprocess.run(["bash", str(repo / "scripts" / "gpu_check.sh"), "--dry-run"], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_gpu_check_dry_run_installs_and_trains_from_carried_files(tmp_path):
    repo = tmp_path / "checkout"
    _copy_checkout(repo)
    assert not (repo / "qatrun" / "configs").exists()  # configs reach qatrun.configs only through the install
    _fake_mnist(repo / ".gpu" / "mnist")

    res = _run(repo, tmp_path, "a")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    site = tmp_path / "site_a"
    assert (site / "qatrun" / "configs" / "config.yaml").is_file()  # the non-editable install ships the YAML
    assert f"into {site}" in res.stdout and "config composes" in res.stdout
    raw = tmp_path / "data_a" / "mnist" / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(MNIST)  # unpacked where qatrun reads MNIST
    summary = json.loads((tmp_path / "out_a" / "mnist_dry" / "summary.json").read_text())
    assert 0 <= summary["pair/quantized_agreement"] <= 1 and summary["steps"] == 2
    bench = json.loads((tmp_path / "out_a" / "bench_dry.json").read_text())
    assert bench["cases"]["cpu-small"]["ms_per_step"]["pair"] > 0
    assert "cuda tests (dry run)" in res.stdout and " skipped" in res.stdout  # collected from outside, none ran
    assert "dry run done" in res.stdout

    # Without the carried MNIST the script stops before any run (downloads stay off): it never fetches.
    for f in (repo / ".gpu" / "mnist").iterdir():
        f.unlink()
    res = _run(repo, tmp_path, "b")
    assert res.returncode == 2 and "MNIST file train-images-idx3-ubyte is neither in" in res.stderr
    assert not (tmp_path / "out_b" / "mnist_dry").exists()
