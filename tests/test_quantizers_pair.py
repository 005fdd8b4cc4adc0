"""The quantizers in the pair: every weight quantizer and activation setting trains every kind of model; the
default is the run before the quantizers, bit for bit; resume is exact; one range on every channel is
``tensor`` and a frozen learned step is its fixed grid; the ranges are state (checkpoint, weight sample,
torchrun ranks); bad input is one line with nothing created."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import qatrun.train as train_mod
from qatrun import checkpoint as ckpt
from qatrun.build import activation_quantizers
from qatrun.config import fingerprint as config_fingerprint
from qatrun.quantizers.dynamic import dynamic_range
from qatrun.quantizers.ranges import channel_max_abs
from qatrun.stop import Interrupted
from qatrun.train import train
from tests.conftest import make_cfg
from tests.test_cli import refused

REPO = Path(__file__).resolve().parents[1]
# Two steps on 64 MNIST examples: a second or two per run on 2 cores.
STEPS2 = ["dataset.batch_size=16", "dataset.eval_batch_size=32", "dataset.train_subset=64", "dataset.test_subset=32",
          "trainer.max_steps=2", "trainer.log_every=2", "trainer.eval_every=2", "trainer.checkpoint_every=2",
          "trainer.progress=false", "trainer.scatter_sample=100", "device=cpu"]
SMALL = ["model.width=4", "model.hidden=8"]
MODELS = {"small_cnn": SMALL, "resnet18": ["model=resnet18"],
          "torchvision": ["model=torchvision", "model.arch=mobilenet_v3_small"],
          "custom": ["model=custom", "model.target=tests.usercode:tiny_net"]}
# setting -> (overrides, weight quantizer, per channel, activation quantizer and bits or None, in the theorem)
SETTINGS = {
    "tensor": ([], "tensor", False, None, True),
    "channel": (["quantizer=channel"], "channel", True, None, True),
    "lsq": (["quantizer=lsq"], "lsq", False, None, False),
    "lsq_channel": (["quantizer=lsq", "quantizer.scope=channel"], "lsq", True, None, False),
    "dynamic_absmean": (["quantizer=dynamic"], "dynamic", False, None, False),
    "dynamic_max_abs": (["quantizer=dynamic", "quantizer.stat=max_abs", "quantizer.scope=channel"], "dynamic", True,
                        None, False),
    "fixed4": (["activation=fixed"], "tensor", False, ("fixed", 4), True),
    "fixed2": (["activation=fixed", "activation.bits=2"], "tensor", False, ("fixed", 2), True),
    "pact4": (["activation=pact"], "tensor", False, ("pact", 4), True),
    "pact2": (["activation=pact", "activation.bits=2"], "tensor", False, ("pact", 2), True),
    "lsq_pact2": (["quantizer=lsq", "activation=pact", "activation.bits=2"], "lsq", False, ("pact", 2), False),
}


def capture_pairs(monkeypatch) -> list:
    """The pairs ``train`` builds, kept for inspection."""
    pairs, real = [], train_mod.pair_from_spec
    monkeypatch.setattr(train_mod, "pair_from_spec", lambda *a, **k: pairs.append(real(*a, **k)) or pairs[-1])
    return pairs


def same(a, b) -> bool:
    """Equal, NaN equal to NaN (a figure not defined yet), lists and dicts element by element."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def optimized(pair, run: int) -> set:
    return {id(p) for g in pair.optims[run].param_groups for p in g["params"]}


