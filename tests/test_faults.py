"""Faults a trial found: a malformed summary, a huge alpha, explode-then-settle runs, header-less or
misshapen checkpoints. Each ends in one line (or a note), and nothing is lost."""

import json
import math
import subprocess
import sys

import pytest
import torch

from qatrun import checkpoint as ckpt
from qatrun import estimators as E
from qatrun import report
from qatrun.health import divergence
from tests.conftest import make_cfg

CLI = [sys.executable, "-m", "qatrun"]
# The trial's small settings (MNIST subsets, CPU).
T = ["dataset.train_subset=600", "dataset.test_subset=200", "dataset.batch_size=60", "trainer.checkpoint_every=5",
     "trainer.progress=false", "device=cpu"]


def one_line(fn, *args, error=ValueError, **kwargs) -> str:
    with pytest.raises(error) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


# --- a malformed summary is skipped with a note naming its path and field ---------------------------------------

def _set(path, value):
    def edit(s):
        *parents, last = path
        node = s
        for p in parents:
            node = node[p]
        node[last] = value
    return edit


MALFORMED = {
    "loss_strings": (_set(["history", "est/loss"], ["a", "b", "c"]), "history 'est/loss' holds 'a'"),
    "lr_fast": (_set(["config", "optimizer", "lr"], "fast"), "config 'optimizer.lr' is 'fast'"),
    "steps_negative": (_set(["steps"], -1), "'steps' is -1: valid is an integer >= 0"),
    "bits_text": (_set(["config", "estimator", "bits"], "two"), "config 'estimator.bits' is 'two'"),
    "role_list": (_set(["twin_role"], ["warped"]), "'twin_role' is ['warped']: valid is a string or null"),
    "diverged_text": (_set(["diverged"], "no"), "'diverged' is 'no'"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_summary_is_skipped_with_a_note_naming_its_path_and_field(tmp_path, case):
    from tests.test_report import write_run

    edit, field = MALFORMED[case]
    write_run(tmp_path / "runs" / "good", weights=False)
    write_run(tmp_path / "runs" / "bad", seed=1, weights=False)
    path = tmp_path / "runs" / "bad" / "summary.json"
    s = json.loads(path.read_text())
    edit(s)
    path.write_text(json.dumps(s))
    res = report.report([tmp_path / "runs"], tmp_path / "out", formats=["png"])
    assert [c["runs"] for c in res["comparisons"]] == [[str(tmp_path / "runs" / "good")]]
    (note,) = [n for n in res["notes"] if str(path) in n]
    assert field in note and note.endswith("skipped"), note


def test_a_report_into_a_path_under_a_file_is_one_line(tmp_path, capsys):
    from tests.test_report import write_run

    write_run(tmp_path / "runs" / "good", weights=False)
    (tmp_path / "file").write_text("x")
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "file" / "x"), "--no-pairs"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"qatrun-report: cannot write {tmp_path / 'file' / 'x'}: Not a directory (--out must")


# --- alpha bounded from above; a shape that is a graph ------------------------------------------------------------

def huge_shape(u):
    return 1e38 * (1 + 0.5 * torch.cos(2 * math.pi * u))


_W = torch.ones((), dtype=torch.float64, requires_grad=True)


def graph_shape(u):
    return (1 + 0.5 * torch.cos(2 * math.pi * u)) * _W


def test_an_alpha_above_the_ceiling_is_refused_in_one_line():
    msg = one_line(E.create, "custom", bits=2, shape=huge_shape)
    assert "alpha = 8.66e+37 is above the ceiling ALPHA_CEILING = 1e+06" in msg and "scale the shape down" in msg
    assert "above the ceiling" in one_line(E.create, "pwl", bits=2, alpha=1e7)
    from qatrun.estimators.alpha import ALPHA_CEILING

    assert E.create("pwl", bits=2, alpha=ALPHA_CEILING).alpha == ALPHA_CEILING  # the ceiling itself is allowed
    scaled = lambda u: 1e5 * (1 + 0.5 * torch.cos(2 * math.pi * u))  # noqa: E731
    assert E.create("custom", bits=2, shape=scaled).alpha == pytest.approx(0.866e5, rel=1e-3)


def test_a_shape_returning_a_tensor_that_requires_grad_is_refused_in_one_line():
    msg = one_line(E.create, "custom", bits=2, shape=graph_shape)
    assert "'graph_shape' returned a tensor that requires grad" in msg and "detach it" in msg


