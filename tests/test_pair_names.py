"""Every artefact names its pair (issue 22): table rows and figure titles name both estimators with their
options and the optimizer's twin rule; paired panels share their axes and legends sit off the data; a sweep's
HParams experiment lists the keys that differ first, checked, with the headline metric first."""

import json

import matplotlib.pyplot as plt
import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import backend_context, plugin_data_pb2

from qatrun import report
from qatrun.metrics.names import HEADLINE
from qatrun.report.figures import fig_alignment, fig_curves, fig_movement, load_weights, title
from qatrun.report.names import pair_words, twin_role
from qatrun.report.labels import aggregate
from qatrun.report.runs import find_runs, load_run
from qatrun.tblog import write_experiment
from tests.test_report import write_run

SHAPES = ("mypkg.shapes:sharp_bump", "mypkg.shapes:flat_top")


def ab_run(d, shape: str, seed: int = 0):
    """A custom-shape estimator A against a tanh(k=2.5) twin B, warped, as the trainer writes its summary."""
    write_run(d, seed=seed)
    s = json.loads((d / "summary.json").read_text())
    s.update({"estimator": "custom", "estimator_description": f"custom(shape={shape})",
              "twin_estimator": "tanh(k=2.5)", "twin_role": "ab_warped", "twin_rule": "warp", "twin_predicted": True})
    s["config"]["estimator"] = {"name": "custom", "bits": 2, "grid": "he_uniform", "shape": shape}
    s["config"]["twin_estimator"] = {"name": "tanh", "bits": 2, "grid": "he_uniform", "k": 2.5}
    (d / "summary.json").write_text(json.dumps(s))


def test_rows_and_titles_name_both_estimators_and_the_twin_rule(tmp_path):
    for i, shape in enumerate(SHAPES):
        for seed in (0, 1):
            ab_run(tmp_path / f"{i}_{seed}", shape, seed)
    labels = [label for label, _ in aggregate(find_runs([tmp_path], []), None)]
    assert labels == ["custom(shape=flat_top) vs tanh(k=2.5), 2 bits, warped twin; sgd (warp rule), lr=0.01",
                      "custom(shape=sharp_bump) vs tanh(k=2.5), 2 bits, warped twin; sgd (warp rule), lr=0.01"]
    t = title(load_run(tmp_path / "0_0"), "Training curves")
    assert "custom(shape=sharp_bump) estimator (2 bits" in t and "tanh(k=2.5) twin from M_B⁻¹(M_A(w0))" in t
    assert "SGD (warp rule) at lr 0.01" in t
    res = report.report([tmp_path], tmp_path / "out", formats=["png"], pair_figs=False)
    rows = (tmp_path / "out" / "table.md").read_text()
    assert all(f"| {label} |" in rows for label in labels) and [c["n_seeds"] for c in res["comparisons"]] == [2, 2]


def test_a_summary_from_before_twin_role_is_named_from_its_config(tmp_path):
    """Older summaries hold no role or rule: the role comes from the twin mode and init, the rule from the
    optimizer registry, the estimator's options from its config (tanh's k resolved, as a new run says it)."""
    write_run(tmp_path / "sgd")
    write_run(tmp_path / "rms", opt="adam", lr=0.001, twin="ste")
    s = json.loads((tmp_path / "rms" / "summary.json").read_text())
    s["config"]["optimizer"] = {"name": "rmsprop", "lr": 0.001}
    (tmp_path / "rms" / "summary.json").write_text(json.dumps(s))
    sgd, rms = load_run(tmp_path / "sgd"), load_run(tmp_path / "rms")
    assert "twin_role" not in sgd.summary and twin_role(sgd) == "warped" and twin_role(rms) == "plain_ste"
    assert pair_words(sgd) == "tanh(k=5.5) vs STE, 2 bits, warped twin; sgd (warp rule)"
    assert pair_words(rms) == "tanh(k=5.5) vs STE, 2 bits, plain twin; rmsprop (identity rule)"