def check_weight_quantizers(pair, kind: str, per_channel: bool) -> None:
    """Every quantized layer of both runs holds the chosen quantizer, which did what it is for."""
    learned_moved, moved = [], []  # two small steps may leave a large layer's mean |w| as it was in fp32
    for run, layers in enumerate(pair.layers):
        for i, (name, layer) in enumerate(layers):
            wq = layer.wq
            assert wq.name == kind and wq.per_channel == per_channel, (name, wq)
            m = layer.m
            shape = (layer.weight.shape[0],) + (1,) * (layer.weight.dim() - 1) if per_channel else ()
            assert (isinstance(m, float) and not per_channel) or tuple(m.shape) == shape, (name, m)
            if kind == "lsq":
                assert id(wq.step) in optimized(pair, run)  # the optimizer trains the step
                learned_moved.append(not torch.equal(wq.step, wq.step_ref))
            elif kind == "dynamic":  # the last range used is the current weights' statistic
                assert torch.equal(wq.qrange, dynamic_range(layer.weight, wq.stat, per_channel, wq.c)), name
                moved.append(not torch.equal(wq.qrange, dynamic_range(pair.weights0[run][i], wq.stat, per_channel,
                                                                      wq.c)))
            else:  # fixed: the estimator run's initial range, which the twin shares
                est = pair.layers[0][i][1]
                assert torch.equal(wq.qrange, est.wq.qrange), name
                if kind == "channel":
                    assert torch.equal(wq.qrange, channel_max_abs(pair.weights0[0][i])), name
    if kind == "lsq":  # a step whose update is under half its fp32 ulp stays (MobileNet: one depthwise layer of 104)
        assert sum(learned_moved) >= 0.9 * len(learned_moved), learned_moved
    if kind == "dynamic":
        assert any(moved), moved


def check_activations(pair, s: dict, act) -> None:
    names = s["quantized_layers"]
    if act is None:
        assert s["quantized_inputs"] == []
        assert not any("aq" in layer._modules for layers in pair.layers for _, layer in layers)
        return
    assert s["quantized_inputs"] == names[1:] and len(names) > 1
    for run, layers in enumerate(pair.layers):
        assert "aq" not in layers[0][1]._modules  # the first layer sees the data
        for i, (name, layer) in enumerate(layers[1:], 1):
            aq = layer.aq
            assert (aq.name, aq.bits) == act and aq._calibrated and bool(aq.calibrated), name
            if act[0] == "fixed":  # calibrated once, on the estimator run, and shared with the twin
                assert float(aq.arange) > 0 and torch.equal(aq.arange, pair.layers[0][i][1].aq.arange)
            else:
                assert id(aq.alpha) in optimized(pair, run)


# ResNet-18 (11M weights) and MobileNet take a minute or two each on 2 cores: every weight quantizer and one setting
# of each activation quantizer there; every setting on the small CNN and the custom module.
BIG = ("channel", "lsq", "lsq_channel", "dynamic_absmean", "dynamic_max_abs", "fixed4", "pact2")
MATRIX = [pytest.param(setting, model, marks=pytest.mark.slow if model in ("resnet18", "torchvision") else ())
          for setting in SETTINGS for model in MODELS if model in ("small_cnn", "custom") or setting in BIG]


@pytest.mark.parametrize("setting,model", MATRIX)
def test_every_setting_trains_every_model(setting, model, tmp_path, monkeypatch):
    overrides, kind, per_channel, act, in_theorem = SETTINGS[setting]
    pairs = capture_pairs(monkeypatch)
    s = train(make_cfg(*STEPS2, *MODELS[model], *overrides, tiny=False), tmp_path / "run")
    assert s["steps"] == 2 and s["quantized_layers"]
    for key in ("est/loss", "twin/loss", "est/test_loss", "twin/test_loss"):
        assert math.isfinite(s[key]), key
    (pair,) = pairs
    assert [n for n, _ in pair.layers[0]] == [n for n, _ in pair.layers[1]] == s["quantized_layers"]
    check_weight_quantizers(pair, kind, per_channel)
    check_activations(pair, s, act)
    assert s["in_theorem"] is in_theorem and s["hparams"]["in_theorem"] is in_theorem
    assert s["hparams"]["quantizer"] == kind and s["hparams"]["activation"] == (act[0] if act else "none")
    if kind in ("lsq", "dynamic"):  # the grid moves: its drift is measured, the alignment through M is not defined
        assert s["pair/range_drift"] >= 0 and s["pair/alignment_error"] is None
    else:
        assert "pair/range_drift" not in s and math.isfinite(s["pair/alignment_error"])


