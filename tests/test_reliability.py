"""Exact resume after SIGKILL, determinism, and one-line errors for bad input (issue 5)."""

import json
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from qatrun.checkpoint import CheckpointError, load
from qatrun.train import train
from tests.conftest import TINY, make_cfg

CLI = [sys.executable, "-m", "qatrun"]
# Long enough to be killed mid-run: 40 steps, checkpoints every 5.
KILLABLE = [t for t in TINY if "max_steps" not in t and "checkpoint_every" not in t] + [
    "trainer.max_steps=40", "trainer.checkpoint_every=5"]


def cli(*args, timeout=600):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def user_error(out) -> str:
    """A user error: non-zero exit, one line on stderr starting 'qatrun: error:', no traceback."""
    assert out.returncode != 0, out.stdout[-500:]
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    lines = [l for l in out.stderr.splitlines() if l.startswith("qatrun: error:")]
    assert len(lines) == 1, out.stderr[-2000:]
    return lines[0]


def finished_run(tmp_path_factory, *overrides):
    """A run of ``overrides`` trained to the end by the command line, in a fresh directory."""
    d = tmp_path_factory.mktemp("ref") / "run"
    out = cli(*overrides, f"hydra.run.dir={d}")
    assert out.returncode == 0, out.stderr[-2000:]
    return d


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return finished_run(tmp_path_factory, *KILLABLE)


@pytest.mark.slow
def test_same_seed_same_summary(reference, tmp_path):
    out = cli(*KILLABLE, f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "summary.json").read_bytes() == (reference / "summary.json").read_bytes()


