"""Verdict families: a seed repeated under another experiment name counts once."""

import json

from qatrun import report
from tests.test_report import family


def test_a_repeated_seed_counts_once(tmp_path):
    roles = {"warped": 0.97, "no_warp": 0.70, "jitter": 0.98}
    (before,) = family(tmp_path / "a", roles)["verdicts"]
    # the lr law repeats seed 0 of the warped run under experiment_name=lr_law, with another figure
    src = tmp_path / "a" / "warped" / "0" / "summary.json"
    dup = tmp_path / "a" / "zz_lr_law" / "0"
    dup.mkdir(parents=True)
    s = json.loads(src.read_text())
    s["config"]["experiment_name"], s["pair/mover_agreement"] = "lr_law", 0.10
    (dup / "summary.json").write_text(json.dumps(s))
    (after,) = report.report([tmp_path / "a"], tmp_path / "out2", formats=["png"], pair_figs=False)["verdicts"]
    assert after["gap_closed"] == before["gap_closed"] and after["verdict"] == "supports"
    assert "(2 seeds)" in after["text"]


def _adaptive_family(root, with_role: bool):
    """RMSprop runs: the plain STE twin (the predicted one under an identity rule) and the jitter floor."""
    from tests.test_report import write_run

    for name, twin, scale, agree, role in (("plain", "auto", 1.0, 0.97, "plain_ste"), ("jitter", "self", 1.01, 0.98,
                                                                                          "jitter")):
        d = root / name / "0"
        write_run(d, twin=twin, seed=0, weights=False)
        s = json.loads((d / "summary.json").read_text())
        s.update({"twin_init": "identity", "twin_lr_factor": 1.0, "twin_lr_scale": scale, "pair/mover_agreement": agree,
                  "pair/mover_fraction": 0.04, "pair/mover_agreement_untrained": 0.08})
        if with_role:
            s.update({"twin_role": role, "twin_predicted": role == "plain_ste", "twin_rule": "identity"})
        s["config"]["pair"] = {"twin": twin, "twin_lr_scale": scale}
        s["config"]["optimizer"] = {"name": "rmsprop", "lr": 0.001}
        (d / "summary.json").write_text(json.dumps(s))
    return report.report([root], root / "out", formats=["png"], pair_figs=False)["verdicts"]


def test_roles_come_from_the_summarys_twin_role(tmp_path):
    """A new adaptive optimizer's predicted twin is read from twin_role; a summary written before twin_role
    gets the same role from its optimizer's twin rule in the registry (not from its name: rmsprop is no adam)."""
    (v,) = _adaptive_family(tmp_path / "new", with_role=True)
    assert v["optimizer"] == "rmsprop" and "the plain STE twin (same init, same lr)" in v["text"]
    assert v["verdict"] == "supports"  # 97% against an untrained 8% and a jitter floor of 98%
    (old,) = _adaptive_family(tmp_path / "old", with_role=False)
    assert old["verdict"] == "supports" and old["text"] == v["text"]


def test_old_summaries_without_twin_role_keep_their_roles(tmp_path):
    from tests.test_report import family

    (v,) = family(tmp_path, {"warped": 0.97, "no_warp": 0.70, "jitter": 0.98})["verdicts"]
    assert v["verdict"] == "supports" and "warped pair" in v["text"]


def test_no_verdict_when_the_jitter_floor_is_at_the_untrained_twin(tmp_path):
    """ResNet-18 on MNIST: every twin, the jitter floor included, below an untrained twin (0.08 here). The warped
    pair closing '111%' of a 1.6-point gap between the unadjusted twin and that floor is noise, not support."""
    from tests.test_report import family

    (v,) = family(tmp_path, {"warped": 0.0700, "no_warp": 0.0540, "jitter": 0.0680})["verdicts"]
    assert v["gap_closed"] is None and v["verdict"].startswith("no verdict (the jitter floor is not above the "
                                                                 "untrained twin")
    (v,) = family(tmp_path / "above", {"warped": 0.0900, "no_warp": 0.0540, "jitter": 0.0950})["verdicts"]
    assert v["verdict"] == "supports"  # a floor above the untrained twin's 8%: a verdict again