def test_paired_panels_share_axes_and_legends_sit_off_the_data(tmp_path):
    write_run(tmp_path / "r")
    run, w = load_run(tmp_path / "r"), load_weights(tmp_path / "r" / "weights_sample.pt")
    curves = fig_curves(run)
    assert all(ax.get_legend() is None for ax in curves.axes) and len(curves.legends) == 1  # below the panels
    bbox = curves.legends[0].get_window_extent(curves.canvas.get_renderer())
    top = curves.axes[0].get_window_extent(curves.canvas.get_renderer())
    assert bbox.y1 <= min(ax.get_window_extent().y0 for ax in curves.axes) + 1 and bbox.y1 < top.y0
    train, test = curves.axes[0], curves.axes[1]
    assert train.get_shared_y_axes().joined(train, test) and train.get_ylim() == test.get_ylim()
    lo, hi = train.get_ylim()
    assert lo <= 0.5 and hi >= 2.3  # both curves inside the one scale (train from 1.5 down, test from 2.3)
    for fig in (fig_movement(run, w), fig_alignment(run, w)):
        a, b = fig.axes[:2]
        assert a.get_shared_y_axes().joined(a, b) and a.get_ylim() == b.get_ylim() and a.get_xlim() == b.get_xlim()
        plt.close(fig)
    fig = fig_alignment(run, w)
    legend = fig.axes[0].get_legend()
    points = [c for c in fig.axes[0].collections if c.get_label() and not c.get_label().startswith("_")]
    handles = [h for h in legend.legend_handles if hasattr(h, "get_sizes")]
    assert points and [list(h.get_sizes()) for h in handles] == [list(c.get_sizes()) for c in points]
    plt.close("all")


def _experiment(log_dir):
    ea = EventAccumulator(str(log_dir)).Reload()
    data = ea.PluginTagToContent("hparams")
    exps = [plugin_data_pb2.HParamsPluginData.FromString(v).experiment for k, v in data.items()
            if k.endswith("experiment")]
    return exps


def test_a_sweeps_experiment_lists_what_differs_first(tmp_path):
    base = {"estimator": "tanh(k=5.5)", "twin_estimator": "ste", "bits": 2, "alpha": 0.61, "lr": 0.01, "seed": 0}
    runs = [base, {**base, "seed": 1}, {**base, "lr": 0.02}]
    write_experiment(tmp_path, runs, [HEADLINE, "est/test_acc", "pair/quantized_agreement"])
    (exp,) = _experiment(tmp_path)
    differs = {h.name: h.differs for h in exp.hparam_infos}
    assert differs == {"lr": True, "seed": True, "estimator": False, "twin_estimator": False, "bits": False,
                       "alpha": False}
    backend_context._sort_and_reduce_to_hparams_limit(exp, 2)  # what TensorBoard shows first (and checks)
    assert [h.name for h in exp.hparam_infos] == ["lr", "seed"]
    assert [m.name.tag for m in exp.metric_infos][0] == HEADLINE


def test_the_sweep_writes_its_experiment_from_the_summaries(tmp_path):
    from qatrun.sweep import HPARAMS_DIR, hparams_experiment

    for i, (lr, seed) in enumerate([(0.01, 0), (0.01, 1)]):
        d = tmp_path / f"{i}_seed={seed}"
        write_run(d, lr=lr, seed=seed, weights=False)
        s = json.loads((d / "summary.json").read_text())
        s["hparams"] = {"estimator": "tanh(k=5.5)", "lr": lr, "seed": seed, "k": np.nan}
        (d / "summary.json").write_text(json.dumps(s))
    hparams_experiment(tmp_path)
    (exp,) = _experiment(tmp_path / HPARAMS_DIR)
    assert {h.name for h in exp.hparam_infos if h.differs} == {"seed"}
    assert exp.metric_infos[0].name.tag == HEADLINE
    d = tmp_path / "2_lr=0.02"  # the sweep run again with one more point: one experiment, the new one
    write_run(d, lr=0.02, seed=0, weights=False)
    s = json.loads((d / "summary.json").read_text())
    s["hparams"] = {"estimator": "tanh(k=5.5)", "lr": 0.02, "seed": 0, "k": np.nan}
    (d / "summary.json").write_text(json.dumps(s))
    hparams_experiment(tmp_path)
    (exp,) = _experiment(tmp_path / HPARAMS_DIR)
    assert {h.name for h in exp.hparam_infos if h.differs} == {"seed", "lr"}