@pytest.mark.parametrize("act", ["fixed", "pact"])
def test_activation_ranges_come_from_the_first_training_batch(act, tmp_path, monkeypatch):
    """Calibrated on the estimator run's first training batch before the step-0 evaluation (which would otherwise
    calibrate on a test batch), the twin given the same; ``fixed`` keeps them, ``pact`` trains from them."""
    from qatrun.data import build_data
    from qatrun.pair import Pair
    from qatrun.spec import build as build_spec

    clips = lambda pair: [a.clip().detach().clone() for m in pair.models for a in activation_quantizers(m)]
    real, seen = Pair.calibrate, []
    monkeypatch.setattr(Pair, "calibrate", lambda self, x: (real(self, x), seen.append(clips(self))))
    cfg = make_cfg(*STEPS2, *SMALL, f"activation={act}", tiny=False)
    pairs = capture_pairs(monkeypatch)
    train(cfg, tmp_path / "run")
    spec = build_spec(cfg)
    data = build_data(spec.data, torch.device("cpu"), spec.seed, 1, 0, **spec.data_options)
    first, test = (train_mod.pair_from_spec(spec, torch.device("cpu"), 2) for _ in range(2))
    real(first, data.batch(0)[0])
    real(test, next(iter(data.test_batches()))[0])
    got, want, other = seen[0], clips(first), clips(test)
    assert len(got) == 2 and all(torch.equal(a, b) for a, b in zip(got, want)) and torch.equal(got[0], got[1])
    assert not torch.equal(got[0], other[0])
    if act == "fixed":
        assert all(torch.equal(a, b) for a, b in zip(clips(pairs[0]), got))


# ---------------------------------------------------------------------------------------------------------------
# The default is the run before the quantizers: figures of commit a937b6c (the one before the weight quantizers),
# these configs trained on CPU with 2 threads (torch 2.14.1): the fingerprint, every figure, both loss curves.
PINNED = {
    "adam_sym": ("eba0507441e63000", {
        'est/loss': 1.1686809062957764,
        'est/test_acc': 0.74,
        'est/test_loss': 1.0428407920729368,
        'layers/conv1/quantized_agreement': 1.0,
        'layers/conv2/quantized_agreement': 1.0,
        'pair/alignment_distance': 5.491097930130178,
        'pair/alignment_distance_identity': 5.491097930130178,
        'pair/alignment_distance_mirror': 2858.5623546655647,
        'pair/alignment_error': 0.01466976761316887,
        'pair/alignment_error_identity': 0.01466976761316887,
        'pair/alignment_error_mirror': 7.636805240824125,
        'pair/changepoint_error': 0.0,
        'pair/changepoint_error_backtrack': 0.0,
        'pair/changepoint_error_compressed': 0.0,
        'pair/changes_a': 374.0,
        'pair/changes_b': 374.0,
        'pair/distance_travelled': 374.31390018754536,
        'pair/incorrect_inference_agreement': 1.0,
        'pair/inference_agreement': 1.0,
        'pair/logit_mad': 0.0,
        'pair/logit_mse': 0.0,
        'pair/mover_agreement': 1.0,
        'pair/mover_agreement_untrained': 0.12422360248447205,
        'pair/mover_fraction': 0.017200854700854702,
        'pair/mover_sequence_agreement': 1.0,
        'pair/mover_sequence_agreement_untrained': 0.0,
        'pair/oscillating_fraction_a': 0.002457264957264957,
        'pair/oscillating_fraction_b': 0.002457264957264957,
        'pair/oscillations_a': 52.0,
        'pair/oscillations_b': 52.0,
        'pair/quantized_agreement': 1.0,
        'pair/quantized_agreement_untrained': 0.9849358974358975,
        'pair/quantized_mismatches': 0.0,
        'pair/sequence_agreement': 1.0,
        'pair/sequence_agreement_backtrack': 1.0,
        'pair/sequence_agreement_compressed': 1.0,
        'pair/sequence_agreement_untrained': 0.9827991452991452,
        'twin/loss': 1.1686809062957764,
        'twin/test_acc': 0.74,
        'twin/test_loss': 1.0428407920729368,
    }, [1.9951765537261963, 1.1686809062957764], [1.9951765537261963, 1.1686809062957764]),
    "sgd": ("68b445635d4e66e2", {
        'est/loss': 1.9527784585952759,
        'est/test_acc': 0.6,
        'est/test_loss': 1.8851786016225816,
        'layers/conv1/quantized_agreement': 1.0,
        'layers/conv2/quantized_agreement': 1.0,
        'pair/alignment_distance': 0.08025000416201614,
        'pair/alignment_distance_identity': 1269.9491433358694,
        'pair/alignment_distance_mirror': 0.08025000416201614,
        'pair/alignment_error': 0.0051500272975876565,
        'pair/alignment_error_identity': 81.4987216888323,
        'pair/alignment_error_mirror': 0.0051500272975876565,
        'pair/changepoint_error': 0.0,
        'pair/changepoint_error_backtrack': 0.0,
        'pair/changepoint_error_compressed': 0.0,
        'pair/changes_a': 75.0,
        'pair/changes_b': 75.0,
        'pair/distance_travelled': 15.582442485228444,
        'pair/incorrect_inference_agreement': 1.0,
        'pair/inference_agreement': 1.0,
        'pair/logit_mad': 0.0,
        'pair/logit_mse': 0.0,
        'pair/mover_agreement': 1.0,
        'pair/mover_agreement_untrained': 0.07142857142857142,
        'pair/mover_fraction': 0.0037393162393162395,
        'pair/mover_sequence_agreement': 1.0,
        'pair/mover_sequence_agreement_untrained': 0.0,
        'pair/oscillating_fraction_a': 0.0002670940170940171,
        'pair/oscillating_fraction_b': 0.0002670940170940171,
        'pair/oscillations_a': 5.0,
        'pair/oscillations_b': 5.0,
        'pair/quantized_agreement': 1.0,
        'pair/quantized_agreement_untrained': 0.9965277777777778,
        'pair/quantized_mismatches': 0.0,
        'pair/sequence_agreement': 1.0,
        'pair/sequence_agreement_backtrack': 1.0,
        'pair/sequence_agreement_compressed': 1.0,
        'pair/sequence_agreement_untrained': 0.9962606837606838,
        'twin/loss': 1.9527784585952759,
        'twin/test_acc': 0.6,
        'twin/test_loss': 1.8851786016225816,
    }, [2.243598699569702, 1.9527784585952759], [2.243598699569702, 1.9527784585952759]),
}
PIN_RUNS = {"sgd": ["trainer.max_steps=10"], "adam_sym": ["trainer.max_steps=10", "optimizer=adam",
                                                          "estimator.grid=symmetric"]}


