"""The quantizer atlas and the quantizers in the report's words: per quantizer setting and optimizer, the predicted
twin against the other rule's twin, the jitter floor and the untrained twin, a verdict by the optimizer atlas's rule,
and "outside the theorem: measured" where the grid moves; a default run's label as before; a malformed new field
skips its run with a note. Synthetic summaries, no training."""

import json

import pytest

from qatrun import report
from qatrun.report.names import pair_words, quantizer_setting
from qatrun.report.quantizer_atlas import quantizer_atlas
from qatrun.report.runs import find_runs
from tests.test_atlas import TWINS
from tests.test_report import write_run

RULES = {"sgd": "warp", "adam": "identity"}
# setting -> (config quantizer, config activation, in_theorem)
SETTINGS = {
    "tensor": ({"name": "tensor", "scale": None}, None, True),
    "lsq_channel": ({"name": "lsq", "scope": "channel", "init": "lsq", "grad_scale": True}, None, False),
    "dynamic_maxabs": ({"name": "dynamic", "stat": "max_abs", "scope": "tensor", "c": 1.0}, None, False),
    "a2_pact": ({"name": "tensor", "scale": None},
                {"name": "pact", "bits": 2, "init_alpha": None, "percentile": 100.0, "estimator": "ste"}, True),
}


def q_run(d, setting: str, opt: str, twin: str, agree: float, seed: int = 0, **extra):
    """A finished run of the quantizers block: ``twin`` is predicted, other or jitter (``test_atlas.TWINS``)."""
    lr = 0.01 if opt == "sgd" else 0.001
    write_run(d, opt=opt, lr=lr, seed=seed, weights=False)
    s = json.loads((d / "summary.json").read_text())
    quantizer, activation, inside = SETTINGS[setting]
    role, pred = TWINS[RULES[opt]][twin]
    s.update({"estimator_description": "tanh(k=5.5)", "twin_role": role, "twin_predicted": pred, "twin_rule": RULES[opt],
              "twin_estimator": "ste", "twin_lr_scale": 1.01 if twin == "jitter" else 1.0, "in_theorem": inside,
              "quantized_inputs": ["conv2"] if activation else [], "pair/mover_agreement": agree,
              "pair/mover_agreement_untrained": 0.1, "pair/mover_fraction": 0.05,
              **({} if inside else {"pair/range_drift": 0.02}), **extra})
    s["config"].update({"quantizer": quantizer, "activation": activation, "experiment_name": "quantizers"})
    s["config"]["pair"] = {"twin": {"predicted": "auto", "other": "ste" if opt == "sgd" else "full",
                                    "jitter": "self"}[twin], "twin_lr_scale": s["twin_lr_scale"]}
    (d / "summary.json").write_text(json.dumps(s))


# setting, optimizer -> mover agreement of the predicted twin, the other rule's twin, the jitter floor
FIGURES = {("tensor", "sgd"): (0.96, 0.60, 0.98), ("tensor", "adam"): (0.99, 0.70, 0.98),
           ("lsq_channel", "sgd"): (0.70, 0.60, 0.98), ("dynamic_maxabs", "adam"): (0.50, 0.70, 0.98),
           ("a2_pact", "sgd"): (0.90, 0.50, 0.98)}


def tree(root, seeds=(0, 1)):
    for (setting, opt), (p, o, j) in FIGURES.items():
        for seed in seeds:
            q_run(root / f"q_{setting}_{opt}" / f"p{seed}", setting, opt, "predicted", p, seed)
            q_run(root / f"q_{setting}_{opt}" / f"j{seed}", setting, opt, "jitter", j, seed)
            q_run(root / f"q_{setting}_{opt}" / f"o{seed}", setting, opt, "other", o, seed)


def test_rows_verdicts_and_the_outside_label(tmp_path):
    tree(tmp_path)
    rows = quantizer_atlas(find_runs([tmp_path], []))
    got = [(r["label"], r["optimizer"], r["seeds"], r["in_theorem"]) for r in rows]
    assert got == [("tensor", "sgd", 2, True), ("tensor", "adam", 2, True), ("lsq (per channel)", "sgd", 2, False),
                   ("dynamic max-abs", "adam", 2, False), ("W2 + A2 pact", "sgd", 2, True)]  # fixed grids first
    by = {(r["label"], r["optimizer"]): r for r in rows}
    t, lsq, dyn = by["tensor", "sgd"], by["lsq (per channel)", "sgd"], by["dynamic max-abs", "adam"]
    assert t["gap_closed"] == pytest.approx((0.96 - 0.60) / (0.98 - 0.60)) and t["verdict"] == "supports"
    assert lsq["gap_closed"] == pytest.approx(0.10 / 0.38) and lsq["verdict"] == "partly supports"
    assert dyn["gap_closed"] == pytest.approx(-0.2 / 0.28) and dyn["verdict"] == "does not support"
    assert by["W2 + A2 pact", "sgd"]["verdict"] == "supports"


