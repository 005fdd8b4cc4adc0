"""qatrun-report on synthetic run directories (no training): figures, table, lr law, CLI."""

import json
from types import SimpleNamespace
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from qatrun import report
from qatrun.files import jsonable
from qatrun.report.figures import fig_alignment, fig_movement, load_weights
from qatrun.report.labels import make_labels
from qatrun.report.runs import load_run, stats
from qatrun.report.cli import slug
from qatrun.report.tables import cell, table_columns

LRS = [0.001, 0.003, 0.01, 0.03, 0.1]
FACTORS = {0: 0.9, 1: 1.1}  # per-seed multiplicative noise; the seed mean is the exact power law
FIGS = ["curves", "agreement", "alignment_scatter", "movement_scatter"]
# What each kind of test run compared, as the report's rows and titles name it (qatrun.report.runs.pair_words)
SGD = "tanh(k=5.5) vs STE, 2 bits, warped twin; sgd (warp rule)"
ADAM = "tanh(k=5.5) vs STE, 2 bits, plain twin; adam (identity rule)"
NONE = "tanh(k=5.5) vs no twin, 2 bits; sgd (warp rule)"
THRESHOLDS = [-2 / 3, 0.0, 2 / 3]  # 2 bits, he_uniform: rounding thresholds in units of m


def config(opt="sgd", lr=0.01, twin="auto", seed=0):
    opt_cfg = ({"name": "sgd", "lr": lr, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "twin_warp": True}
               if opt == "sgd" else
               {"name": "adam", "lr": lr, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.0, "twin_warp": False})
    return {"seed": seed, "device": "auto", "optimizer": opt_cfg,
            "estimator": {"name": "tanh", "bits": 2, "grid": "he_uniform", "k": None},
            "pair": {"twin": twin, "twin_lr_scale": 1.0}, "model": {"name": "small_cnn", "kwargs": {}},
            "trainer": {"max_steps": 30, "eval_every": 15, "log_every": 10, "progress": False}}