@pytest.mark.slow
@pytest.mark.parametrize("shape, words", [("huge_shape", "above the ceiling"), ("graph_shape", "requires grad")])
def test_the_cli_refuses_such_a_shape_at_preflight(tmp_path, shape, words):
    d = tmp_path / "run"
    out = subprocess.run([*CLI, *T, "trainer.max_steps=10", "estimator=custom",
                          f"estimator.shape=tests.test_faults:{shape}", f"hydra.run.dir={d}"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    (line,) = [line for line in out.stderr.splitlines() if line.strip()]
    assert line.startswith("qatrun: error:") and words in line
    assert not d.exists()  # refused before anything was written


# --- explode-then-settle runs are flagged ---------------------------------------------------------------------------

# The curves of `qatrun $T trainer.max_steps=20 optimizer.lr=3` (the trial's run, exit 0, diverged: false).
LR3 = {"log_step": [10, 20], "est/loss": [28.847, 3.6537], "twin/loss": [9626.6, 5.7785], "eval_step": [0, 20],
       "est/test_loss": [2.3489, 2.5421], "twin/test_loss": [2.3489, 3.2024]}


def test_a_run_that_exploded_and_settled_at_chance_is_flagged():
    why = divergence(LR3, {"est/test_acc": 0.085, "twin/test_acc": 0.08}, ("est", "twin"), 10)
    assert why.startswith("the est run's loss went up to 28.85, 12.3x where it started (2.349: its test loss at step 0")
    assert "the twin run's loss went up to 9627" in why and "ended at chance (0.08," in why
    # the same curves with a run that learned after all: not chance, not flagged
    assert divergence(LR3, {"est/test_acc": 0.6, "twin/test_acc": 0.55}, ("est", "twin"), 10) is None
    # lr 10: ends 3.25x above the step-0 loss (the first logged loss, 205, hid it)
    lr10 = {"est/loss": [204.56, 7.6421], "eval_step": [0, 20], "est/test_loss": [2.3489, 5.8608]}
    assert "ended at 7.642, 3.25x where it started (2.349" in divergence(lr10, {"est/test_acc": 0.14}, ("est",), 10)
    # a short run that has not learned yet, never far above where it started: not flagged
    short = {"est/loss": [2.31, 2.29], "eval_step": [0, 10], "est/test_loss": [2.35, 2.30]}
    assert divergence(short, {"est/test_acc": 0.1}, ("est",), 10) is None


@pytest.mark.slow
def test_the_lr_3_run_exits_diverged(tmp_path):
    d = tmp_path / "run"
    out = subprocess.run([*CLI, *T, "trainer.max_steps=20", "optimizer.lr=3", f"hydra.run.dir={d}"],
                         capture_output=True, text=True, timeout=600)
    summary = json.loads((d / "summary.json").read_text())
    assert out.returncode == 3 and summary["diverged"] is True, out.stderr[-2000:]
    assert "ended at chance" in summary["diverged_why"]


# --- checkpoints: no digest line, a digest but the wrong layout, a digest mismatch that shows -----------------------

STATE = {"pair": {}, "history": {}}


def saved(tmp_path, state=STATE, step=5):
    ckpt.save(tmp_path, step, {"seed": 0}, state)
    return tmp_path / ckpt.NAME


def test_a_checkpoint_without_its_sha256_line_is_refused_and_kept(tmp_path):
    path = saved(tmp_path)
    payload = bytearray(path.read_bytes().partition(b"\n")[2])
    path.write_bytes(bytes(payload))
    msg = one_line(ckpt.load, path, error=ckpt.CheckpointError)
    assert "has no sha256 line" in msg and "left untouched" in msg
    payload[len(payload) // 2] ^= 0x01
    path.write_bytes(bytes(payload))
    with pytest.raises(ckpt.CheckpointError, match="has no sha256 line|unreadable"):
        ckpt.load(path)
    assert path.read_bytes() == bytes(payload)


@pytest.mark.parametrize("blob, words", [
    ({"state": [1, 2]}, "state is not a dict"),
    ({"state": {"pair": [], "history": {}}}, "state is not a dict"),
    ({"step": "5"}, "step is '5'"),
    ({"config": "[1]"}, "config is not a JSON object"),
    ({"rng": {}}, "rng holds no CPU generator state"),
])
def test_a_checkpoint_with_its_digest_but_the_wrong_layout_is_one_line(tmp_path, blob, words, monkeypatch):
    real = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: real({**obj, **blob}, f))  # what save writes, altered
    path = saved(tmp_path)
    monkeypatch.undo()
    msg = one_line(ckpt.load, path, error=ckpt.CheckpointError)
    assert "has its sha256 but not the layout qatrun writes" in msg and words in msg


def test_a_state_that_does_not_fit_the_run_is_one_line(tmp_path):
    from qatrun.train import train

    cfg = make_cfg("trainer.max_steps=2", "trainer.checkpoint_every=2")
    train(cfg, tmp_path)
    blob = ckpt.load(tmp_path / ckpt.NAME)
    blob["state"]["pair"]["optims"] = [[1, 2]]  # a list where the optimizer's state dict goes
    ckpt.save(tmp_path, blob["step"], blob["config"], blob["state"], blob["provenance"])
    msg = one_line(train, cfg, tmp_path, error=ckpt.CheckpointError)  # the re-run resumes from it
    assert "has its sha256 but its state does not fit this run" in msg


def test_a_digest_mismatch_shows_where_the_digests_differ(tmp_path):
    path = saved(tmp_path)
    head, _, payload = path.read_bytes().partition(b"\n")
    digest = head[len(ckpt.MAGIC):].decode()
    wrong = digest[:20] + ("0" if digest[20] != "0" else "1") + digest[21:]
    path.write_bytes(ckpt.MAGIC + wrong.encode() + b"\n" + payload)
    msg = one_line(ckpt.load, path, error=ckpt.CheckpointError)
    assert f"saved {wrong[:21]}..., now {digest[:21]}..." in msg
    path.write_bytes(ckpt.MAGIC + digest.encode() + b"\r\n" + payload)  # a line ending changed on the way
    assert "\\r..." in one_line(ckpt.load, path, error=ckpt.CheckpointError)


# --- no test leaves a thread that raises ------------------------------------------------------------------------------

@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_run_directory_removed_mid_run_leaves_no_thread_raising(tmp_path, monkeypatch):
    """TensorBoard's writer thread fails on the removed directory; the run ends in its one line, and the
    thread's OSError reaches nobody (it was a PytestUnhandledThreadExceptionWarning at the end of the suite)."""
    import shutil

    from qatrun.errors import TrainingError
    from qatrun.train import train

    run, real = tmp_path / "run", ckpt.save

    def save_then_remove(d, step, *a):
        real(d, step, *a)
        shutil.rmtree(run)

    monkeypatch.setattr(ckpt, "save", save_then_remove)
    with pytest.raises(TrainingError, match="was removed while the run was going"):
        train(make_cfg("trainer.max_steps=4", "trainer.checkpoint_every=2"), run)