@pytest.mark.slow
def test_the_default_is_bit_for_bit_the_run_before_the_quantizers(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # CPU figures depend on the thread count: the pinned ones ran with 2
    try:
        runs = {name: train(make_cfg(*o), tmp_path / name) for name, o in PIN_RUNS.items()}
        explicit = train(make_cfg(*PIN_RUNS["sgd"], "quantizer=tensor"), tmp_path / "explicit")
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "explicit" / "summary.json").read_bytes() == (tmp_path / "sgd" / "summary.json").read_bytes()
    assert explicit["config"]["quantizer"] == {"name": "tensor", "scale": None} and explicit["in_theorem"] is True
    for name, s in runs.items():
        fingerprint, figures, est_loss, twin_loss = PINNED[name]
        # the added keys at their defaults leave the identity as it was (the thread count, recorded since, aside)
        assert config_fingerprint(s["config"], {"qatrun": s["provenance"]["qatrun"]}) == fingerprint, name
        assert {k: s[k] for k in figures} == figures, name
        assert s["history"]["est/loss"] == est_loss and s["history"]["twin/loss"] == twin_loss, name
        assert s["quantized_inputs"] == [] and "pair/range_drift" not in s


# ---------------------------------------------------------------------------------------------------------------
# Resume: SIGTERM mid-run (in this process, between two logs), then resume: the figures and the state equal an
# uninterrupted run's bit for bit, the learned steps, PACT's clips and the calibrated ranges included.
RESUMED = [t for t in STEPS2 if t.split("=")[0] not in ("trainer.max_steps", "trainer.log_every", "trainer.eval_every",
                                                       "trainer.checkpoint_every")] + [
    "trainer.max_steps=6", "trainer.log_every=2", "trainer.eval_every=3", "trainer.checkpoint_every=100", *SMALL]
