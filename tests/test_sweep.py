"""Sweeps (issue 12): every point checked before launch, a failing point does not stop the others,
progress and the report table through the Hydra callback, directory names that say what ran."""

import json

import pytest

from qatrun.metrics.names import HEADLINE
from qatrun.sweep import progress
from tests.conftest import TINY
from tests.test_cli import refused, run_in

SHORT = [t for t in TINY if not t.startswith(("trainer.max_steps", "trainer.log_every", "trainer.eval_every"))] + [
    "trainer.max_steps=4", "trainer.log_every=2", "trainer.eval_every=4", "trainer.warmup_frac=0"]


def test_progress_line():
    assert progress(1, 4, 5.0) == "job 1/4, elapsed 0m05s"
    assert progress(3, 4, 120.0) == "job 3/4, elapsed 2m00s, about 2m00s left"  # 60 s a job, 2 to go


@pytest.mark.slow
def test_bad_points_are_listed_and_nothing_launches(tmp_path):
    line = refused(tmp_path, "-m", *SHORT, "estimator.bits=3,2", "optimizer.lr=0.01,-1")
    assert "3 of 4 sweep points are invalid; nothing was launched" in line
    out = run_in(tmp_path, "-m", *SHORT, "estimator.bits=3,2", "optimizer.lr=0.01,-1")
    assert "[estimator.bits=3 optimizer.lr=0.01] estimator=tanh: no default sharpness k for 3 bits" in out.stderr
    assert "[estimator.bits=2 optimizer.lr=-1] optimizer.lr must be positive" in out.stderr
    assert "[estimator.bits=2 optimizer.lr=0.01]" not in out.stderr  # the good point is not listed


@pytest.mark.slow
def test_resume_in_a_sweep_is_refused(tmp_path):
    assert "to resume a sweep, run the same sweep again" in refused(tmp_path, "-m", "seed=0,1", f"resume={tmp_path}")


@pytest.mark.slow
def test_a_failing_point_does_not_stop_the_sweep(tmp_path):
    out = run_in(tmp_path, "-m", *SHORT, "optimizer.lr=1e30,0.01", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert out.returncode == 1, out.stderr[-2000:]
    bad, good = tmp_path / "sweep" / "0_optimizer.lr=1e+30", tmp_path / "sweep" / "1_optimizer.lr=0.01"
    assert "NaN or Inf at step 2" in (bad / "error.txt").read_text() and not (bad / "summary.json").exists()
    assert json.loads((good / "summary.json").read_text())["steps"] == 4
    assert "[sweep] job 1/2, elapsed" in out.stderr and "[sweep] job 2/2, elapsed" in out.stderr and " left: " in out.stderr
    assert "1 sweep point(s) failed" in out.stderr and "0_optimizer.lr=1e+30: the est run's loss became NaN" in out.stderr
    table = (tmp_path / "sweep" / "report" / "table.md").read_text()
    assert table.count("\n| tanh(k=5.5) vs STE, 2 bits, warped twin; sgd (warp rule)") == 1 and table.splitlines()[-1] in out.stdout  # printed and written
    from qatrun.report.runs import find_runs

    assert [r.path for r in find_runs([tmp_path / "sweep"], [])] == [good]  # the report's summary is no run


@pytest.mark.slow
def test_a_retried_point_that_succeeds_is_no_longer_failed(tmp_path):
    """Running a sweep again retries its failed points; one that now finishes drops its old error.txt."""
    job = tmp_path / "sweep" / "0_"
    job.mkdir(parents=True)
    (job / "error.txt").write_text("\nAssertionError: from the last try\n")
    out = run_in(tmp_path, "-m", *SHORT, f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert not (job / "error.txt").exists() and json.loads((job / "summary.json").read_text())["steps"] == 4
    assert "failed" not in out.stderr


@pytest.mark.slow
def test_joblib_launcher_runs_points_in_parallel(tmp_path):
    out = run_in(tmp_path, "-m", *SHORT, "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                 f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert out.returncode == 0, out.stderr[-2000:]
    seeds = [json.loads((tmp_path / "sweep" / f"{i}_seed={i}" / "summary.json").read_text())["seed"] for i in (0, 1)]
    assert seeds == [0, 1]
    row = "| tanh(k=5.5) vs STE, 2 bits, warped twin; sgd (warp rule), lr=0.01 |"
    assert row in (tmp_path / "sweep" / "report" / "table.md").read_text()  # both seeds in one row
    from tests.test_pair_names import _experiment

    (exp,) = _experiment(tmp_path / "sweep" / "hparams")  # the sweep's HParams: what differs first, checked
    assert [h.name for h in exp.hparam_infos if h.differs] == ["seed"] and exp.metric_infos[0].name.tag == HEADLINE
    assert not _experiment(tmp_path / "sweep" / "0_seed=0" / "tb")  # a run writes its session, not an experiment


@pytest.mark.slow
def test_single_run_named_by_estimator_and_optimizer(tmp_path):
    out = run_in(tmp_path, *SHORT, "estimator=pwl", "optimizer=adam")
    assert out.returncode == 0, out.stderr[-2000:]
    (run,) = [p.parent for p in tmp_path.glob("outputs/*/*/summary.json")]
    assert run.name.endswith("_pwl_adam")


@pytest.mark.slow
def test_failure_before_the_first_step_leaves_no_run_directory(tmp_path):
    empty = tmp_path / "no_data"
    empty.mkdir()
    out = run_in(tmp_path, *SHORT, f"dataset.root={empty}", "dataset.download=false")
    assert out.returncode == 2 and "MNIST is not available" in out.stderr
    assert list(tmp_path.rglob(".hydra")) == []
