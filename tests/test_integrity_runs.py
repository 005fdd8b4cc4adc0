"""Integrity (issue 23): a checkpoint carries its checksum, a run directory belongs to one process, a refused
command changes nothing, a sweep re-run retrains only new points, and faults name their cause."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch

from qatrun import checkpoint as ckpt
from qatrun.rundir import LOCK, lock_dir, unlock_dir
from qatrun.train import TrainingError, train
from tests.conftest import TINY, make_cfg
from tests.test_reliability import CLI, cli, finished_run

SHORT = [t for t in TINY if "max_steps" not in t] + ["trainer.max_steps=10"]


def snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return finished_run(tmp_path_factory, *SHORT)


def test_a_flipped_byte_in_a_checkpoint_is_refused_and_the_file_kept(tmp_path):
    train(make_cfg("trainer.max_steps=4", "trainer.checkpoint_every=2"), tmp_path)
    path = tmp_path / ckpt.NAME
    raw = bytearray(path.read_bytes())
    assert raw.startswith(ckpt.MAGIC)
    raw[len(raw) // 2] ^= 0x01  # inside a tensor's bytes
    path.write_bytes(bytes(raw))
    with pytest.raises(ckpt.CheckpointError, match="corrupt: its content does not match its sha256"):
        ckpt.load(path)
    with pytest.raises(ckpt.CheckpointError, match="corrupt"):
        train(make_cfg("trainer.max_steps=6", "trainer.checkpoint_every=2"), tmp_path)  # a resume
    assert path.read_bytes() == bytes(raw)  # the evidence stays


def test_a_second_process_is_refused_and_the_first_keeps_its_directory(tmp_path):
    d = tmp_path / "run"
    lock_dir(d)  # this process holds it, as a running qatrun would
    try:
        out = cli(*SHORT, f"hydra.run.dir={d}")
        assert out.returncode == 2 and "is in use by another qatrun process" in out.stderr
        assert str(os.getpid()) in out.stderr and not (d / ".hydra").exists()
    finally:
        unlock_dir(d)


@pytest.mark.slow
def test_a_killed_holder_releases_its_directory(tmp_path):
    d = tmp_path / "run"
    holder = subprocess.Popen([*CLI, *[t for t in SHORT if "max_steps" not in t], "trainer.max_steps=400",
                               f"hydra.run.dir={d}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (d / "status.json").exists() and holder.poll() is None:
        time.sleep(0.05)
    out = cli(*[t for t in SHORT if "max_steps" not in t], "trainer.max_steps=400", f"hydra.run.dir={d}")
    assert out.returncode == 2 and "in use by another qatrun process" in out.stderr
    holder.kill()
    holder.wait()
    lock_dir(d)  # SIGKILL released it
    unlock_dir(d)


@pytest.mark.slow
def test_a_refused_command_leaves_a_finished_run_byte_identical(finished):
    before = snapshot(finished)
    out = cli(*SHORT, "seed=1", f"hydra.run.dir={finished}")
    assert out.returncode == 2 and "already holds a run whose config differs in seed" in out.stderr
    assert snapshot(finished) == before


@pytest.mark.slow
def test_a_sweep_run_again_with_one_more_value_trains_only_the_new_point(tmp_path):
    sweep = tmp_path / "sweep"
    first = cli("-m", *SHORT, "seed=1,2", f"hydra.sweep.dir={sweep}")
    assert first.returncode == 0, first.stderr[-2000:]
    again = cli("-m", *SHORT, "seed=0,1,2", f"hydra.sweep.dir={sweep}")  # the job numbers shift by one
    assert again.returncode == 0, again.stderr[-2000:]
    summaries = sorted(p for p in sweep.glob("*/summary.json") if p.parent.name != "report")
    fps = [json.loads(p.read_text())["fingerprint"] for p in summaries]
    assert len(fps) == len(set(fps)) == 3, summaries  # three results, none computed twice
    assert sorted(p.parent.name for p in sweep.glob("*/same_as.txt")) == ["1_seed=1", "2_seed=2"]
    assert (again.stdout + again.stderr).count("is the same run as") == 2
    table = (sweep / "report" / "table.md").read_text()
    rows = [l for l in table.splitlines() if l.startswith("|") and "---" not in l][1:]
    assert len(rows) == 1 and "±" in rows[0]  # one comparison of three distinct seeds, never a duplicate



@pytest.mark.slow
def test_a_finished_sweep_point_run_again_is_not_reopened(tmp_path):
    """Its pair state is not even loaded: one written before the compressed rule changed cannot be continued,
    and the point stands as computed; every file of it but Hydra's own stays as it was."""
    sweep = tmp_path / "sweep"
    first = cli("-m", *SHORT, "seed=1,2", f"hydra.sweep.dir={sweep}")
    assert first.returncode == 0, first.stderr[-2000:]
    point = sweep / "0_seed=1"
    blob = ckpt.load(point / ckpt.NAME)
    blob["state"]["pair"]["metrics"]["changepoints"]["a.chash_before"] = torch.zeros(1)  # the older format's key
    ckpt.save(point, blob["step"], blob["config"], blob["state"], blob["provenance"])
    keep = lambda: {k: v for k, v in snapshot(point).items() if not k.startswith(".hydra") and k != LOCK}  # noqa: E731
    before = keep()
    again = cli("-m", *SHORT, "seed=1,2", f"hydra.sweep.dir={sweep}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr.count("finished already") == 2 and "is the same run as" not in again.stderr
    assert keep() == before and not (point / "error.txt").exists() and not (point / "same_as.txt").exists()

def test_a_full_disk_names_its_cause_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    import errno

    from qatrun import files

    def full(path, obj):
        if Path(path).name == "summary.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        files.write_json(path, obj)

    monkeypatch.setattr("qatrun.train.write_json", full)
    with pytest.raises(TrainingError) as exc:
        train(make_cfg("trainer.max_steps=4"), tmp_path)
    line = str(exc.value)
    assert line.startswith(f"no space left on device writing {tmp_path / 'summary.json'}") and "MB free" in line
    assert f"the last good checkpoint is {tmp_path / ckpt.NAME}" in line and "\n" not in line
    assert ckpt.load(tmp_path / ckpt.NAME)["step"] == 4


def test_stale_temp_files_of_an_interrupted_write_are_removed(tmp_path):
    (tmp_path).mkdir(exist_ok=True)
    stale = tmp_path / ".checkpoint.pt.abc123"
    stale.write_bytes(b"half a checkpoint")
    train(make_cfg("trainer.max_steps=2"), tmp_path)
    assert not stale.exists() and (tmp_path / ckpt.NAME).exists()


def test_the_summary_records_a_fingerprint_that_ignores_operational_keys(tmp_path):
    a = train(make_cfg("trainer.max_steps=2"), tmp_path / "a")
    b = train(make_cfg("trainer.max_steps=2", "trainer.checkpoint_every=7", "trainer.progress=false"), tmp_path / "b")
    c = train(make_cfg("trainer.max_steps=2", "seed=1"), tmp_path / "c")
    assert a["fingerprint"] == b["fingerprint"] != c["fingerprint"]
    assert a["provenance"]["qatrun"]


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs (skipped where mounting is not allowed)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_really_full_disk_ends_in_one_line_with_the_last_checkpoint_intact(small_disk, monkeypatch):
    import shutil

    run = small_disk / "run"
    real, saves = ckpt.save, []

    def save_then_fill(d, step, *a):
        real(d, step, *a)
        saves.append(step)
        if len(saves) == 1:  # after the first checkpoint the disk fills up (another job's output, say)
            free = shutil.disk_usage(small_disk).free
            with open(small_disk / "filler", "wb") as f:
                f.write(b"\0" * (free - 4096))

    monkeypatch.setattr(ckpt, "save", save_then_fill)
    with pytest.raises(TrainingError) as exc:
        train(make_cfg("trainer.max_steps=4", "trainer.checkpoint_every=2", "model.width=4", "model.hidden=8",
                       "trainer.scatter_sample=100"), run)
    line = str(exc.value)
    assert line.startswith("no space left on device writing ") and "MB free" in line and "\n" not in line
    assert f"the last good checkpoint is {run / ckpt.NAME}" in line
    assert ckpt.load(run / ckpt.NAME)["step"] == 2  # intact, and no temp file left behind
    assert not list(run.glob(".checkpoint.pt.*"))


def test_seeds_torch_would_fold_are_refused():
    from qatrun.spec import build as build_spec

    with pytest.raises(ValueError, match="seed must be an integer from 0 to 4294967295, got 1099511627776.*repeat seed 0"):
        build_spec(make_cfg("seed=1099511627776"))
    build_spec(make_cfg("seed=4294967295"))  # the largest distinct one


def test_alignment_over_zero_distance_is_null_never_zero():
    from qatrun.metrics import WeightComparer
    from qatrun.spec import build as build_spec
    from qatrun.train import pair_from_spec

    cfg = make_cfg()
    pair = pair_from_spec(build_spec(cfg), torch.device("cpu"), steps=10)
    figs = WeightComparer.compute(pair.metrics["weights"].comparer)
    assert float(figs["pair/distance_travelled"]) == 0.0
    assert torch.isnan(figs["pair/alignment_error"]) and torch.isnan(figs["pair/alignment_error_identity"])


def test_a_resume_after_the_shape_was_edited_is_refused(tmp_path, monkeypatch):
    (tmp_path / "myshapes.py").write_text("import torch\n\ndef soft(u):\n    return 1 + 0.5 * torch.cos(2 * torch.pi * u)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = make_cfg("estimator=custom", "estimator.shape=myshapes.soft", "trainer.max_steps=6",
                   "trainer.checkpoint_every=2")
    first = train(cfg, tmp_path / "r")
    assert first["provenance"]["estimator.shape"]
    (tmp_path / "myshapes.py").write_text("import torch\n\ndef soft(u):\n    return 1 + 0.4 * torch.cos(2 * torch.pi * u)\n")
    with pytest.raises(ckpt.CheckpointError, match="the source of estimator.shape .* changed since the checkpoint"):
        train(cfg, tmp_path / "r")


def test_a_run_directory_removed_mid_run_ends_in_one_line(tmp_path, monkeypatch):
    import shutil

    run, real = tmp_path / "run", ckpt.save

    def save_then_remove(d, step, *a):
        real(d, step, *a)
        shutil.rmtree(run)  # someone cleans up the outputs while the run goes on

    monkeypatch.setattr(ckpt, "save", save_then_remove)
    with pytest.raises(TrainingError) as exc:
        train(make_cfg("trainer.max_steps=4", "trainer.checkpoint_every=2"), run)
    assert str(exc.value).startswith(f"the run directory {run} was removed while the run was going")
    assert "\n" not in str(exc.value)


def test_a_read_only_run_directory_is_named_as_such(tmp_path):
    """Root ignores file modes and a tmpfs with open files cannot be remounted read-only, so the mapping of
    the system's errors to the one line is checked on the errors themselves."""
    import errno

    from qatrun.files import os_error_line

    for code in (errno.EROFS, errno.EACCES):
        line = os_error_line(OSError(code, "Read-only file system"), tmp_path / "checkpoint.pt", tmp_path)
        assert line == f"cannot write {tmp_path / 'checkpoint.pt'}: the run directory {tmp_path} became read-only " \
                       "while the run was going"