# state a setting must carry through a checkpoint (a key suffix of the quantized layers' state)
CARRIED = {"channel": ["wq.qrange"], "lsq": ["wq.step"], "lsq_channel": ["wq.step"], "dynamic_absmean": ["wq.qrange"],
           "dynamic_max_abs": ["wq.qrange"], "fixed4": ["aq.arange", "aq.signed"], "pact2": ["aq.alpha"],
           "lsq_pact2": ["wq.step", "aq.alpha"]}


def sigterm_after(monkeypatch, at: int):
    """SIGTERM to this process right after step ``at`` (0-based): the run checkpoints step ``at + 1`` and stops."""
    from qatrun.pair import Pair

    real = Pair.step

    def step(self, i, x, y, timer=None):
        real(self, i, x, y, timer)
        if i == at:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Pair, "step", step)
    return lambda: monkeypatch.setattr(Pair, "step", real)


def model_states(run_dir: Path) -> list[dict]:
    return ckpt.load(run_dir / "checkpoint.pt")["state"]["pair"]["models"]


@pytest.mark.slow
@pytest.mark.parametrize("setting", CARRIED)
def test_sigterm_then_resume_is_exact(setting, tmp_path, monkeypatch):
    clip = ["activation.percentile=95"] if "pact" in setting else []  # inputs above the clip: alpha learns
    cfg = make_cfg(*RESUMED, *SETTINGS[setting][0], *clip, tiny=False)
    whole = train(cfg, tmp_path / "whole")
    restore = sigterm_after(monkeypatch, 2)
    with pytest.raises(Interrupted) as exc:
        train(cfg, tmp_path / "cut")
    restore()
    assert exc.value.step == 3 and not (tmp_path / "cut" / "summary.json").exists()
    mid = model_states(tmp_path / "cut")
    resumed = train(cfg, tmp_path / "cut")  # the same directory: it continues from the step-3 checkpoint
    assert (tmp_path / "cut" / "summary.json").read_bytes() == (tmp_path / "whole" / "summary.json").read_bytes()
    assert same(resumed["history"], whole["history"]) and resumed["steps"] == 6
    final, ref = model_states(tmp_path / "cut"), model_states(tmp_path / "whole")
    for run in (0, 1):
        assert ref[run].keys() == final[run].keys()
        for k, v in ref[run].items():
            assert torch.equal(final[run][k], v), (run, k)
        carried = [k for k in ref[run] if any(k.endswith(c) for c in CARRIED[setting])]
        assert carried, CARRIED[setting]
        if any(c.endswith(("step", "alpha")) for c in CARRIED[setting]):  # learned: it moved after the checkpoint
            assert any(not torch.equal(mid[run][k], ref[run][k]) for k in carried if k.endswith(("step", "alpha")))
    sample = torch.load(tmp_path / "cut" / "weights_sample.pt")
    for k, v in torch.load(tmp_path / "whole" / "weights_sample.pt").items():
        assert torch.equal(sample[k], v), k


# ---------------------------------------------------------------------------------------------------------------
# At pair level: one range on every channel is `tensor`; a learned step that never moves is its fixed grid.
# The training is compared bit for bit (every weight, loss, accuracy, agreement and change point); the distance the
# twin travelled sums |dw| / m per layer (tensor) or weight by weight (per channel, moving grids): the same value
# to fp32's rounding of the per-layer sum, not bit for bit.
SHORT = [t for t in STEPS2 if t.split("=")[0] not in ("trainer.max_steps", "trainer.log_every", "trainer.eval_every",
                                                     "trainer.checkpoint_every")] + [
    "trainer.max_steps=4", "trainer.log_every=2", "trainer.eval_every=4", "trainer.checkpoint_every=4"]
EQUAL_CHANNELS = ["model=custom", "model.target=tests.usercode:equal_channels_net", "model.he_init=false",
                  "estimator.grid=symmetric"]  # symmetric: the tensor's range is its max-abs, 0.5 like each channel's
SKIP = ("config", "hparams", "fingerprint", "columns", "in_theorem", "wall_s", "history")


def travelled(key: str) -> bool:
    return key == "pair/distance_travelled" or key.startswith("pair/alignment_")