@pytest.mark.slow
def test_other_seed_differs(reference, tmp_path):
    s = train(make_cfg(*KILLABLE[:-2], "trainer.max_steps=40", "seed=1"), tmp_path)
    ref = json.loads((reference / "summary.json").read_text())
    assert s["est/test_loss"] != ref["est/test_loss"]


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(2))
def test_sigkill_then_resume_is_bitwise_identical(reference, tmp_path, trial):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([*CLI, *KILLABLE, f"hydra.run.dir={run_dir}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = run_dir / "checkpoint.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    # A random moment after the first checkpoint: mid-step, mid-eval or mid-checkpoint-write.
    time.sleep(random.Random(trial).uniform(0.0, 2.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "summary.json").exists() or proc.returncode == 0
    step = load(ckpt)["step"]
    out = cli(*KILLABLE, f"resume={run_dir}", f"hydra.run.dir={tmp_path / 'hydra'}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert (run_dir / "summary.json").read_bytes() == (reference / "summary.json").read_bytes(), f"killed after step {step}"
    ea = EventAccumulator(str(run_dir / "tb")).Reload()
    for tag in ("pair/quantized_agreement", "est/loss", "est/test_acc"):
        steps = [e.step for e in ea.Scalars(tag)]
        ref_steps = [e.step for e in EventAccumulator(str(reference / "tb")).Reload().Scalars(tag)]
        assert steps == ref_steps, (tag, step)  # no duplicated, no missing points


@pytest.mark.slow
def test_resume_refuses_changed_math(reference, tmp_path):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(reference, run_dir)
    line = user_error(cli(*KILLABLE, "optimizer.lr=0.2", "estimator.k=3.0", f"resume={run_dir}",
                          f"hydra.run.dir={tmp_path / 'h'}"))
    assert "config differs" in line and "estimator.k" in line and "optimizer.lr" in line


@pytest.mark.slow
def test_corrupt_checkpoints(reference, tmp_path):
    good = (reference / "checkpoint.pt").read_bytes()
    cases = {"truncated": good[: len(good) // 2], "garbage": b"not a checkpoint at all" * 10}
    for name, blob in cases.items():
        d = tmp_path / name
        d.mkdir()
        (d / "checkpoint.pt").write_bytes(blob)
        # a truncated checkpoint fails its sha256 before torch reads it; garbage is no checkpoint at all
        with pytest.raises(CheckpointError, match="corrupt: its content does not match" if name == "truncated"
                           else "unreadable"):
            load(d / "checkpoint.pt")
    d = tmp_path / "pickled"
    d.mkdir()
    torch.save({"format": "something-else"}, d / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="not a qatrun checkpoint"):
        load(d / "checkpoint.pt")
    line = user_error(cli(*KILLABLE, f"resume={tmp_path / 'truncated'}", f"hydra.run.dir={tmp_path / 'h'}"))
    assert "is corrupt" in line and "left untouched" in line
    assert (tmp_path / "truncated" / "checkpoint.pt").read_bytes() == cases["truncated"]  # nothing overwritten


@pytest.mark.slow
def test_checkpoint_from_another_model(tmp_path):
    from qatrun import checkpoint as ck

    cfg = make_cfg("trainer.max_steps=2")
    train(cfg, tmp_path)
    blob = load(tmp_path / "checkpoint.pt")
    blob["state"]["pair"]["models"][0] = {"weird.weight": torch.zeros(3)}
    ck.save(tmp_path, blob["step"], blob["config"], blob["state"])
    with pytest.raises(ValueError, match="another model"):
        train(cfg, tmp_path)  # the re-run resumes from the tampered checkpoint


BAD = [
    (["estimator.name=dsq"], "valid estimators: approxsign, custom, dsq_anneal, ewgs, pwl, qnet, ste, tanh"),
    (["optimizer.name=lion"], "unknown optimizer 'lion'; valid optimizers: adadelta, adagrad, adam, adamax"),
    (["model.name=vgg"], "valid models"),
    (["dataset.name=cifar"], "valid datasets"),
    (["estimator.bits=9"], "bits must be an integer from 1 to 8"),
    (["estimator.bits=0"], "bits must be an integer from 1 to 8"),
    (["estimator.k=-1"], "sharpness k must be positive"),
    (["optimizer.lr=-0.1"], "optimizer.lr must be positive"),
    (["dataset.batch_size=0"], "dataset.batch_size must be a positive integer"),
    (["trainer.max_steps=0"], "trainer.max_steps must be a positive integer, got 0"),
    (["trainer.max_steps=null", "trainer.epochs=0"], "trainer.epochs must be a positive integer, got 0"),
    (["trainer.log_every=0"], "trainer.log_every must be a positive integer"),
    (["estimator=ewgs", "pair.twin=auto"], "outside the paper's class"),
    (["pair.twin=mirror"], "valid: auto, none"),
    (["estimator=custom", "estimator.shape=no_such_pkg.fn"], "cannot import module"),
    (["estimator=custom", "estimator.shape=tests.test_reliability.bad_shape"], "tensor shaped like its input"),
    (["device=tpu"], "unknown device 'tpu'; valid: auto, cpu, cuda"),
]


def bad_shape(u):
    return u.sum()


@pytest.mark.parametrize("overrides,message", BAD)
def test_bad_input_clear_error(tmp_path, overrides, message):
    (tmp_path / "keep.txt").write_text("results so far")
    with pytest.raises(ValueError) as info:
        train(make_cfg(*overrides), tmp_path)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert (tmp_path / "keep.txt").read_text() == "results so far"
    assert not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("overrides,message", [BAD[0], BAD[4], BAD[11]])
def test_cli_user_error_is_one_line_without_traceback(tmp_path, overrides, message):
    line = user_error(cli(*TINY, *overrides, f"hydra.run.dir={tmp_path}", timeout=120))
    assert message in line


@pytest.mark.slow
def test_unknown_config_group_option_lists_choices(tmp_path):
    line = user_error(cli(*TINY, "estimator=dsq", f"hydra.run.dir={tmp_path / 'run'}"))
    assert ("estimator=dsq: no such option; valid estimator options: approxsign, custom, dsq_anneal, ewgs, pwl, "
            "qnet, ste, tanh") in line
    assert not (tmp_path / "run").exists()


def test_dataset_root_problems(tmp_path):
    from qatrun.data.mnist import FILES

    for name in ("missing", "empty"):
        root = tmp_path / name
        if name == "empty":
            root.mkdir()
        with pytest.raises(ValueError, match="MNIST is not available.*train-images-idx3-ubyte"):
            train(make_cfg(f"dataset.root={root}", "dataset.download=false"), tmp_path / f"run_{name}")
    raw = tmp_path / "bad" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for fname, magic in FILES.values():  # right magic, truncated body
        (raw / fname).write_bytes(magic.to_bytes(4, "big") + b"\x00" * 20)
    with pytest.raises(ValueError, match="idx3-ubyte|idx1-ubyte"):
        train(make_cfg(f"dataset.root={tmp_path / 'bad'}"), tmp_path / "run_bad")
    for fname, magic in FILES.values():  # wrong magic
        (raw / fname).write_bytes(b"\x00\x00\x00\x01" + b"\x00" * 20)
    with pytest.raises(ValueError, match="magic"):
        train(make_cfg(f"dataset.root={tmp_path / 'bad'}"), tmp_path / "run_bad2")


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    from qatrun.data.mnist import MnistData
    from qatrun.train import TrainingError

    real = MnistData.batch

    def poisoned(self, step):  # the data turns to NaN from step 12 on
        x, y = real(self, step)
        return (x * float("nan") if step >= 12 else x), y

    monkeypatch.setattr(MnistData, "batch", poisoned)
    cfg = make_cfg("trainer.max_steps=20", "trainer.checkpoint_every=5", "trainer.log_every=5")
    with pytest.raises(TrainingError, match=r"the est run's loss became NaN or Inf at step 13.*last good checkpoint"):
        train(cfg, tmp_path)
    assert load(tmp_path / "checkpoint.pt")["step"] == 10  # the last good one survives
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.slow
def test_nan_loss_cli_one_line(tmp_path):
    line = user_error(cli(*TINY, "optimizer.lr=1e30", "trainer.warmup_frac=0", "trainer.max_steps=6",
                          f"hydra.run.dir={tmp_path}"))
    assert "NaN or Inf at step" in line and "run's loss" in line


@pytest.mark.slow
def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="cannot be written"):
        train(make_cfg(), blocker / "run")  # a path under a file: unwritable even for root
    # through the CLI: refused before Hydra starts, naming the key
    out = cli(*TINY, f"hydra.run.dir={blocker / 'run'}")
    line = user_error(out)
    assert out.returncode == 2 and "hydra.run.dir=" in line and "is a file, not a directory" in line
    assert blocker.read_text() == "x"


@pytest.mark.slow
def test_rerun_into_existing_directory_continues(tmp_path):
    """A multirun job re-run into its directory picks up its checkpoint instead of starting over."""
    cfg = make_cfg("trainer.max_steps=10", "trainer.checkpoint_every=5")
    first = (train(cfg, tmp_path), (tmp_path / "summary.json").read_bytes())
    state = load(tmp_path / "checkpoint.pt")
    assert state["step"] == 10
    (tmp_path / "summary.json").unlink()
    train(cfg, tmp_path)  # nothing left to train: rewrites the same summary
    assert (tmp_path / "summary.json").read_bytes() == first[1]
    steps = [e.step for e in EventAccumulator(str(tmp_path / "tb")).Reload().Scalars("est/loss")]
    assert steps == sorted(set(steps))  # no duplicated points
