"""The drift figure and table: pairs overlaid over training, read at fixed fractions of the steps."""

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest

from qatrun import report
from qatrun.report.drift import at_fraction, fig_drift, select
from qatrun.report.runs import load_run
from tests.test_report import write_run

STEPS = [0, 20, 40, 60, 80, 100]


def long_run(d, *, opt="sgd", twin="auto", name="long", agree=(0.99, 0.98, 0.97, 0.96, 0.95),
             untrained=(0.1, 0.2, 0.3, 0.3, 0.3)):
    write_run(d, opt=opt, twin=twin, weights=False)
    s = json.loads((d / "summary.json").read_text())
    s["steps"] = 100
    s["config"]["experiment_name"] = name
    s["alignment_map"] = "mirror" if s["twin_init"] == "mirror" else "identity"
    mirror = [0.0, 0.02, 0.04, 0.05, 0.08, 0.1] if s["twin_init"] == "mirror" else [0.0, 3.0, 3.5, 4.0, 4.5, 5.0]
    s["history"].update({"log_step": STEPS, "est/loss": [2.3, 1.5, 1.0, 0.7, 0.6, 0.5],
                         "twin/loss": [2.3, 1.6, 1.1, 0.75, 0.62, 0.55],
                         "pair/mover_agreement": [None, *agree],  # no mover at step 0: NaN in the json
                         "pair/mover_agreement_untrained": [None, *untrained],
                         "pair/mover_fraction": [0.0, 0.01, 0.02, 0.03, 0.04, 0.05],
                         "pair/alignment_error_mirror": mirror,
                         "pair/alignment_error_identity": [0.0, 0.3, 0.35, 0.4, 0.45, 0.5],
                         "pair/alignment_error": mirror if s["alignment_map"] == "mirror" else [0.0, 0.3, 0.35, 0.4, 0.45, 0.5]})
    (d / "summary.json").write_text(json.dumps(s))
    return d


def test_select_by_config_value_and_bad_selector(tmp_path):
    a, b = long_run(tmp_path / "a"), long_run(tmp_path / "b", name="sgd")
    runs = [load_run(a), load_run(b)]
    assert [r.path for r in select(runs, ["experiment_name=long"])] == [a]
    assert [r.path for r in select(runs, ["experiment_name=long", "optimizer.name=adam"])] == []
    with pytest.raises(ValueError, match="KEY=VALUE"):
        select(runs, ["experiment_name"])


def test_at_fraction_reads_the_nearest_logged_step(tmp_path):
    r = load_run(long_run(tmp_path / "r"))
    assert at_fraction(r, "pair/mover_agreement", 0.4) == (40, 0.98)
    assert at_fraction(r, "pair/mover_agreement", 0.47) == (40, 0.98)  # step 47 not logged: the nearest is 40
    assert at_fraction(r, "pair/mover_agreement", 0.53) == (60, 0.97)
    assert at_fraction(r, "pair/mover_agreement", 1.0) == (100, 0.95)
    assert at_fraction(r, "pair/mover_agreement", 0.0) == (0, None)  # NaN (no mover yet) is no figure
    assert at_fraction(r, "pair/not_logged", 1.0) == (None, None)


def test_drift_figure_overlays_each_pair_with_both_maps_and_its_untrained_twin(tmp_path):
    runs = [load_run(long_run(tmp_path / "w")),
            load_run(long_run(tmp_path / "n", twin="ste", agree=(0.6, 0.7, 0.72, 0.7, 0.7)))]
    fig = fig_drift(runs)
    movers, align, frac = fig.axes
    drawn = [l for l in movers.get_lines() if len(l.get_xdata())]
    assert len(drawn) == 4  # two pairs, each with its untrained twin
    ys = sorted(tuple(np.nan_to_num(l.get_ydata(), nan=-1)) for l in drawn)
    assert (-1, 0.6, 0.7, 0.72, 0.7, 0.7) in ys and (-1, 0.99, 0.98, 0.97, 0.96, 0.95) in ys
    assert (-1, 0.1, 0.2, 0.3, 0.3, 0.3) in ys
    mirror_lines = [l for l in align.get_lines() if len(l.get_xdata()) and l.get_linestyle() == "-"]
    ident_lines = [l for l in align.get_lines() if len(l.get_xdata()) and l.get_linestyle() == ":"]
    assert len(mirror_lines) == 2 and len(ident_lines) == 2
    assert all(np.isnan(l.get_ydata()[0]) for l in mirror_lines)  # 0 at step 0 is not drawn on a log axis
    assert align.get_yscale() == "log" and len(frac.get_lines()) == 2
    labels = {t.get_text() for t in movers.get_legend().get_texts()}
    assert "SGD: STE twin from M(w0), lr × 0.61" in labels and "SGD: STE twin from w0, lr × 1" in labels
    plt.close(fig)