def trained_alike(a_dir: Path, b_dir: Path) -> None:
    """Every weight, bias and buffer of both runs equal bit for bit (the quantizers' own state aside)."""
    for sa, sb in zip(model_states(a_dir), model_states(b_dir)):
        keys = [k for k in sa if ".wq." not in k]
        assert keys == [k for k in sb if ".wq." not in k]
        for k in keys:
            assert torch.equal(sa[k], sb[k]), k


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_one_range_on_every_channel_is_tensor(optimizer, tmp_path):
    base = [*SHORT, *EQUAL_CHANNELS, f"optimizer={optimizer}"]
    t = train(make_cfg(*base, tiny=False), tmp_path / "tensor")
    c = train(make_cfg(*base, "quantizer=channel", tiny=False), tmp_path / "channel")
    states = model_states(tmp_path / "channel")[0]
    qranges = [v for k, v in states.items() if k.endswith("wq.qrange")]
    assert len(qranges) == 2 and all(q.shape[0] > 1 and bool((q == 0.5).all()) for q in qranges)
    assert all(float(v) == 0.5 for k, v in model_states(tmp_path / "tensor")[0].items() if k.endswith("wq.qrange"))
    trained_alike(tmp_path / "tensor", tmp_path / "channel")
    assert c["in_theorem"] is True and c["pair/distance_travelled"] > 0
    for k, v in t.items():
        if k not in SKIP:
            assert same(c[k], v) if not travelled(k) else c[k] == pytest.approx(v, rel=1e-5), k
    for k, v in t["history"].items():
        assert same(c["history"][k], v) if not travelled(k) else c["history"][k] == pytest.approx(v, rel=1e-5), k


@pytest.mark.slow
@pytest.mark.parametrize("grid,scope,optimizer", [("he_uniform", "tensor", "sgd"), ("symmetric", "tensor", "sgd"),
                                                  ("he_uniform", "channel", "adam"), ("symmetric", "channel", "sgd")])
def test_a_frozen_learned_step_is_its_fixed_grid(grid, scope, optimizer, tmp_path, monkeypatch):
    base = [*SHORT, *SMALL, f"estimator.grid={grid}", f"optimizer={optimizer}"]
    fixed = train(make_cfg(*base, f"quantizer={scope}", tiny=False), tmp_path / "fixed")
    real = train_mod.build_run

    def frozen(*args, **kwargs):  # lr 0 for the step: no gradient, so the optimizer never moves it (the twin's too)
        net = real(*args, **kwargs)
        for name, p in net.named_parameters():
            if name.endswith("wq.step"):
                p.requires_grad_(False)
        return net

    monkeypatch.setattr(train_mod, "build_run", frozen)
    lsq = train(make_cfg(*base, "quantizer=lsq", "quantizer.init=fixed", f"quantizer.scope={scope}", tiny=False),
                tmp_path / "lsq")
    for state in model_states(tmp_path / "lsq"):
        steps = [k for k in state if k.endswith("wq.step")]
        assert steps and all(torch.equal(state[k], state[k.replace("step", "step_ref")]) for k in steps)
    trained_alike(tmp_path / "fixed", tmp_path / "lsq")
    assert lsq["in_theorem"] is False and lsq["pair/range_drift"] == 0.0  # the grid may move: it did not
    for k, v in fixed.items():
        if k in SKIP or k.startswith("pair/alignment_error"):
            assert k in SKIP or lsq[k] is None, k  # where a grid can move the alignment through M is not defined
        else:
            assert same(lsq[k], v) if not travelled(k) else lsq[k] == pytest.approx(v, rel=1e-5), k
    for k, v in fixed["history"].items():
        if not k.startswith("pair/alignment_error"):
            assert same(lsq["history"][k], v) if not travelled(k) else lsq["history"][k] == pytest.approx(v, rel=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# The ranges are state: in the checkpoint (a fresh pair loaded from it holds the trained ranges) and in the weight
# sample (``m`` and ``m_twin``, each run's own range of each sampled weight).
def ranges_of(layers) -> list[torch.Tensor]:
    return [torch.as_tensor(layer.m, dtype=torch.float64).reshape(-1) for _, layer in layers]


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["lsq_channel", "channel"])
def test_the_ranges_are_in_the_checkpoint_and_the_weight_sample(setting, tmp_path, monkeypatch):
    from qatrun.spec import build as build_spec

    cfg = make_cfg(*SHORT, *SMALL, *SETTINGS[setting][0], "trainer.scatter_sample=5000", tiny=False)
    pairs = capture_pairs(monkeypatch)
    s = train(cfg, tmp_path / "run")
    trained = pairs[0]
    fresh = train_mod.pair_from_spec(build_spec(cfg), torch.device("cpu"), 4)
    initial = [r.clone() for r in ranges_of(fresh.layers[0])]
    fresh.load_state_dict(ckpt.load(tmp_path / "run" / "checkpoint.pt")["state"]["pair"])
    est, twin = ranges_of(fresh.layers[0]), ranges_of(fresh.layers[1])
    assert all(torch.equal(a, b) for a, b in zip(est + twin, ranges_of(trained.layers[0]) + ranges_of(trained.layers[1])))
    moved = [not torch.equal(a, b) for a, b in zip(initial, est)]  # learned: the checkpoint holds the trained steps
    assert all(moved) if setting == "lsq_channel" else not any(moved)
    sample = torch.load(tmp_path / "run" / "weights_sample.pt")
    assert sample["m"].numel() == min(5000, sum(layer.weight.numel() for _, layer in trained.layers[0]))
    assert bool(torch.isin(sample["m"], torch.cat(est).float()).all())  # each weight's own range, from its channel
    assert bool(torch.isin(sample["m_twin"], torch.cat(twin).float()).all())
    if setting == "lsq_channel":  # each run trained its own steps: the grids drifted apart, and the sample says so
        drift = torch.stack([(a.log() - b.log()).abs().mean() for a, b in zip(est, twin)]).mean()
        assert s["pair/range_drift"] > 0 and s["pair/range_drift"] == pytest.approx(float(drift), rel=1e-9)
        assert bool((sample["m"] != sample["m_twin"]).any())
        assert all(not torch.equal(a, b) for a, b in zip(est, twin))
    else:  # one fixed range per channel, the same in both runs
        assert torch.equal(sample["m"], sample["m_twin"]) and all(torch.equal(a, b) for a, b in zip(est, twin))
        assert "pair/range_drift" not in s and len(torch.cat(est).unique()) > len(est)  # a range per channel


