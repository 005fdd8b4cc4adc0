"""Issue 23, report side: only summaries the report can vouch for are read (item 4), and one result computed
twice is counted once (item 3)."""

import json
import shutil

import pytest

from qatrun import report
from qatrun.report.runs import find_runs, summary_problem
from tests.test_report import write_run

# what a stray summary.json can hold, and the reason the note gives
STRAYS = {"object": ('{"a": 1}', "no 'steps'"), "null": ("null", "a JSON null"), "list": ("[1, 2]", "a JSON list"),
          "config": ('{"config": "x"}', "no 'steps'"), "broken": ('{"steps": 3, ', "not JSON")}


def strays(root):
    for name, (text, _) in STRAYS.items():
        (root / name).mkdir(parents=True)
        (root / name / "summary.json").write_text(text)


def test_stray_summaries_are_skipped_with_one_note_each(tmp_path):
    write_run(tmp_path / "runs" / "good", weights=False)
    strays(tmp_path / "runs")
    res = report.report([tmp_path / "runs"], tmp_path / "out", formats=["png"])
    (comp,) = res["comparisons"]
    assert comp["n_seeds"] == 1 and comp["runs"] == [str(tmp_path / "runs" / "good")]
    for name, (_, why) in STRAYS.items():
        path = str(tmp_path / "runs" / name / "summary.json")
        (note,) = [n for n in res["notes"] if path in n]
        assert why in note and note.endswith("skipped"), note
    assert "| run |" not in (tmp_path / "out" / "table.md").read_text()  # {"a": 1} is no row of dashes


def test_a_summary_with_the_right_keys_but_wrong_types_is_refused():
    good = {"steps": 30, "seed": 0, "estimator": "tanh", "pair/logit_mse": None, "alpha": 0.6, "history": {"x": [1]}}
    assert summary_problem(good) is None
    assert summary_problem({**good, "config": "x"}) == "'config' is a str, not an object"
    assert summary_problem({**good, "steps": "30"}) == "'steps' is '30', not an integer"
    assert summary_problem({**good, "seed": True}) == "'seed' is True, not an integer"
    assert summary_problem({**good, "estimator": 3}) == "'estimator' is 3, not a string"
    assert summary_problem({**good, "pair/logit_mse": "0.2"}) == "figure 'pair/logit_mse' is '0.2', not a number"
    assert summary_problem({**good, "history": {"x": 1}}) == "history 'x' is not a list"


def test_nothing_valid_left_is_a_clear_error(tmp_path, capsys):
    strays(tmp_path / "runs")
    with pytest.raises(FileNotFoundError, match=r"no valid summary.json under .*\(5 skipped: "):
        report.report([tmp_path / "runs"], tmp_path / "out", formats=["png"], pair_figs=False)
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qatrun-report: no valid summary.json") and "Traceback" not in err


@pytest.mark.parametrize("fingerprinted", [False, True])
def test_a_copied_run_counts_once(tmp_path, fingerprinted):
    """A run directory copied (or a sweep re-run into new job numbers) is one result, not two seeds."""
    runs = tmp_path / "runs"
    write_run(runs / "0", weights=False)
    write_run(runs / "1", seed=1, weights=False, qa=0.98)
    if fingerprinted:
        for seed in (0, 1):
            s = json.loads((runs / str(seed) / "summary.json").read_text())
            s.update(fingerprint=f"{seed:016x}", provenance={"qatrun": "0.1"})
            (runs / str(seed) / "summary.json").write_text(json.dumps(s))
    shutil.copytree(runs / "0", runs / "2")
    res = report.report([runs], tmp_path / "out", formats=["png"], pair_figs=False)
    (comp,) = res["comparisons"]
    assert comp["n_seeds"] == 2 and comp["seeds"] == [0, 1]  # seed 0 once, not twice
    (note,) = [n for n in res["notes"] if "duplicate" in n]
    same = "fingerprint" if fingerprinted else "config and seed (no fingerprint)"
    assert note == f"1 duplicate run(s) (same {same} as {runs / '0'}): counted once: {runs / '2'}"


def test_a_single_run_copied_gives_one_seed(tmp_path):
    write_run(tmp_path / "runs" / "a", weights=False)
    shutil.copytree(tmp_path / "runs" / "a", tmp_path / "runs" / "b")
    res = report.report([tmp_path / "runs"], tmp_path / "out", formats=["png"], pair_figs=False)
    (comp,) = res["comparisons"]
    assert comp["n_seeds"] == 1 and comp["metrics"]["pair/quantized_agreement"]["std"] is None
    assert "± 0.0000" not in (tmp_path / "out" / "table.md").read_text()


def test_one_config_two_fingerprints_are_two_runs_with_a_note(tmp_path):
    """The same config and seed computed by different code (another qatrun version, an edited shape)."""
    runs = tmp_path / "runs"
    for name, version in (("old", "0.1"), ("new", "0.2")):
        write_run(runs / name, weights=False)
        s = json.loads((runs / name / "summary.json").read_text())
        s.update(fingerprint=f"{version}".replace(".", "").zfill(16), provenance={"qatrun": version})
        (runs / name / "summary.json").write_text(json.dumps(s))
    notes = []
    assert len(find_runs([runs], notes)) == 2
    (note,) = notes
    assert note.startswith("2 runs share their config and seed but not their fingerprint") and "0.2" in note


def test_runs_without_a_config_are_never_folded(tmp_path):
    """A summary without config (and no .hydra/config.yaml) says too little to call it a duplicate."""
    for name, lr in (("a", 0.01), ("b", 0.1)):
        write_run(tmp_path / name, lr=lr, weights=False)
        s = json.loads((tmp_path / name / "summary.json").read_text())
        del s["config"]
        (tmp_path / name / "summary.json").write_text(json.dumps(s))
    notes = []
    assert len(find_runs([tmp_path], notes)) == 2 and not any("duplicate" in n for n in notes)
