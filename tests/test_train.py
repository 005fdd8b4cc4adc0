"""End to end on MNIST subsets: invariants, the paper's predictions at small lr, outputs."""

import json
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from qatrun.train import train
from tests.conftest import TINY, make_cfg


def run(tmp_path, name, *overrides):
    return train(make_cfg(*overrides), tmp_path / name)


@pytest.fixture(scope="module")
def sgd_pairs(tmp_path_factory):
    d = tmp_path_factory.mktemp("sgd")
    small = ["optimizer.lr=0.005"]
    return {
        "auto": train(make_cfg(*small), d / "auto"),
        "ste": train(make_cfg(*small, "pair.twin=ste"), d / "ste"),
        "dir": d,
    }


@pytest.mark.slow
def test_step0_invariants(sgd_pairs):
    for key in ("auto", "ste"):
        h = sgd_pairs[key]["history"]
        ea = EventAccumulator(str(sgd_pairs["dir"] / key / "tb")).Reload()
        first = ea.Scalars("pair/quantized_agreement")[0]
        assert first.step == 0 and first.value == 1.0
        assert ea.Scalars("pair/alignment_distance")[0].value == 0.0
        assert len(h["log_step"]) == 4  # steps 5, 10, 15, 20


@pytest.mark.slow
def test_warped_sgd_pair_agrees_and_beats_unwarped_control(sgd_pairs):
    auto, ste = sgd_pairs["auto"], sgd_pairs["ste"]
    assert auto["twin_init"] == "mirror" and auto["twin_lr_factor"] == pytest.approx(0.609523, abs=1e-6)
    assert ste["twin_init"] == "identity" and ste["twin_lr_factor"] == 1.0
    # Over the weights that moved (an untrained twin would already score ~0.995 over all weights):
    n_movers = auto["pair/mover_fraction"] * 18720  # quantized weights of the small CNN
    assert n_movers >= 50  # enough movers for the fractions below to mean something
    assert ste["pair/mover_fraction"] == pytest.approx(auto["pair/mover_fraction"], rel=0.5)
    assert auto["pair/mover_agreement"] >= 0.95
    assert auto["pair/mover_agreement"] > ste["pair/mover_agreement"] + 0.25  # the warp matters
    assert auto["pair/mover_agreement"] > auto["pair/mover_agreement_untrained"] + 0.5  # and beats no training
    assert auto["pair/mover_sequence_agreement"] > ste["pair/mover_sequence_agreement"] + 0.25
    # The same quantity for both pairs: through M for the warped one, and for the control too.
    assert auto["pair/alignment_error_mirror"] < ste["pair/alignment_error_mirror"]
    assert auto["pair/alignment_error"] == auto["pair/alignment_error_mirror"]
    assert ste["pair/alignment_error"] == ste["pair/alignment_error_identity"]
    assert auto["alignment_map"] == "mirror" and ste["alignment_map"] == "identity"


@pytest.mark.slow
def test_adam_pair_is_unwarped(tmp_path):
    s = run(tmp_path, "adam", "optimizer=adam", "optimizer.lr=1e-3")
    assert s["twin_init"] == "identity" and s["twin_lr_factor"] == 1.0
    assert s["alpha"] == pytest.approx(0.609523, abs=1e-6)
    assert s["pair/mover_fraction"] * 18720 >= 200  # Adam at 1e-3 moves ~5% of the weights in 20 steps
    assert s["pair/mover_agreement"] >= 0.95  # the plain STE twin tracks the movers
    assert s["pair/mover_agreement"] > s["pair/mover_agreement_untrained"] + 0.5
    assert s["pair/quantized_agreement_untrained"] < 0.99  # so overall agreement alone would say little


@pytest.mark.slow
def test_event_file_and_summary(sgd_pairs):
    d = sgd_pairs["dir"] / "auto"
    ea = EventAccumulator(str(d / "tb"), size_guidance={"histograms": 0, "tensors": 0}).Reload()
    tags = set(ea.Tags()["scalars"])
    need = {"pair/quantized_agreement", "pair/alignment_error", "pair/inference_agreement", "est/loss", "twin/loss",
            "est/test_acc", "twin/test_acc", "est/lr", "twin/lr", "layers/conv1/quantized_agreement",
            "layers/conv2/quantized_agreement", "pair/mover_agreement", "pair/mover_agreement_untrained",
            "pair/quantized_agreement_untrained", "pair/alignment_error_mirror", "pair/alignment_error_identity",
            "layers/conv1/mover_fraction", "layers/conv2/mover_agreement", "layers/conv2/mover_fraction",
            "layers/conv2/mover_agreement_untrained"}  # conv1 (288 weights) may have no mover: NaN, not logged
    assert need <= tags, need - tags
    # per-layer movers add up to the overall fraction (18720 weights: conv1 288, conv2 18432)
    last = lambda tag: ea.Scalars(tag)[-1].value
    total = (288 * last("layers/conv1/mover_fraction") + 18432 * last("layers/conv2/mover_fraction")) / 18720
    assert total == pytest.approx(last("pair/mover_fraction"), rel=1e-6) and total > 0
    assert "layers/conv2/alignment_residual" in ea.Tags()["histograms"]
    assert any("config" in t for t in ea.Tags()["tensors"])  # resolved config as text
    summary = json.loads((d / "summary.json").read_text())
    for key in ("pair/quantized_agreement", "pair/alignment_error", "pair/inference_agreement", "est/test_acc",
                "alpha", "twin_lr_factor", "twin_init", "steps", "seed", "config"):
        assert key in summary, key
    assert summary["steps"] == 20 and summary["config"]["optimizer"]["lr"] == 0.005
    # the twin's quantized weights train at alpha * lr (their own group), the estimator run's at lr
    est_lr = {p.step: p.value for p in ea.Scalars("est/lr")}
    twin_lr = {p.step: p.value for p in ea.Scalars("twin/lr")}
    assert max(est_lr.values()) == pytest.approx(0.005, rel=0.2)
    for step, v in est_lr.items():
        assert twin_lr[step] == pytest.approx(0.609523 * v, rel=1e-5, abs=1e-12)