# ---------------------------------------------------------------------------------------------------------------
# torchrun (gloo, 2 processes): every rank ends with the same learned steps and activation ranges. Each rank saves
# its quantizers' state when the run ends; rank 0's checkpoint holds the same.
RANK_DUMP = '''
import os, sys, torch
import qatrun.train as T
from qatrun.cli import main
pairs, real, out = [], T.pair_from_spec, sys.argv[1]  # the command line then hands sys.argv to Hydra
T.pair_from_spec = lambda *a, **k: pairs.append(real(*a, **k)) or pairs[-1]
try:
    main(sys.argv[2:])
finally:
    state = []
    for model in pairs[0].models:
        own = {k: v for k, v in model.state_dict().items() if ".wq." in k or ".aq." in k}
        own |= {f"{n}.aq._signed": torch.tensor(m.aq._signed) for n, m in model.named_modules() if "aq" in m._modules}
        state.append(own)
    torch.save(state, os.path.join(out, "rank" + os.environ["RANK"] + ".pt"))
'''


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["fixed", "pact"])
def test_torchrun_ranks_keep_the_same_steps_and_activation_ranges(activation, tmp_path):
    script = tmp_path / "rank_dump.py"
    script.write_text(RANK_DUMP)
    args = [*[t for t in STEPS2 if "max_steps" not in t], "trainer.max_steps=4", "quantizer=lsq",
            "quantizer.scope=channel", f"activation={activation}", *SMALL, f"hydra.run.dir={tmp_path / 'run'}"]
    port = 29531 if activation == "fixed" else 29532
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
                          str(script), str(tmp_path), *args], capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["distributed"] == {"backend": "gloo", "world_size": 2} and s["quantized_inputs"] == ["conv2"]
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    saved = model_states(tmp_path / "run")
    for run in (0, 1):
        assert r0[run].keys() == r1[run].keys()
        for k, v in r0[run].items():
            assert torch.equal(v, r1[run][k]), (run, k)  # rank 1 holds rank 0's steps, clips and ranges
            if k in saved[run]:
                assert torch.equal(saved[run][k], r1[run][k]), (run, k)
        steps = [k for k in r0[run] if k.endswith("wq.step")]
        assert steps and all(not torch.equal(r0[run][k], r0[run][k + "_ref"]) for k in steps)  # they trained
        acts = [k for k in r0[run] if k.endswith("aq.calibrated")]
        assert acts and all(bool(r0[run][k]) for k in acts)


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing created.
@pytest.mark.slow
@pytest.mark.parametrize("argv,words", [
    (["quantizer=lsqq"], "did you mean lsq?"),
    (["activation=pactt"], "did you mean pact?"),
    (["quantizer=lsq", "quantizer.scop=channel"], "did you mean quantizer.scope?"),
    (["activation=fixed", "activation.bits=0"], "activation.bits must be an integer from 1 to 8, got 0"),
    (["activation=pact", "activation.bits=9"], "activation.bits must be an integer from 1 to 8, got 9"),
    (["quantizer=channel", "quantizer.percentile=0"], "quantizer.percentile must be a number in (0, 100]"),
    (["quantizer=channel", "quantizer.percentile=101"], "quantizer.percentile must be a number in (0, 100]"),
    (["activation=fixed", "activation.percentile=101"], "activation.percentile must be a number in (0, 100]"),
    (["quantizer=lsq", "quantizer.init=0"], "the initial step must be a positive number"),
    (["quantizer=lsq", "quantizer.init=-0.5"], "the initial step must be a positive number"),
    (["model=custom", "model.target=tests.usercode:zero_channel_net", "model.he_init=false", "quantizer=channel"],
     "layer 2: output channel 3: all its weights are zero"),
])
def test_bad_quantizer_input_is_one_line(tmp_path, monkeypatch, argv, words):
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the custom model's module, from any directory
    line = refused(tmp_path, *argv, "device=cpu")
    assert words in line, line