def test_report_draws_drift_and_findings_table(tmp_path):
    long_run(tmp_path / "runs" / "w")
    long_run(tmp_path / "runs" / "n", twin="ste", agree=(0.6, 0.7, 0.72, 0.7, 0.7))
    long_run(tmp_path / "runs" / "other", name="sgd", agree=(0.1, 0.1, 0.1, 0.1, 0.1))  # not selected
    res = report.report([tmp_path / "runs"], tmp_path / "out", formats=["png"], pair_figs=False,
                        drift=["experiment_name=long"])
    assert (tmp_path / "out" / "drift.png").exists()
    rows = {r["label"]: r for r in res["drift"]}
    assert len(rows) == 2
    warped = rows["SGD: STE twin from M(w0), lr × 0.61"]
    assert warped["map"] == "mirror" and [a["step"] for a in warped["at"]] == [20, 40, 60, 80, 100]
    assert warped["at"][-1]["mover_agreement"] == 0.95 and warped["at"][-1]["alignment_error"] == 0.1
    text = (tmp_path / "out" / "findings.md").read_text()
    assert "| SGD: STE twin from M(w0), lr × 0.61 (through M) | 99.0% (10.0%) / 0.02 |" in text
    assert "| SGD: STE twin from w0, lr × 1 (through the identity) | 60.0% (10.0%) / 0.3 |" in text
    assert "| step 20 | step 40 | step 60 | step 80 | step 100 |" in text
    assert "10.0% (30.0%)" not in text  # the unselected run is not in the table


def test_report_notes_a_drift_selector_that_matches_nothing(tmp_path):
    long_run(tmp_path / "runs" / "w", name="sgd")
    res = report.report([tmp_path / "runs"], tmp_path / "out", formats=["png"], pair_figs=False,
                        drift=["experiment_name=long"])
    assert res["drift"] == [] and not (tmp_path / "out" / "drift.png").exists()
    assert any("drift: no run has experiment_name=long" in n for n in res["notes"])
    assert "Drift over training" not in (tmp_path / "out" / "findings.md").read_text()


def test_report_prunes_figure_dirs_of_runs_it_left_out(tmp_path):
    long_run(tmp_path / "runs" / "w")
    out = tmp_path / "out"
    stale, foreign = out / "pairs" / "gone_seed=0", out / "pairs" / "mine"
    stale.mkdir(parents=True), foreign.mkdir(parents=True)
    (stale / "curves.png").write_bytes(b"x")
    (foreign / "notes.txt").write_text("not a figure: kept")
    res = report.report([tmp_path / "runs"], out, formats=["png"])
    assert not stale.exists() and (foreign / "notes.txt").exists()
    assert set(res["pairs"]) <= {p.name for p in (out / "pairs").iterdir()}
    assert any("gone_seed=0" in n for n in res["notes"])


@pytest.mark.slow
def test_saved_figures_are_byte_identical_across_runs(tmp_path, monkeypatch):
    """A redrawn report does not change committed PDFs: no creation timestamp in them."""
    import time

    from qatrun.report.figures import save

    digests = []
    for i in range(2):
        monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)  # a fixed date would hide a timestamp
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3])
        (pdf,) = save(fig, tmp_path / str(i), "f", ["pdf"])
        digests.append(open(pdf, "rb").read())
        time.sleep(1.1)  # a timestamp would differ by now
    assert digests[0] == digests[1]
