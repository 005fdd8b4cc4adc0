"""Faults a trial found around a run: a lock a deleted file cannot free, a sweep that stops as a run does, disk
faults of TensorBoard's writer and a moved run directory in one line, too-long paths, the CPU thread count in
a run's identity, status.json after an error or a second Ctrl-C, a small synthetic test set. Each ends in one
line (or a finished run), and nothing is lost."""

import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from qatrun import checkpoint as ckpt
from qatrun import identity, preflight, rundir
from qatrun.errors import TrainingError
from qatrun.stop import Interrupted
from qatrun.train import train
from tests.conftest import make_cfg

CLI = [sys.executable, "-m", "qatrun"]
# The trial's small settings (MNIST subsets, CPU).
T = ["dataset.train_subset=600", "dataset.test_subset=200", "dataset.batch_size=60", "trainer.checkpoint_every=5",
     "trainer.progress=false", "device=cpu"]
SMALL = ["trainer.max_steps=12", "trainer.checkpoint_every=5", "trainer.log_every=5", "trainer.eval_every=10"]


@pytest.fixture(autouse=True)
def default_signal_handlers():
    """Each test starts as a fresh process would, with Python's own SIGINT/SIGTERM handlers: a test run earlier
    in this process (pytest's, a library's) may have left another installed, which qatrun rightly leaves alone."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def outcome(fn, *args):
    """What ``fn`` raised, KeyboardInterrupt included (which would otherwise end the test session)."""
    try:
        fn(*args)
    except BaseException as exc:  # noqa: B902
        return exc
    return None


def status(d: Path) -> dict:
    return json.loads((d / "status.json").read_text())


# --- the lock: a kernel lock on the directory, whatever happens to the pid file --------------------------------

def test_a_deleted_lock_file_does_not_free_the_directory(tmp_path):
    d = tmp_path / "run"
    assert rundir.lock_dir(d)
    try:
        (d / rundir.LOCK).unlink()  # what `rm D/.qatrun.lock` did
        fd = rundir._held.pop(str(d.absolute()))  # as another process: this one's lock is not "held already"
        try:
            with pytest.raises(ValueError, match="is in use by another qatrun process"):
                rundir.lock_dir(d)
        finally:
            rundir._held[str(d.absolute())] = fd
    finally:
        rundir.unlock_dir(d)
    assert rundir.lock_dir(d)  # released with its descriptor
    rundir.unlock_dir(d)


# --- status.json after an error, a second Ctrl-C, a signal while starting --------------------------------------

def test_an_error_mid_run_ends_status_as_failed(tmp_path, monkeypatch):
    from qatrun.pair import Pair

    real = Pair.step

    def step(self, i, x, y):
        if i == 7:
            raise RuntimeError("a crash at step 7")
        return real(self, i, x, y)

    monkeypatch.setattr(Pair, "step", step)
    got = outcome(train, make_cfg(*SMALL), tmp_path)
    assert isinstance(got, RuntimeError)
    assert status(tmp_path) == {"state": "failed", "step": 5, "steps": 12, "error": "a crash at step 7"}


def test_a_second_ctrl_c_stops_at_once_in_one_line(tmp_path, monkeypatch):
    from qatrun.pair import Pair

    real = Pair.step

    def step(self, i, x, y):
        if i == 7:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # mid-step: the second one must not wait
            time.sleep(0.1)
        return real(self, i, x, y)

    monkeypatch.setattr(Pair, "step", step)
    got = outcome(train, make_cfg(*SMALL), tmp_path)
    assert isinstance(got, Interrupted), repr(got)
    assert got.exit_code == 130 and "\n" not in str(got)
    assert str(got) == (f"interrupted (SIGINT, a second time: at once) with its last checkpoint at step 5 of 12; "
                        f"continue with: qatrun resume={tmp_path}")
    assert status(tmp_path) == {"state": "interrupted", "step": 5, "steps": 12, "signal": "SIGINT"}
    assert ckpt.load(tmp_path / "checkpoint.pt")["step"] == 5


def test_a_signal_while_starting_is_one_line(tmp_path, monkeypatch):
    import qatrun.train as tr

    real = tr.build_data

    def build_data(*a, **k):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
        return real(*a, **k)

    monkeypatch.setattr(tr, "build_data", build_data)
    got = outcome(train, make_cfg(*SMALL), tmp_path)
    assert isinstance(got, Interrupted) and got.exit_code == 130, repr(got)
    assert str(got) == ("interrupted (SIGINT, while starting) before its first checkpoint; nothing to continue: "
                        "run the command again")


@pytest.mark.slow
def test_ctrl_c_while_the_command_loads_is_one_line(tmp_path):
    proc = subprocess.Popen([*CLI, *T, f"hydra.run.dir={tmp_path / 'r'}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(0.7)  # torch is loading
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines() == ["qatrun: interrupted (SIGINT) while starting, before any step; nothing was "
                                        "computed: run the command again"]


def test_the_continue_command_is_quoted_for_a_shell(tmp_path):
    d = tmp_path / "a run's dir"
    line = str(Interrupted(signal.SIGTERM, 6, 60, d))
    assert shlex.split(line.split("continue with: ")[1]) == ["qatrun", f"resume={d}"]


# --- disk faults: TensorBoard's writer, a moved run directory, a too-long path ----------------------------------

def test_a_failing_tensorboard_writer_is_one_line_and_no_thread_traceback(tmp_path, monkeypatch):
    from tensorboard.summary.writer.record_writer import RecordWriter

    seen = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args))
    real = RecordWriter.write

    def write(self, data):  # the disk fills up after the first checkpoint
        if (tmp_path / "checkpoint.pt").exists():
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(RecordWriter, "write", write)
    got = outcome(train, make_cfg(*SMALL, "trainer.max_steps=40"), tmp_path)
    assert isinstance(got, TrainingError), repr(got)
    msg = str(got)
    assert "\n" not in msg and msg.startswith(f"no space left on device writing {tmp_path / 'tb'}/events.out.tfevents")
    assert "the last good checkpoint is" in msg
    assert not seen, [a.exc_value for a in seen]  # no "Exception in thread ..." from the writer
    assert status(tmp_path)["state"] == "failed"


def test_a_run_directory_moved_mid_run_names_where_it_went(tmp_path, monkeypatch):
    d, moved = tmp_path / "run", tmp_path / "moved"
    real = ckpt.save

    def save(run_dir, step, *a):
        real(run_dir, step, *a)
        if step == 5:
            os.rename(d, moved)

    monkeypatch.setattr(ckpt, "save", save)
    got = outcome(train, make_cfg(*SMALL), d)
    assert isinstance(got, TrainingError), repr(got)
    assert str(got).startswith(f"the run directory {d} was moved to {moved} while the run was going")
    assert f"the last good checkpoint is {moved / 'checkpoint.pt'}; continue with: qatrun resume={moved}" in str(got)
    assert ckpt.load(moved / "checkpoint.pt")["step"] == 5
    assert status(moved)["state"] == "failed"  # where it went, not left at running


def test_a_too_long_path_part_is_one_line(tmp_path):
    with pytest.raises(ValueError) as info:
        preflight.creatable(tmp_path / ("x" * 256) / "run", "hydra.run.dir")
    assert str(info.value).startswith("hydra.run.dir cannot be created: its part xxxx")
    assert "is 256 bytes long, more than the 255" in str(info.value)


# --- the CPU thread count in a run's identity -------------------------------------------------------------------

@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_cpu_thread_count_is_part_of_the_identity(threads):
    cfg = make_cfg()
    torch.set_num_threads(1)
    one = identity.of(cfg)
    torch.set_num_threads(2)
    two = identity.of(cfg)
    assert one.provenance["cpu_threads"] == 1 and two.provenance["cpu_threads"] == 2
    assert one.fingerprint != two.fingerprint
    # a summary saved before the count was recorded keeps its fingerprint and still counts as this run
    legacy = {k: v for k, v in one.provenance.items() if k != "cpu_threads"}
    from qatrun.config import fingerprint

    assert identity.matches(fingerprint(one.config, legacy), legacy, two)
    assert not identity.matches(one.fingerprint, one.provenance, two)
    gpu = identity.of(make_cfg("device=cuda"))  # composing needs no GPU; a GPU run records no CPU count
    assert "cpu_threads" not in gpu.provenance


def test_a_resume_with_another_thread_count_is_refused_in_one_line(tmp_path, threads):
    torch.set_num_threads(1)
    train(make_cfg("trainer.max_steps=4", "trainer.checkpoint_every=2"), tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["provenance"]["cpu_threads"] == 1
    torch.set_num_threads(2)
    with pytest.raises(ckpt.CheckpointError) as info:
        train(make_cfg("trainer.max_steps=4", "trainer.checkpoint_every=2"), tmp_path)
    assert str(info.value) == (f"cannot resume {tmp_path}: it ran on CPU with 1 thread(s), this process has 2, and CPU "
                               "results depend on the thread count; resume with OMP_NUM_THREADS=1, or start a new run")
    # a checkpoint saved before the count was recorded still resumes
    blob = ckpt.load(tmp_path / "checkpoint.pt")
    legacy = {k: v for k, v in blob["provenance"].items() if k != "cpu_threads"}
    ckpt.save(tmp_path, blob["step"], blob["config"], blob["state"], legacy)
    assert train(make_cfg("trainer.max_steps=4", "trainer.checkpoint_every=2"), tmp_path)["steps"] == 4


# --- a small synthetic test set ------------------------------------------------------------------------------------

SYNTH = ["dataset=synthetic", "dataset.num_classes=4", "dataset.image_size=16", "dataset.channels=3",
         "model.width=4", "model.hidden=8", "trainer.max_steps=2", "trainer.log_every=1", "trainer.eval_every=2",
         "trainer.checkpoint_every=2", "trainer.progress=false", "device=cpu"]


def test_a_small_synthetic_test_set_is_evaluated_in_one_short_batch(tmp_path):
    # the default evaluation batch (256) is larger than the 16 test samples: evaluated in full, as MNIST does
    s = train(make_cfg(*SYNTH, "dataset.length=64", "dataset.test_length=16", "dataset.batch_size=16", tiny=False),
              tmp_path)
    assert s["steps"] == 2
    from qatrun.data.synthetic import SyntheticData

    opts = dict(batch_size=8, eval_batch_size=8, num_classes=3, image_size=4, channels=1, length=16, test_length=20,
                signal=0.0)
    shape = SyntheticData.shape(**opts)
    data = SyntheticData("cpu", 0, 1, 0, shape, **opts)
    assert [len(y) for _, y in data.test_batches()] == [8, 8, 4]
    with pytest.raises(ValueError, match=r"dataset.batch_size=256 exceeds dataset.length=64, the training set"):
        SyntheticData.shape(**{**opts, "batch_size": 256, "length": 64})


# --- a joblib sweep stops as a run does ------------------------------------------------------------------------------

SWEEP = ["-m", "seed=0,1,2", *T, "trainer.max_steps=60", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def group_left(pgid: int) -> list[str]:
    """The processes of the group still alive (one that exited and awaits its reaping, Z, is not)."""
    out = subprocess.run(["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True).stdout
    return [l for l in out.splitlines() if l.split()[1] == str(pgid) and not l.split()[2].startswith("Z")]


@pytest.mark.slow
@pytest.mark.parametrize("whom", ["group", "main"])
def test_a_joblib_sweep_on_sigterm_stops_every_point_in_one_line(tmp_path, whom):
    s = tmp_path / "sweep"
    proc = subprocess.Popen([*CLI, *SWEEP, f"hydra.sweep.dir={s}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 300
    while not list(s.glob("*/checkpoint.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    if whom == "group":
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        os.kill(proc.pid, signal.SIGTERM)
    err = proc.communicate(timeout=300)[1]
    time.sleep(1)
    left = group_left(proc.pid)
    for line in left:  # never leave them behind, even when the test fails
        os.kill(int(line.split()[0]), signal.SIGKILL)
    assert not left, left
    assert proc.returncode == 143, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("qatrun: sweep interrupted (SIGTERM): 0 of 3 points finished") and "Traceback" not in err
    again = shlex.split(last.split("continue with: ")[1])
    assert again[0] == "qatrun" and again[-1] == f"hydra.sweep.dir={s}"
    states = {p.parent.name: status(p.parent)["state"] for p in s.glob("*/status.json")}
    assert states and set(states.values()) == {"interrupted"}, states
    if whom == "main":
        return
    out = subprocess.run([*CLI, *again[1:]], capture_output=True, text=True, timeout=600)  # continues the sweep
    assert out.returncode == 0, out.stderr[-3000:]
    done = {p.parent.name: json.loads(p.read_text()) for p in s.glob("*_seed=*/summary.json")}
    assert len(done) == 3
    # the resumed point is the run an uninterrupted process with the same thread count computes
    point = next(n for n in states if n.startswith("0_"))
    n = done[point]["provenance"]["cpu_threads"]
    ref = subprocess.run([*CLI, *T, "trainer.max_steps=60", "seed=0", f"hydra.run.dir={tmp_path / 'ref'}"],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": str(n)})
    assert ref.returncode == 0, ref.stderr[-2000:]
    assert (s / point / "summary.json").read_bytes() == (tmp_path / "ref" / "summary.json").read_bytes()
