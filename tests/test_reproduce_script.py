"""scripts/reproduce_mnist.sh plumbing, with a stand-in for qatrun: blocks, BLOCKS filtering, settings."""

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

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
    groups = re.findall(r'^if \[\[ " \$BLOCKS " == \*" ([a-z0-9_]+) "\* \]\]', text, flags=re.M)  # several blocks
    assert sorted(listed) == sorted(defined + [g for g in groups if g not in defined])
    assert len(set(defined)) == len(defined) and groups == ["resnet18", "optimizers", "quantizers"]
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


def test_the_optimizer_atlas_runs_every_registered_optimizer_at_its_lr_and_3x(tmp_path):
    from qatrun.optim import OPTIMIZERS

    calls, stdout = run(tmp_path, "full", "optimizers")
    by_block = {re.search(r"runs/([a-z0-9_]+)", c).group(1): c for c in calls}
    for name in OPTIMIZERS.names():
        lr = float(re.search(r"^lr: *([0-9.e+-]+)", (ROOT / "configs" / "optimizer" / f"{name}.yaml").read_text(),
                             re.M).group(1))
        other = "sgd_nowarp" if OPTIMIZERS.meta(name)["twin_rule"] == "warp" else "warped"
        typical, tripled = by_block[f"opt_{name}"], by_block[f"opt_{name}_3x"]
        for c, lr_, seeds in ((typical, lr, "0,1,2"), (tripled, 3 * lr, "0")):
            assert f"optimizer={name} " in c and f"experiment=predicted,{other},jitter" in c
            assert float(re.search(r"optimizer.lr=(\S+)", c).group(1)) == pytest.approx(lr_) and f"seed={seeds} " in c
            assert "trainer.max_steps=40" in c and "compile=true" not in c  # the atlas's own size
    assert "optimizer.nesterov=true" in by_block["opt_nesterov"] and "optimizer.momentum=0" in by_block["opt_sgd_m0"]
    assert "optimizer.weight_decay=0.0005,0.05" in by_block["opt_sgd_l2"]
    assert len(calls) == 2 * len(OPTIMIZERS.names()) + 5


def test_the_quantizer_atlas_runs_every_setting_under_both_rules(tmp_path):
    calls, _ = run(tmp_path, "full", "quantizers")
    by_block = {re.search(r"runs/([a-z0-9_]+)", c).group(1): c for c in calls}
    settings = {"tensor": "quantizer=tensor", "channel": "quantizer=channel", "lsq": "quantizer=lsq",
                "lsq_channel": "quantizer.scope=channel", "dynamic_absmean": "quantizer.stat=absmean",
                "dynamic_maxabs": "quantizer.stat=max_abs", "a4_fixed": "activation=fixed activation.bits=4",
                "a4_pact": "activation=pact activation.bits=4", "a2_fixed": "activation=fixed activation.bits=2",
                "a2_pact": "activation=pact activation.bits=2", "lsq_a2": "quantizer=lsq activation=fixed"}
    assert len(calls) == 2 * len(settings)
    for name, ovs in settings.items():
        for opt, other in (("sgd", "sgd_nowarp"), ("adam", "warped")):
            c = by_block[f"q_{name}_{opt}"]
            assert f"optimizer={opt} experiment=predicted,{other},jitter seed=0,1,2 experiment_name=quantizers" in c
            assert ovs in c and "trainer.max_steps=40" in c and "compile=true" not in c  # the atlas's own size


def test_the_resnet_block_runs_every_comparison_with_three_seeds(tmp_path):
    calls, _ = run(tmp_path, "full", "resnet18")
    main, adam_jitter, low = calls
    assert "seed=0,1,2 experiment=sgd,warp_lr,sgd_nowarp,jitter,adam" in main and "model=resnet18" in main
    assert "experiment=adam_jitter" in adam_jitter and "model=resnet18" in adam_jitter
    assert "optimizer.lr=0.001 experiment=sgd,warp_lr,sgd_nowarp,jitter" in low and "model=resnet18" in low
