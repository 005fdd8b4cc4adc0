"""scripts/reproduce_mnist.sh plumbing, with a stand-in for qatrun: blocks, BLOCKS filtering, settings."""

import os
import re
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "reproduce_mnist.sh"


def stub(tmp_path) -> Path:
    """A qatrun that appends its arguments, one call per line, to calls.txt."""
    exe = tmp_path / "qatrun"
    exe.write_text(f'#!/usr/bin/env bash\necho "$@" >> {tmp_path}/calls.txt\n')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


def run(tmp_path, mode, blocks=None, *extra):
    env = {**os.environ, "QATRUN": str(stub(tmp_path)), "REPORT": "true", "OUT": str(tmp_path / "out")}
    if blocks is not None:
        env["BLOCKS"] = blocks
    out = subprocess.run(["bash", str(SCRIPT), mode, *extra], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines() if (tmp_path / "calls.txt").exists() else []
    return calls, out.stdout


def test_every_block_is_listed_and_every_listed_block_exists():
    text = SCRIPT.read_text()
    listed = re.search(r'all_blocks="([^"]+)"', text).group(1).split()
    defined = re.findall(r"^\s*block ([a-z0-9_]+) ", text, flags=re.M)
    assert sorted(listed) == sorted(defined) and len(set(defined)) == len(defined)
    for needed in ("adam_jitter", "long", "lr_jitter", "lr_adam_jitter", "warp_lr", "sgd_nowarp"):
        assert needed in listed


def test_blocks_filter_and_full_settings(tmp_path):
    calls, stdout = run(tmp_path, "full", "lr_jitter long", "device=cpu")
    assert len(calls) == 2 and "== long:" in stdout and "== lr_jitter:" in stdout
    long, jit = calls
    assert "experiment=sgd,sgd_nowarp,adam" in long and "trainer.epochs=5" in long and "experiment_name=long" in long
    assert "experiment=jitter" in jit and "optimizer.lr=0.001,0.00316,0.01,0.0316,0.1" in jit
    for c in calls:  # the full suite compiles (measured faster end to end), every block sweeps into runs/<block>
        assert "compile=true" in c and "device=cpu" in c and "trainer.eval_every=25" in c
        assert f"hydra.sweep.dir={tmp_path}/out/runs/" in c
    seconds = (tmp_path / "out" / "runs" / "block_seconds.txt").read_text().split()
    assert seconds[0::2] == ["long", "lr_jitter"]


def test_quick_mode_is_eager_and_short(tmp_path):
    calls, _ = run(tmp_path, "quick", "adam_jitter")
    (c,) = calls
    assert "experiment=adam_jitter" in c and "trainer.max_steps=40" in c and "compile=true" not in c


def test_bad_mode(tmp_path):
    out = subprocess.run(["bash", str(SCRIPT), "everything"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "QATRUN": str(stub(tmp_path)), "OUT": str(tmp_path / "o")})
    assert out.returncode == 2 and "usage" in out.stderr
