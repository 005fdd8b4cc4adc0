"""Report polish (issue 12): titles in words, w/m explained, step 0, movement as w - w0, robust limits,
LaTeX table, no std for one seed, a --help that stands on its own. Synthetic runs, no training."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from qatrun import report
from qatrun.report.figures import fig_agreement, fig_alignment, fig_curves, fig_movement, load_weights, title
from qatrun.report.runs import load_run
from tests.test_report import write_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("polish")
    for seed in (0, 1):
        write_run(root / f"sgd{seed}", seed=seed, acc=0.9 + 0.02 * seed, n=2000)
    write_run(root / "adam", opt="adam", lr=0.001, twin="ste", weights=True)
    p = root / "sgd0" / "weights_sample.pt"
    s = torch.load(p)
    s["twin"][:7] += 5.0  # seven far outliers
    torch.save(s, p)
    return root


def test_titles_name_the_estimator_and_the_twin(runs):
    t = title(load_run(runs / "sgd0"), "X")
    assert t.startswith("X: tanh(k=5.5) estimator (2 bits, α = 0.61) vs STE twin from M(w0), lr × 0.61")
    assert "SGD (warp rule) at lr" in t and "warped twin" in t and "not the predicted" not in t
    t = title(load_run(runs / "adam"), "X")
    assert "tanh(k=5.5) estimator" in t and "STE twin from w0, lr × 1" in t and "Adam (identity rule) at lr 0.001" in t


def test_scatters_explain_w_over_m_and_count_clipped_outliers(runs):
    run = load_run(runs / "sgd0")
    w = load_weights(runs / "sgd0" / "weights_sample.pt")
    fig = fig_alignment(run, w)
    assert "w/m: a weight in units of its layer's grid range m" in fig._supxlabel.get_text()
    ax = fig.axes[0]
    assert ax.get_ylim()[1] < 3  # percentile limits: the +5 outliers do not squash the cloud
    notes = [t.get_text() for t in ax.texts]
    n_out = int(notes[0].split()[0])
    assert 7 <= n_out <= 30 and notes[0].endswith("of 2000 points outside the axes")


def test_movement_is_w_minus_w0_against_w0(runs):
    run = load_run(runs / "adam")
    w = load_weights(runs / "adam" / "weights_sample.pt")
    fig = fig_movement(run, w)
    ax = fig.axes[0]
    xy = np.asarray(ax.collections[0].get_offsets())
    np.testing.assert_allclose(xy[:, 0], w["est0"] / w["m"])
    np.testing.assert_allclose(xy[:, 1], (w["est"] - w["est0"]) / w["m"])
    assert "movement" in ax.get_ylabel() and "no movement" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_curves_start_at_step_0(runs):
    run = load_run(runs / "sgd0")
    assert run.history["log_step"][0] == 10  # the logged curve starts later...
    agree = fig_agreement(run)
    x, y = agree.axes[0].lines[0].get_data()
    assert x[0] == 0 and y[0] == 1.0  # ...the figure starts at step 0 (agreement 1 by construction)
    assert all(ax.get_xlim()[0] == 0 for ax in fig_curves(run).axes)


def test_tex_table_and_no_std_for_one_seed(runs, tmp_path):
    assert report.main([str(runs), "--out", str(tmp_path), "--format", "tex", "--no-pairs"]) == 0
    tex = (tmp_path / "table.tex").read_text().splitlines()
    assert tex[1].startswith(r"\begin{tabular}{l") and {r"\toprule", r"\midrule", r"\bottomrule"} <= set(tex)
    rows = [line for line in tex if line.endswith(r"\\") and not line.startswith("Comparison")]
    assert len(rows) == 2
    sgd = next(r for r in rows if "; sgd (warp rule)" in r)
    adam = next(r for r in rows if "; adam (identity rule)" in r)
    assert r"0.9100 $\pm$ 0.0141" in sgd and r"$\pm$" not in adam
    with open(tmp_path / "table.csv") as f:
        table = {r["comparison"].split("; ")[1].split(" ")[0]: r for r in csv.DictReader(f)}
    assert table["adam"]["est/test_acc_std"] == "" and table["adam"]["est/test_acc_mean"] == "0.9"
    assert float(table["sgd"]["est/test_acc_std"]) == pytest.approx(0.014142, rel=1e-4)
    comp = {c["label"].split("; ")[1].split(" ")[0]: c for c in json.loads((tmp_path / "summary.json").read_text())["comparisons"]}
    assert comp["adam"]["metrics"]["est/test_acc"]["std"] is None


def test_report_help_stands_on_its_own():
    script = Path(sys.executable).parent / "qatrun-report"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for phrase in ("Figures and tables from finished qatrun pair runs", "straight-through", "table.tex",
                   "w/m", "examples:", "Metric definitions"):
        assert phrase in out.stdout, phrase
    assert "PAPER.md" not in out.stdout