@pytest.mark.slow
def test_a_checkpoint_resumed_under_another_quantizer_is_refused(tmp_path):
    from qatrun.checkpoint import CheckpointError

    run = tmp_path / "run"
    train(make_cfg(*STEPS2, *SMALL, tiny=False), run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    work = tmp_path / "work"
    work.mkdir()
    line = refused(work, f"resume={run}", "quantizer=lsq")
    assert "quantizer (saved tensor, given lsq)" in line and "cannot resume" in line
    with pytest.raises(CheckpointError, match=r"quantizer\.name"):  # the Python API names the key itself
        train(make_cfg(*STEPS2, *SMALL, "quantizer=lsq", tiny=False), run)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


# ---------------------------------------------------------------------------------------------------------------
# The benchmark's quantizer case runs and reports its ratios (a benchmark, never a timed test: no limit checked).
@pytest.mark.slow
def test_the_quantizer_bench_case_reports_its_ratios(tmp_path, capsys):
    from qatrun.bench import cli as bench_cli
    from qatrun.bench.quantizers import LIMITS, SETTINGS as BENCH_SETTINGS

    out = tmp_path / "bench.json"
    bench_cli.run(["--cases", "quantizers", "--batch", "8", "--warmup", "1", "--steps", "1", "--rounds", "2",
                   "--log-every", "1", "--out", str(out), "--quiet"])
    r = json.loads(out.read_text())["cases"]["quantizers"]
    assert set(r["ratios"]) == set(BENCH_SETTINGS) and r["rounds"] == 2
    for name, ratios in r["ratios"].items():
        assert set(ratios) == {"pair_over_two_singles", "single_over_plain", "pair_over_plain", "single_over_tensor"}
        assert all(v > 0 and math.isfinite(v) for v in ratios.values()), name
        assert len(r["ratio_spread"][name]["pair_over_two_singles"]) and r["ms_per_step"][f"{name}/pair"] > 0
    assert r["ratios"]["tensor"]["single_over_tensor"] == 1.0
    keys = {t["key"] for t in r["targets"]}
    assert keys == {f"{n}/{k}" for n in BENCH_SETTINGS for k in LIMITS}
    assert all(t["pass"] == (t["value"] <= t["limit"]) for t in r["targets"])
    table = capsys.readouterr().out
    assert "pair/2 singles" in table and all(f"  {n} " in table for n in BENCH_SETTINGS)
