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
