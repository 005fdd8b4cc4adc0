"""A against B (arXiv 2405.05171: two estimators of the class are each other in disguise), end to end on
MNIST subsets: the STE twin as a special case, A-B pairs, asymmetric shapes, the literature estimators."""

from unittest import mock

import pytest
import torch

from qatrun import estimators as E
from qatrun.pair import resolve_twin
from qatrun.train import train
from tests.conftest import make_cfg

SMALL = ["optimizer.lr=0.005", "trainer.changepoints=false"]


def run(tmp_path, name, *overrides):
    return train(make_cfg(*SMALL, *overrides), tmp_path / name)


@pytest.mark.slow
def test_an_explicit_ste_twin_estimator_is_todays_twin_exactly(tmp_path):
    today = run(tmp_path, "auto")
    explicit = run(tmp_path, "ste", "estimator@twin_estimator=ste")
    for key in today:
        if key not in ("config", "wall_s", "fingerprint", "provenance"):  # the configs differ by design
            assert explicit[key] == today[key], key
    assert today["twin_estimator"] == "ste" and today["twin_map"] == "tanh(k=5.5)"


@pytest.mark.slow
def test_tanh_against_tanh(tmp_path):
    """tanh k=5.5 against tanh k=2.5: warped, the twin starts at M_B^{-1}(M_A(w0)) and trains at
    alpha_A / alpha_B times the lr, and tracks the run far better than unwarped."""
    B = ["estimator@twin_estimator=tanh", "twin_estimator.k=2.5"]
    full = run(tmp_path, "full", *B)
    nowarp = run(tmp_path, "nowarp", *B, "pair.twin=nowarp")
    a, b = E.create("tanh", bits=2, k=5.5).alpha, E.create("tanh", bits=2, k=2.5).alpha
    assert full["twin_lr_factor"] == pytest.approx(a / b) and full["alpha_twin"] == pytest.approx(b)
    assert (full["estimator"], full["twin_estimator"], full["twin_map"]) == ("tanh", "tanh(k=2.5)", "tanh(k=5.5)")
    assert (nowarp["twin_init"], nowarp["twin_lr_factor"]) == ("identity", 1.0)
    assert full["pair/alignment_error"] < 0.2 * nowarp["pair/alignment_error"]
    assert full["pair/quantized_agreement"] > nowarp["pair/quantized_agreement"]


def test_adam_twin_estimator_starts_at_w0_with_the_same_lr():
    A, B = E.create("tanh", bits=2), E.create("custom", bits=2, shape="qatrun.shapes.cosine")
    spec = resolve_twin("auto", A, optimizer_warps=False, twin_estimator=B)
    assert (spec.init, spec.lr_factor, spec.estimator.name, spec.source) == ("identity", 1.0, "custom", None)


def test_twin_estimator_errors():
    A = E.create("tanh", bits=2)
    with pytest.raises(ValueError, match="must match .*twin_estimator.bits=2"):
        resolve_twin("auto", A, True, twin_estimator=E.create("tanh", bits=4))
    with pytest.raises(ValueError, match="pair.twin=ste does not use a twin estimator.*nowarp"):
        resolve_twin("ste", A, True, twin_estimator=E.create("pwl", bits=2, alpha=0.5))
    with pytest.raises(ValueError, match="outside the paper's class"):
        resolve_twin("full", A, True, twin_estimator=E.create("ewgs", bits=2, delta=0.2))
    assert resolve_twin("nowarp", A, True, twin_estimator=E.create("ewgs", bits=2, delta=0.2)).init == "identity"


@pytest.mark.slow
def test_asymmetric_shape_aligns_as_well_as_a_symmetric_one(tmp_path):
    """``sine`` is ``cosine`` moved a quarter bin (same alpha): M moves the clipping edges, so the twin must
    pass gradients on [M(-m), M(m)]. With that, it aligns about as well as the symmetric shape; with the
    plain [-m, m] it is far worse."""
    sym = run(tmp_path, "cos", "estimator=custom", "estimator.shape=qatrun.shapes.cosine")
    asym = run(tmp_path, "sin", "estimator=custom", "estimator.shape=qatrun.shapes.sine")
    assert asym["twin_clip"] == pytest.approx([-8 / 9, 10 / 9], abs=1e-6) and sym["twin_clip"] == [-1.0, 1.0]
    with mock.patch.object(E.PeriodicEstimator, "with_clip", lambda self, lo, hi, extension="shift": self):
        plain = run(tmp_path, "sin_plain", "estimator=custom", "estimator.shape=qatrun.shapes.sine")
    assert asym["pair/alignment_error"] < 1.5 * sym["pair/alignment_error"]
    assert plain["pair/alignment_error"] > 3 * asym["pair/alignment_error"]


def test_clip_range_passes_gradients_between_m_and_the_mapped_edge():
    twin = resolve_twin("auto", E.create("custom", bits=2, shape="qatrun.shapes.sine"), True).estimator
    m = 0.5
    w = torch.tensor([-0.46, -0.44, 0.3, 0.54, 0.56])  # clip [-0.444 m, ..]: -0.46 and 0.56 are outside
    assert twin.grad(w, m).tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["qnet", "approxsign", "dsq_anneal"])
def test_literature_presets_train_against_their_twins(tmp_path, preset):
    s = run(tmp_path, preset, f"experiment={preset}", "trainer.max_steps=5", "trainer.eval_every=5")
    assert s["pair/quantized_agreement"] > 0.9 and s["est/test_acc"] > 0.1
    assert s["twin_estimator"] == "ste"
    assert (s["twin_map"] is None) == (preset == "approxsign")