def test_the_report_writes_the_atlas_and_says_outside_the_theorem(tmp_path):
    tree(tmp_path / "runs")
    res = report.report([tmp_path / "runs"], tmp_path / "out", formats=["png"], pair_figs=False,
                        quantizer_atlas_by=["experiment_name=quantizers"])
    out = tmp_path / "out"
    assert (out / "quantizer_atlas.png").stat().st_size > 0 and len(res["quantizer_atlas"]) == 5
    md = (out / "quantizer_atlas.md").read_text()
    assert ("| lsq (per channel) | outside the theorem: measured | sgd | warp | 0.01 | 2 | 5.0 ± 0.0 | 70.0 ± 0.0 | "
            "60.0 ± 0.0 | 98.0 ± 0.0 | 10.0 ± 0.0 | 26% | partly supports |") in md
    assert "| tensor | inside | sgd | warp | 0.01 | 2 |" in md
    findings = (out / "findings.md").read_text()
    assert "Quantizer atlas" in findings and md in findings
    lsq = next(p for p in findings.split("\n\n") if "with lsq (per channel), sgd" in p)
    assert lsq.rstrip().endswith("Outside the theorem: measured (the grid moves; the twin is the natural one, "
                                 "from the initial grid).")
    assert "Outside the theorem" not in next(p for p in findings.split("\n\n") if "with W2 + A2 pact, sgd" in p)
    table = (out / "table.md").read_text()  # the comparisons name the quantizers, and a moving grid's twin
    assert "tanh(k=5.5) vs STE, 2 bits, lsq (per channel), warped twin (outside the theorem: measured); sgd" in table
    assert "tanh(k=5.5) vs STE, 2 bits, W2 + A2 pact, warped twin; sgd (warp rule)" in table
    assert "name=" not in table and "scope=" not in table  # named in words, not repeated as keys
    # asked for runs that hold none: no atlas, a note says why
    res = report.report([tmp_path / "runs"], tmp_path / "out2", formats=["png"], pair_figs=False,
                        quantizer_atlas_by=["experiment_name=nothing"])
    assert not (tmp_path / "out2" / "quantizer_atlas.png").exists()
    assert any(n.startswith("quantizer atlas: no verdict") for n in res["notes"])


def test_a_default_run_is_labelled_as_before(tmp_path):
    """The paper's grid with float inputs adds no word: every committed label stays as it is."""
    q_run(tmp_path / "a", "tensor", "sgd", "predicted", 0.9)
    (run,) = find_runs([tmp_path / "a"], [])
    assert quantizer_setting(run.flat) == ""
    assert pair_words(run) == "tanh(k=5.5) vs STE, 2 bits, warped twin; sgd (warp rule)"
    write_run(tmp_path / "old", weights=False)  # a summary from before the quantizers: no key at all
    (old,) = find_runs([tmp_path / "old"], [])
    assert quantizer_setting(old.flat) == "" and "theorem" not in str(pair_words(old))
    # the words of the other settings, from the config (not the directory name)
    flat = lambda q, a=None: {**{f"quantizer.{k}": v for k, v in q.items()},
                              **({f"activation.{k}": v for k, v in a.items()} if a else {"activation": None}),
                              "estimator.bits": 2}
    assert quantizer_setting(flat({"name": "channel", "percentile": 99.9})) == "channel (p99.9)"
    assert quantizer_setting(flat({"name": "dynamic", "stat": "absmean", "scope": "channel", "c": 1.0})) \
        == "dynamic absmean (per channel)"
    assert quantizer_setting(flat({"name": "lsq", "scope": "tensor", "init": "fixed", "grad_scale": True},
                                  {"name": "fixed", "bits": 2, "percentile": 100.0, "estimator": "ste"})) \
        == "lsq (from the fixed grid), W2 + A2 fixed"


@pytest.mark.parametrize("field, value, why", [
    ("in_theorem", "no", "'in_theorem' is 'no': valid is true, false or null"),
    ("quantized_inputs", "conv2", "'quantized_inputs' is 'conv2': valid is a list of strings or null"),
    ("pair/range_drift", "far", "figure 'pair/range_drift' is 'far', not a number"),
])
def test_a_malformed_new_field_skips_its_run_with_a_note(tmp_path, field, value, why):
    q_run(tmp_path / "good", "lsq_channel", "sgd", "predicted", 0.9)
    q_run(tmp_path / "bad", "lsq_channel", "sgd", "predicted", 0.9, seed=1, **{field: value})
    notes: list = []
    runs = find_runs([tmp_path], notes)
    assert [r.path.name for r in runs] == ["good"]
    assert any("bad" in n and why in n for n in notes), notes


def test_moving_grid_figures_say_the_alignment_is_not_defined(tmp_path):
    """A pair whose grid moves: the alignment panels say so, the range drift is drawn, each run in its own m."""
    import numpy as np
    import torch

    from qatrun.report.figures import fig_agreement, fig_alignment, load_weights

    write_run(tmp_path / "r")
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    s.update({"in_theorem": False, "pair/alignment_error": None, "pair/range_drift": 0.03})
    s["history"].update({"pair/alignment_error": [None] * 3, "pair/range_drift": [0.0, 0.01, 0.03],
                         "pair/mover_agreement": [0.5, 0.6, 0.7]})
    s["config"]["quantizer"] = {"name": "lsq", "scope": "tensor", "init": "lsq", "grad_scale": True}
    (tmp_path / "r" / "summary.json").write_text(json.dumps(s))
    sample = torch.load(tmp_path / "r" / "weights_sample.pt")
    torch.save({**sample, "m_twin": sample["m"] * 2}, tmp_path / "r" / "weights_sample.pt")
    (run,) = find_runs([tmp_path], [])
    fig = fig_agreement(run)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("not defined (the grid moves)" in t for t in texts)
    assert fig.axes[-1].get_title().startswith("range drift") and len(fig.axes[-1].lines) == 1
    assert "outside the theorem: measured" in fig._suptitle.get_text()
    w = load_weights(tmp_path / "r" / "weights_sample.pt")
    fig = fig_alignment(run, w)
    assert any("not defined" in t.get_text() for t in fig.axes[1].texts)
    twin_y = fig.axes[0].collections[0].get_offsets()[:, 1]  # the twin in units of its own range (m_twin = 2 m)
    agree = w["level_est"] == w["level_twin"]
    assert np.allclose(np.sort(twin_y), np.sort((w["twin"] / w["m_twin"])[agree]))