def test_twin_lr_groups(cfg_factory, tmp_path):
    from qatrun.pair import resolve_twin
    from qatrun import estimators

    est = estimators.create("tanh", bits=2)
    spec = resolve_twin("auto", est, optimizer_warps=True)
    assert spec.init == "mirror" and spec.lr_factor == pytest.approx(est.alpha)
    for mode, init, factor in [("warp_init", "mirror", 1.0), ("warp_lr", "identity", est.alpha),
                               ("ste", "identity", 1.0), ("full", "mirror", est.alpha)]:
        s = resolve_twin(mode, est, optimizer_warps=False)
        assert (s.init, s.lr_factor) == (init, pytest.approx(factor))
    with pytest.raises(ValueError, match="outside the paper's class"):
        resolve_twin("auto", estimators.create("ewgs", bits=2), optimizer_warps=True)
    with pytest.raises(ValueError, match="valid: auto, none"):
        resolve_twin("nope", est, optimizer_warps=True)


@pytest.mark.slow
def test_multirun_one_summary_per_job(tmp_path):
    cmd = [sys.executable, "-m", "qatrun", "-m", "optimizer=sgd,adam", "estimator.k=2.5,5.5",
           *[t.replace("max_steps=20", "max_steps=4") for t in TINY], "trainer.changepoints=false",
           f"hydra.sweep.dir={tmp_path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    summaries = sorted(p for p in tmp_path.glob("*/summary.json") if p.parent.name != "report")  # report/: the sweep's table
    assert len(summaries) == 4
    combos = {(json.loads(p.read_text())["config"]["optimizer"]["name"], json.loads(p.read_text())["config"]["estimator"]["k"])
              for p in summaries}
    assert combos == {("sgd", 2.5), ("sgd", 5.5), ("adam", 2.5), ("adam", 5.5)}


@pytest.mark.slow
def test_compiled_pair_matches_eager(tmp_path):
    """compile=true (torch.compile of each model) gives the eager figures within fp tolerance."""
    common = ["trainer.max_steps=3", "trainer.eval_every=3", "trainer.changepoints=false"]
    eager = run(tmp_path, "eager", *common)
    compiled = run(tmp_path, "compiled", *common, "compile=true")
    for key in ("pair/quantized_agreement", "est/test_acc", "twin/test_acc"):
        assert compiled[key] == pytest.approx(eager[key], abs=2e-3), key
    assert compiled["pair/alignment_error"] == pytest.approx(eager["pair/alignment_error"], rel=0.05)


@pytest.mark.slow
def test_compiled_pairs_of_two_estimators_in_one_process(tmp_path):
    """A sweep runs its jobs in one process: a compiled 1-bit pair, then a compiled 4-bit one (dynamo's
    caches from the first used to fail the second with an AssertionError inside torch._dynamo)."""
    common = ["trainer.max_steps=2", "trainer.eval_every=2", "trainer.changepoints=false", "compile=true"]
    one = run(tmp_path, "bits1", *common, "estimator.bits=1")
    four = run(tmp_path, "bits4", *common, "estimator.bits=4")
    assert one["config"]["estimator"]["bits"] == 1 and four["config"]["estimator"]["bits"] == 4
    assert four["steps"] == 2 and 0.0 <= four["pair/quantized_agreement"] <= 1.0


@pytest.mark.slow
def test_curve_correlations_need_five_points(sgd_pairs, tmp_path):
    few = sgd_pairs["auto"]  # 4 logged losses (steps 5..20), 3 evals (0, 10, 20): nothing to correlate
    assert len(few["history"]["log_step"]) == 4
    assert few["pair/corr_train_loss"] is None and few["pair/corr_test_acc"] is None
    many = run(tmp_path, "many", "optimizer.lr=0.005", "trainer.log_every=2", "trainer.max_steps=10",
               "trainer.changepoints=false")
    assert len(many["history"]["log_step"]) == 5 and isinstance(many["pair/corr_train_loss"], float)