def write_run(d, *, opt="sgd", lr=0.01, twin="auto", seed=0, qa=0.99, ae=0.1, acc=0.9, weights=True, levels=True,
              n=400):
    """A finished run without training. ``levels=False``: a weight sample as written before the trainer
    saved thresholds and level indices."""
    d.mkdir(parents=True)
    (d / ".hydra").mkdir()
    (d / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr={lr}\n- seed={seed}\n")
    s = {"steps": 30, "seed": seed, "estimator": "tanh", "twin": twin, "alpha": 0.6095,
         "twin_lr_factor": 0.6095 if (opt == "sgd" and twin == "auto") else 1.0,
         "twin_init": "mirror" if (opt == "sgd" and twin == "auto") else "identity",
         "est/test_acc": acc, "est/loss": 0.5,
         "history": {"log_step": [10, 20, 30], "est/loss": [1.5, 1.0, 0.5],
                     "eval_step": [0, 15, 30], "est/test_loss": [2.3, 1.2, 0.6], "est/test_acc": [0.1, 0.7, acc]},
         "config": config(opt, lr, twin, seed)}
    if twin != "none":
        mirror = s["twin_init"] == "mirror"
        s.update({"pair/alignment_error_mirror": ae if mirror else None,
                  "pair/alignment_error_identity": 3 * ae if mirror else ae,
                  "pair/mover_fraction": 0.05, "pair/mover_agreement": 1 - 20 * (1 - qa),
                  "pair/mover_agreement_untrained": 0.1, "pair/quantized_agreement_untrained": 0.95})
        s.update({"pair/quantized_agreement": qa, "pair/alignment_error": ae, "pair/sequence_agreement": qa - 0.001,
                  "pair/sequence_agreement_compressed": qa, "pair/changepoint_error": 0.7,
                  "pair/changepoint_error_compressed": 1.2, "pair/inference_agreement": 0.95,
                  "pair/logit_mse": 0.25, "pair/corr_train_loss": 0.99, "pair/corr_test_loss": None,
                  "pair/corr_test_acc": 0.999, "twin/test_acc": acc + 0.01, "twin/loss": 0.55})
        s["history"].update({"twin/loss": [1.6, 1.1, 0.55], "twin/test_loss": [2.3, 1.3, 0.65],
                             "twin/test_acc": [0.1, 0.68, acc + 0.01], "pair/quantized_agreement": [1.0, 0.995, qa],
                             "pair/alignment_error": [0.0, ae / 2, ae]})
    (d / "summary.json").write_text(json.dumps(s))
    if weights and twin != "none":
        g = torch.Generator().manual_seed(seed)
        m = torch.full((n,), 0.14)
        est0 = (torch.rand(n, generator=g) * 2 - 1) * m
        est = est0 + 0.02 * torch.randn(n, generator=g)
        twin_w = est + 0.005 * torch.randn(n, generator=g)
        sample = {"est0": est0, "twin0": est0.clone(), "est": est, "twin": twin_w, "est_mapped": est * 1.01, "m": m}
        if levels:
            th = torch.tensor(THRESHOLDS)
            sample.update(thresholds=th, level_est=torch.bucketize(est / m, th),
                          level_twin=torch.bucketize(twin_w / m, th))
        torch.save(sample, d / "weights_sample.pt")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A multirun-like tree: an SGD pair with 2 seeds (seed 1's weight sample in the format without saved
    levels), an Adam pair without a weight sample (NaN in one metric), an unpaired (twin=none) run and an
    unfinished job; report written by the CLI."""
    root = tmp_path_factory.mktemp("multirun")
    (root / "multirun.yaml").write_text("hydra: {}\n")
    for seed, f in FACTORS.items():
        write_run(root / str(seed), lr=0.01, seed=seed, qa=1 - 0.1 * 0.01 * f, ae=2 * 0.01**0.5 * f,
                  acc=0.90 + 0.02 * seed, levels=seed == 0)
    write_run(root / "2", opt="adam", lr=0.001, twin="ste", qa=0.98, ae=float("nan"), weights=False)
    write_run(root / "3", lr=0.03, twin="none")
    write_run(root / "5", lr=0.3, weights=False)
    (root / "5" / "weights_sample.pt").write_bytes(b"truncated")
    (root / "4" / ".hydra").mkdir(parents=True)  # unfinished job
    (root / "4" / ".hydra" / "overrides.yaml").write_text("- seed=3\n")
    out = tmp_path_factory.mktemp("report")
    assert report.main([str(root), "--out", str(out)]) == 0
    return root, out


@pytest.fixture(scope="module")
def law(tmp_path_factory):
    """A 5-lr x 2-seed SGD family with power-law errors (seed mean exact) and a 1-lr Adam pair."""
    root = tmp_path_factory.mktemp("sweep")
    for i, lr in enumerate(LRS):
        for seed, f in FACTORS.items():
            write_run(root / f"{i}_{seed}", lr=lr, seed=seed, qa=1 - 0.1 * lr * f, ae=2 * lr**0.5 * f, weights=False)
    write_run(root / "adam", opt="adam", lr=0.001, qa=0.98, ae=0.1, weights=False)
    out = tmp_path_factory.mktemp("law_report")
    assert report.main([str(root), "--out", str(out), "--no-pairs"]) == 0
    return json.loads((out / "lr_law.json").read_text()), out


@pytest.mark.slow
def test_pair_figures_exist(tree):
    _, out = tree
    pairs = out / "pairs"
    for seed in FACTORS:
        for name in FIGS:
            for ext in ("png", "pdf"):
                p = pairs / slug(f"{SGD}, lr=0.01 seed={seed}") / f"{name}.{ext}"
                assert p.exists() and p.stat().st_size > 0, p
    # no weight sample: only the curve figures; twin=none: nothing, but noted
    assert sorted(p.name for p in (pairs / slug(f"{ADAM}, lr=0.001 seed=0")).iterdir()) == [
        "agreement.pdf", "agreement.png", "curves.pdf", "curves.png"]
    assert not (pairs / slug(f"{NONE}, lr=0.03 seed=0")).exists()
    notes = json.loads((out / "summary.json").read_text())["notes"]
    assert any(NONE in n and "skipped" in n for n in notes)
    assert any("weights_sample.pt" in n for n in notes)
    assert any("cannot read weights_sample.pt" in n for n in notes)  # corrupt file: noted, no crash
    # the old-format sample (seed 1) still gets its scatters (checked above), with a note; seed 0's does not
    old = [n for n in notes if "predates saved levels" in n]
    assert len(old) == 1 and "seed=1" in old[0] and "thresholds not drawn" in old[0]
    assert (pairs / slug(f"{SGD}, lr=0.3 seed=0") / "curves.png").exists()
    assert any("without summary.json" in n for n in notes)
    assert any("lr_law figure skipped" in n for n in notes)  # no family with 3 lrs here
    assert json.loads((out / "lr_law.json").read_text()) == {}


@pytest.mark.slow
def test_table(tree):
    _, out = tree
    lines = (out / "table.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| Comparison"))
    columns = table_columns([SimpleNamespace(summary={})])  # the tree's summaries declare none: the registered ones
    assert [h for _, h, _ in columns][:3] == ["Movers", "Mover agreement", "Mover agr., untrained twin"]
    for _, head, _ in columns:
        assert f"| {head} |" in header
    assert header.endswith("| n seeds |")
    heads = ["Comparison"] + [h for _, h, _ in columns] + ["n seeds"]
    rows = {}
    for r in lines[lines.index(header) + 2:]:
        cells = [c.strip() for c in r.strip("|").split("|")]
        rows[cells[0]] = dict(zip(heads, cells))
    assert sorted(rows) == sorted([f"{ADAM}, lr=0.001", f"{SGD}, lr=0.01", f"{SGD}, lr=0.3", f"{NONE}, lr=0.03"])
    row = rows[f"{SGD}, lr=0.01"]
    assert row["n seeds"] == "2"
    assert row["Est. accuracy"] == "0.9100 ± 0.0141"  # 0.90, 0.92: sample std 0.01414
    ae = [2 * 0.01**0.5 * f for f in FACTORS.values()]
    assert row["Alignment error through M"] == f"{np.mean(ae):#.3g} ± {np.std(ae, ddof=1):#.3g}" == "0.200 ± 0.0283"
    assert row["Quantized agreement"] == "0.9990 ± 0.0001"
    assert row["Mover agreement"] == "0.9800 ± 0.0028"  # 1 - 20 * 0.001 * f for f = 0.9, 1.1: std 0.02 * 0.1414
    assert row["Mover agr., untrained twin"] == "0.1000 ± 0.0000" and row["Movers"] == "0.0500 ± 0.0000"
    assert "Sequence agreement (compressed)" not in row  # kept in summary.json only (README)
    adam = rows[f"{ADAM}, lr=0.001"]
    assert adam["n seeds"] == "1" and adam["Quantized agreement"] == "0.9800"
    assert adam["Alignment error through M"] == "—" and adam["Alignment error, identity"] == "—"  # NaN
    none = rows[f"{NONE}, lr=0.03"]
    assert none["Quantized agreement"] == "—" and none["Est. accuracy"] == "0.9000"


@pytest.mark.slow
def test_csv_and_summary(tree):
    _, out = tree
    csv_lines = (out / "table.csv").read_text().splitlines()
    assert csv_lines[0].startswith("comparison,n_seeds,pair/mover_fraction_mean,pair/mover_fraction_std")
    assert len(csv_lines) == 1 + 4
    summ = json.loads((out / "summary.json").read_text())
    comp = next(c for c in summ["comparisons"] if c["label"] == f"{SGD}, lr=0.01")
    assert comp["seeds"] == [0, 1] and comp["n_seeds"] == 2
    assert comp["metrics"]["pair/quantized_agreement"]["mean"] == pytest.approx(1 - 0.1 * 0.01)
    assert comp["metrics"]["pair/alignment_error"]["min"] == pytest.approx(2 * 0.01**0.5 * 0.9)


def test_lr_law_slope(law):
    data, out = law
    assert list(data) == ["SGD, STE twin from M(w0) at lr x alpha"]  # the Adam family has a single lr: skipped
    fam = data["SGD, STE twin from M(w0) at lr x alpha"]
    assert fam["lr"] == LRS and fam["n_seeds"] == [2] * 5
    assert fam["disagreement"]["slope"] == pytest.approx(1.0, abs=1e-6)
    assert 10 ** fam["disagreement"]["intercept"] == pytest.approx(0.1, rel=1e-6)
    assert fam["alignment_error"]["slope"] == pytest.approx(0.5, abs=1e-6)
    # write_run: mover agreement 1 - 20 (1 - qa), i.e. mover disagreement 2 lr: slope 1, intercept 2
    assert fam["mover_disagreement"]["slope"] == pytest.approx(1.0, abs=1e-6)
    assert 10 ** fam["mover_disagreement"]["intercept"] == pytest.approx(2.0, rel=1e-6)
    assert fam["alignment_map"] == "mirror"
    assert ("* SGD, STE twin from M(w0) at lr x alpha (seeds per lr: 2 at 0.001, 2 at 0.003, 2 at 0.01, 2 at 0.03, "
            "2 at 0.1): 1 - mover agreement 1.00, 1 - overall agreement 1.00, "
            "alignment error (through M) 0.50") in (out / "findings.md").read_text()
    assert fam["disagreement"]["min"][0] == pytest.approx(0.1 * 0.001 * 0.9)
    for ext in ("png", "pdf"):
        assert (out / f"lr_law.{ext}").stat().st_size > 0
    assert not (out / "pairs").exists()  # --no-pairs
    assert len((out / "table.md").read_text().splitlines()) == 4 + len(LRS) + 1


def test_lr_law_zero_disagreement_is_clipped(tmp_path):
    for i, (lr, qa) in enumerate([(1e-4, 1.0), (1e-3, 1 - 1e-3), (1e-2, 1 - 1e-2)]):
        write_run(tmp_path / "runs" / str(i), opt="adam", lr=lr, twin="auto", qa=qa, ae=lr, weights=False)
    res = report.report([tmp_path / "runs"], tmp_path / "out", formats=["png"], pair_figs=False)
    fam = res["lr_law"]["Adam, STE twin from w0 at the same lr"]
    assert fam["disagreement"]["mean"][0] == 0.0
    assert fam["disagreement"]["slope"] == pytest.approx(1.0, abs=1e-6)  # fitted on the two non-zero points
    assert (tmp_path / "out" / "lr_law.png").stat().st_size > 0


@pytest.mark.slow
def test_label_by_and_family_by(tmp_path):
    for i, lr in enumerate([0.01, 0.02, 0.04]):
        write_run(tmp_path / "runs" / str(i), lr=lr, qa=1 - lr, ae=lr, weights=False)
    out = tmp_path / "out"
    assert report.main([str(tmp_path / "runs"), "--out", str(out), "--formats", "png",
                        "--label-by", "optimizer.lr", "estimator.bits", "--family-by", "optimizer.name"]) == 0
    table = (out / "table.md").read_text()
    assert "| lr=0.01 bits=2 |" in table and "| lr=0.04 bits=2 |" in table
    assert (out / "pairs" / "lr=0.02_bits=2_seed=0" / "curves.png").exists()
    assert not list(out.rglob("*.pdf"))
    assert json.loads((out / "lr_law.json").read_text())["SGD, STE twin from M(w0) at lr x alpha"]["disagreement"]["slope"] == \
        pytest.approx(1.0, abs=1e-6)


def test_no_runs(tmp_path, capsys):
    assert report.main([str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "no summary.json" in capsys.readouterr().err


def test_labels_and_cells():
    sgd = {"optimizer.name": "sgd", "optimizer.momentum": 0.9, "optimizer.twin_warp": True, "pair.twin": "auto",
           "optimizer.lr": 0.03, "estimator.name": "tanh", "estimator.bits": 2}
    adam = {"optimizer.name": "adam", "optimizer.betas": "[0.9, 0.95]", "optimizer.twin_warp": False,
            "pair.twin": "auto", "optimizer.lr": 0.001, "estimator.name": "tanh", "estimator.bits": 2}
    # optimizer-specific keys don't leak into labels; the lr does; estimator only when it differs
    assert make_labels([sgd, adam]) == ["sgd auto lr=0.03", "adam auto lr=0.001"]
    assert make_labels([sgd, {**sgd, "estimator.bits": 4}]) == ["sgd auto bits=2", "sgd auto bits=4"]
    assert make_labels([sgd, dict(sgd)]) == ["sgd auto", "sgd auto #2"]
    # named experiments: the name, plus what varies inside one experiment
    named = [{**sgd, "experiment_name": "sgd"}, {**sgd, "experiment_name": "sgd", "optimizer.lr": 0.1},
             {**adam, "experiment_name": "adam"}, {**sgd, "experiment_name": "jitter", "pair.twin": "self"}]
    assert make_labels(named) == ["sgd lr=0.03", "sgd lr=0.1", "adam lr=0.001", "jitter lr=0.03"]
    st = stats([0.5, float("nan"), None, 0.7])
    assert st["n"] == 2 and st["mean"] == pytest.approx(0.6) and st["std"] == pytest.approx(math.sqrt(0.02))
    assert cell(st, "frac") == "0.6000 ± 0.1414" and cell(st, "err") == "0.600 ± 0.141"
    assert cell(stats([]), "err") == "—"
    assert jsonable({"a": float("nan"), "b": np.float32(1.5)}) == {"a": None, "b": 1.5}


def test_schema_drift_does_not_split_groups(tmp_path):
    """A key added to the config mid-sweep (present in some runs, one value) must not split a family."""
    for i, lr in enumerate([0.01, 0.02, 0.04]):
        write_run(tmp_path / "runs" / str(i), lr=lr, qa=1 - lr, ae=lr, weights=False)
        if i:
            s = json.loads((tmp_path / "runs" / str(i) / "summary.json").read_text())
            s["config"]["experiment_name"] = "default"
            (tmp_path / "runs" / str(i) / "summary.json").write_text(json.dumps(s))
    res = report.report([tmp_path / "runs"], tmp_path / "out", formats=["png"], pair_figs=False)
    assert list(res["lr_law"]) == ["SGD, STE twin from M(w0) at lr x alpha"]
    assert [c["label"] for c in res["comparisons"]] == [f"{SGD}, lr={lr}" for lr in (0.01, 0.02, 0.04)]


def threshold_lines(ax):
    """x of the vertical and y of the horizontal full-axis lines (axvline/axhline) on ``ax``."""
    v = [ln.get_xdata()[0] for ln in ax.lines if ln.get_xdata()[0] == ln.get_xdata()[1] and list(ln.get_ydata()) == [0, 1]]
    h = [ln.get_ydata()[0] for ln in ax.lines if ln.get_ydata()[0] == ln.get_ydata()[1] and list(ln.get_xdata()) == [0, 1]]
    return sorted(v), sorted(h)


def scatter_points(ax, prefix):
    """The (x, y) points of the scatter whose legend label starts with ``prefix``, or None."""
    hits = [c for c in ax.collections if c.get_label().startswith(prefix)]
    assert len(hits) <= 1
    return np.asarray(hits[0].get_offsets()) if hits else None


def test_scatters_use_saved_thresholds_and_levels(tmp_path):
    """The scatters draw the thresholds saved in weights_sample.pt (not the config's grid) and mark
    disagreement from the saved level indices (not from the weights' positions)."""
    d = tmp_path / "run"
    write_run(d, weights=False)  # the config's grid (2 bits, he_uniform) has 3 thresholds
    n, th = 300, [-0.9, -0.5, 0.1, 0.4, 0.8]  # 5 thresholds no grid of the config has
    g = torch.Generator().manual_seed(1)
    m = torch.full((n,), 0.2)
    est0, est = (torch.rand(n, generator=g) * 2 - 1) * m, (torch.rand(n, generator=g) * 2 - 1) * m
    twin = est + 0.01 * torch.randn(n, generator=g)
    level_est = torch.randint(0, 6, (n,), generator=g)
    differ = torch.zeros(n, dtype=torch.bool)
    differ[::7] = True  # disagreement chosen by hand, unrelated to where the weights sit
    level_twin = torch.where(differ, (level_est + 1) % 6, level_est)
    torch.save({"est0": est0, "twin0": est0.clone(), "est": est, "twin": twin, "est_mapped": est * 1.02, "m": m,
                "thresholds": torch.tensor(th, dtype=torch.float64), "level_est": level_est, "level_twin": level_twin},
               d / "weights_sample.pt")
    run, w = load_run(d), load_weights(d / "weights_sample.pt")
    fig = fig_alignment(run, w, "test")
    bad = differ.numpy()
    for ax, x in zip(fig.axes[:2], [est / m, est * 1.02 / m]):
        v, h = threshold_lines(ax)
        assert len(v) == len(h) == len(th)
        np.testing.assert_allclose(v, th)
        np.testing.assert_allclose(h, th)
        expect = np.stack([x.double().numpy(), (twin / m).double().numpy()], 1)
        np.testing.assert_allclose(scatter_points(ax, "different quantized value"), expect[bad])
        np.testing.assert_allclose(scatter_points(ax, "same quantized value"), expect[~bad])
    assert any(f"({bad.mean():.2%})" in c.get_label() for c in fig.axes[0].collections)
    plt.close(fig)
    fig = fig_movement(run, w, "test")
    for ax in fig.axes[:2]:  # x: w0/m (vertical thresholds); y: movement, which crosses threshold t at t - w0/m
        v, h = threshold_lines(ax)
        np.testing.assert_allclose(v, th)
        assert h == [0]  # the "no movement" line
        crossings = sorted(ln.get_xdata()[0] + ln.get_ydata()[0] for ln in ax.lines
                           if np.isclose(np.diff(ln.get_ydata()), -np.diff(ln.get_xdata())).all() and np.diff(ln.get_xdata())[0])
        np.testing.assert_allclose(crossings, th)
    assert "rounding thresholds" in fig._supxlabel.get_text()
    plt.close(fig)
    # more than 31 thresholds (over 5 bits): not drawn, agreement still coloured
    w_dense = {**w, "thresholds": np.linspace(-1, 1, 65)[1:-1]}
    fig = fig_alignment(run, w_dense, "test")
    assert threshold_lines(fig.axes[0]) == ([], [])
    assert len(scatter_points(fig.axes[0], "different quantized value")) == bad.sum()
    plt.close(fig)


def test_old_weight_sample_without_levels(tmp_path):
    """A weight sample saved before levels were: scatters without thresholds or agreement colours, and a note."""
    write_run(tmp_path / "runs" / "0", levels=False)
    w = load_weights(tmp_path / "runs" / "0" / "weights_sample.pt")
    assert w is not None and "thresholds" not in w
    fig = fig_alignment(load_run(tmp_path / "runs" / "0"), w, "test")
    for ax in fig.axes[:2]:
        assert threshold_lines(ax) == ([], [])
        assert scatter_points(ax, "different quantized value") is None
        assert len(ax.collections) == 1 and len(ax.collections[0].get_offsets()) == len(w["est"])
    plt.close(fig)
    res = report.report([tmp_path / "runs"], tmp_path / "out", formats=["png"])
    assert list(res["pairs"]) == [slug(f"{SGD}, lr=0.01 seed=0")]
    for name in FIGS:
        assert (tmp_path / "out" / "pairs" / slug(f"{SGD}, lr=0.01 seed=0") / f"{name}.png").stat().st_size > 0
    assert [n for n in res["notes"] if "weights_sample.pt" in n] == [
        f"{SGD}, lr=0.01 seed=0: weights_sample.pt predates saved levels; thresholds not drawn"]
    # a sample missing one of the keys every sample has stays unusable
    torch.save({k: torch.as_tensor(v) for k, v in w.items() if k != "est_mapped"}, tmp_path / "old.pt")
    assert load_weights(tmp_path / "old.pt") is None


@pytest.mark.slow
def test_report_over_two_real_tiny_runs(tmp_path):
    """Two real (tiny) runs through the trainer, then the report: figures and every table column."""
    from qatrun.report import main as report_main
    from qatrun.train import train
    from tests.conftest import make_cfg

    for name, extra in (("sgd", []), ("nowarp", ["pair.twin=ste"])):
        train(make_cfg("trainer.max_steps=10", "optimizer.lr=0.005", *extra), tmp_path / "runs" / name)
    out = tmp_path / "report"
    assert report_main([str(tmp_path / "runs"), "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    for col in ("agreement", "alignment", "sequence", "change-point", "inference", "logit", "acc"):
        assert col in table.lower(), col
    assert len([l for l in table.splitlines() if l.startswith("|")]) == 4  # header, rule, 2 rows
    pngs = list(out.glob("pairs/*/*.png"))
    assert len(pngs) >= 8 and all(p.stat().st_size > 1000 for p in pngs)
    assert len(list(out.glob("pairs/*/*.pdf"))) == len(pngs)
    notes = json.loads((out / "summary.json").read_text())["notes"]
    assert not [n for n in notes if "weights_sample.pt" in n]  # the trainer saves thresholds and levels


def family(tmp_path, roles, seeds=(0, 1)):
    """Runs of one estimator/lr differing only in the twin: role -> mover agreement."""
    modes = {"warped": ("auto", "mirror", 0.6095, 1.0), "paper_control": ("warp_lr", "identity", 0.6095, 1.0),
             "no_warp": ("ste", "identity", 1.0, 1.0), "jitter": ("self", "identity", 1.0, 1.01)}
    for rl, agree in roles.items():
        twin, init, factor, scale = modes[rl]
        for seed in seeds:
            d = tmp_path / rl / str(seed)
            write_run(d, twin=twin, seed=seed, weights=False)
            s = json.loads((d / "summary.json").read_text())
            s.update({"twin_init": init, "twin_lr_factor": factor, "twin_lr_scale": scale,
                      "pair/mover_agreement": agree + 0.001 * seed, "pair/mover_fraction": 0.04,
                      "pair/mover_agreement_untrained": 0.08})
            s["config"]["pair"] = {"twin": twin, "twin_lr_scale": scale}
            (d / "summary.json").write_text(json.dumps(s))
    return report.report([tmp_path], tmp_path / "out", formats=["png"], pair_figs=False)


def test_verdict_supports_when_the_warp_closes_the_gap(tmp_path):
    res = family(tmp_path, {"warped": 0.97, "paper_control": 0.75, "no_warp": 0.70, "jitter": 0.98})
    (v,) = res["verdicts"]
    assert v["verdict"] == "supports" and v["gap_closed"] == pytest.approx((0.9705 - 0.7005) / (0.9805 - 0.7005))
    text = (tmp_path / "out" / "findings.md").read_text()
    for fig in ("97.0% ± 0.1", "75.0% ± 0.1", "70.0% ± 0.1", "98.0% ± 0.1", "8.0%", "4.0%", "96% of the gap"):
        assert fig in text, fig
    assert 'supports "an STE in disguise" at lr 0.01' in text and "tanh (2 bits), sgd, lr 0.01, 30 steps (2 seeds)" in text


def test_verdict_does_not_support_when_warped_is_no_better_than_the_control(tmp_path):
    (v,) = family(tmp_path, {"warped": 0.71, "no_warp": 0.70, "jitter": 0.98})["verdicts"]
    assert v["verdict"] == "does not support" and v["gap_closed"] < 0.25
    (v,) = family(tmp_path / "b", {"warped": 0.85, "no_warp": 0.70, "jitter": 0.98})["verdicts"]
    assert v["verdict"] == "partly supports"


def test_no_verdict_when_the_jitter_floor_is_below_the_reference(tmp_path):
    (v,) = family(tmp_path, {"warped": 0.6, "no_warp": 0.55, "jitter": 0.5})["verdicts"]
    assert v["gap_closed"] is None and v["verdict"].startswith("no verdict (the jitter floor is not above")


def test_no_verdict_without_a_jitter_floor(tmp_path):
    (v,) = family(tmp_path, {"warped": 0.97, "no_warp": 0.70})["verdicts"]
    assert v["verdict"].startswith("no verdict") and v["gap_closed"] is None
    assert "No verdict (no jitter floor" in (tmp_path / "out" / "findings.md").read_text()


def test_agreement_figure_shows_movers_beside_the_untrained_twin(tmp_path):
    from qatrun.report.figures import fig_agreement

    write_run(tmp_path / "r", weights=False)
    run = load_run(tmp_path / "r")
    assert len(fig_agreement(run).axes) == 2  # a run logged before movers existed: overall only
    run.history.update({"pair/mover_agreement": [0.9, 0.95, 0.97], "pair/mover_agreement_untrained": [0.1, 0.2, 0.3],
                        "pair/quantized_agreement_untrained": [0.99, 0.98, 0.97],
                        "pair/alignment_error_mirror": [0.01, 0.05, 0.1], "pair/alignment_error_identity": [1, 2, 3]})
    fig = fig_agreement(run)
    movers, overall, align = fig.axes
    (pair, untrained) = movers.get_lines()
    assert list(pair.get_xdata()) == [0, 10, 20, 30]  # from step 0 (no mover yet: NaN, not drawn)
    assert np.isnan(pair.get_ydata()[0]) and list(untrained.get_ydata()[1:]) == [0.1, 0.2, 0.3]
    assert [l.get_label() for l in align.get_lines()] == ["through M", "through the identity"]
    assert list(overall.get_lines()[1].get_ydata()) == [1.0, 0.99, 0.98, 0.97]
    plt.close(fig)
