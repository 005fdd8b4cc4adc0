"""Run-directory names: both estimators with the settings that tell them apart, read from each estimator's
own builder, the twin mode and the optimizer."""

from omegaconf import OmegaConf

from qatrun.estimators import ESTIMATORS, Estimator
from qatrun.runname import estimator_label, run_name


def name(**cfg) -> str:
    root = {"estimator": {"name": "tanh", "bits": 2, "k": None}, "twin_estimator": None, "pair": {"twin": "auto"},
            "optimizer": {"name": "sgd"}, **cfg}
    return run_name(_root_=OmegaConf.create(root))


def test_names_of_the_usual_runs():
    assert name() == "tanh_sgd"
    assert name(estimator={"name": "tanh", "bits": 4, "k": 18.0}) == "tanh-k18-4bit_sgd"
    assert name(pair={"twin": "self"}) == "tanh_vs-self_sgd"
    ab = name(estimator={"name": "custom", "bits": 2, "shape": "mypkg.shapes:sharp_bump", "resolution": 262144},
              twin_estimator={"name": "tanh", "bits": 2, "k": 2.5})
    assert ab == "custom-sharp_bump_vs-tanh-k2.5_sgd"  # the table resolution is the builder's default: unnamed


def test_an_estimator_names_its_runs_by_its_own_settings(monkeypatch):
    class Toy(Estimator):
        def __init__(self, grid, sharpness: float = 1.0, mode: str = "soft", clipped: bool = False):
            super().__init__(grid)

    monkeypatch.setitem(ESTIMATORS._items, "toy", Toy)
    monkeypatch.setitem(ESTIMATORS._meta, "toy", {})
    node = OmegaConf.create({"name": "toy", "bits": 2, "sharpness": 3.0, "mode": "hard", "clipped": True})
    assert estimator_label(node) == "toy-sharpness3-hard-clipped"
    assert estimator_label(OmegaConf.create({"name": "toy", "bits": 2, "sharpness": 1.0, "mode": "soft",
                                             "clipped": False})) == "toy"
