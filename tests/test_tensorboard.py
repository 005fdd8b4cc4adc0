"""TensorBoard output (issue 12): the Custom Scalars layout overlays est and twin, HParams carry the
resolved k and what ran, and no single-point hparams/* scalars clutter the Scalars tab."""

import re

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

from qatrun.train import train
from tests.conftest import make_cfg


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    d = tmp_path_factory.mktemp("tb")
    train(make_cfg("trainer.max_steps=10"), d)
    return EventAccumulator(str(d / "tb")).Reload()


@pytest.mark.slow
def test_custom_scalars_overlay_est_and_twin(events):
    (content,) = events.PluginTagToContent("custom_scalars").values()
    layout = layout_pb2.Layout()
    layout.ParseFromString(events.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    scalars = events.Tags()["scalars"]
    for title, tags in [("train loss", ["est/loss", "twin/loss"]), ("test loss", ["est/test_loss", "twin/test_loss"]),
                        ("test accuracy", ["est/test_acc", "twin/test_acc"]),
                        ("learning rate (quantized weights)", ["est/lr", "twin/lr"])]:
        matched = [t for t in scalars if any(re.search(rx, t) for rx in charts[title])]
        assert sorted(matched) == sorted(tags), title  # both runs on one chart, tag names unchanged
    agreement = [t for t in scalars if any(re.search(rx, t) for rx in charts["agreement (fraction)"])]
    assert {"pair/quantized_agreement", "pair/inference_agreement", "pair/sequence_agreement"} <= set(agreement)


@pytest.mark.slow
def test_hparams_resolved_and_no_duplicated_scalars(events):
    data = events.PluginTagToContent("hparams")
    start = next(plugin_data_pb2.HParamsPluginData.FromString(v).session_start_info
                 for k, v in data.items() if k.endswith("session_start_info"))
    hp = {k: (v.number_value if v.HasField("number_value") else v.string_value) for k, v in start.hparams.items()}
    assert hp["k"] == 5.5 and hp["estimator"] == "tanh(k=5.5)" and hp["grid"] == "he_uniform"
    assert hp["twin_role"] == "warped" and hp["twin_estimator"].startswith("ste")
    assert hp["dataset"] == "mnist" and hp["steps"] == 10 and hp["twin"] == "auto" and hp["twin_init"] == "mirror"
    scalars = events.Tags()["scalars"]
    assert not [t for t in scalars if t.startswith("hparams/")]
    # no experiment of its own: TensorBoard builds one from the sessions (differing keys first), or reads the sweep's
    assert not [k for k in data if k.endswith("experiment")]
    end = next(plugin_data_pb2.HParamsPluginData.FromString(v).session_end_info
               for k, v in data.items() if k.endswith("session_end_info"))
    assert end.status == 1  # STATUS_SUCCESS
    # change-point and mover figures are logged with the weight figures, and the summary adds no extra point
    assert [e.step for e in events.Scalars("pair/sequence_agreement")] == [0, 5, 10]
    assert [e.step for e in events.Scalars("pair/mover_agreement_untrained")][-1] == 10
    assert len(events.Scalars("pair/quantized_agreement")) == 3  # steps 0, 5, 10: no extra point
