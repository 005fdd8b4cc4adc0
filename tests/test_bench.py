"""qatrun-bench machinery on a tiny case (small CNN, batch 8): fields, ratios, and that the pair trains.

No timing assertion here: benchmarks are not unit tests.
"""

import json
import math
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from qatrun import bench
from qatrun.bench import cases, cli, measure
from qatrun.compose import compose_config
from qatrun.layers import QuantMixin

TINY = ["--cases", "cpu-small", "--batch", "8", "--warmup", "2", "--steps", "2", "--rounds", "1", "--log-every", "2",
        "--compiled", "off"]  # the compiled configs: tests/test_bench_compiled.py
EAGER = dict(compiled_baseline=False, compiled_qat=False)


def _pos_finite(v):
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


@pytest.mark.slow
def test_cli_writes_every_field(tmp_path, capsys):
    out = tmp_path / "sub" / "bench.json"
    assert bench.main([*TINY, "--out", str(out), "--quiet", "--profile"]) is None  # console script: exit 0
    printed = capsys.readouterr().out
    assert "cpu-small" in printed and "pair" in printed and "vs target <= 2.2x" in printed

    d = json.loads(out.read_text())
    for key in ("date", "torch", "python", "cpu", "cpu_threads", "cuda", "gpu", "argv"):
        assert key in d["meta"]
    assert d["meta"]["torch"] == torch.__version__
    r = d["cases"]["cpu-small"]
    assert r["case"]["batch"] == 8 and r["case"]["model"] == "small_cnn" and r["device_name"]
    assert (r["warmup"], r["steps_per_round"], r["rounds"], r["log_every"]) == (2, 2, 1, 2)
    assert r["interleave"] == "step" and set(r["loadavg_1min"]) == {"before", "after"}
    assert all(_pos_finite(v) for v in r["ratios_from_min"].values()) and r["wall_s"] > 0
    assert set(r["ms_per_step"]) == {"plain", "single", "pair"}
    for name, ms in r["ms_per_step"].items():
        assert _pos_finite(ms), name
        assert len(r["ms_per_step_rounds"][name]) == 1
    for key in ("single_over_plain", "pair_over_plain", "pair_over_single", "pair_peak_over_plain",
                "pair_peak_over_single"):
        assert _pos_finite(r["ratios"][key]), key
    assert r["ratios"]["pair_over_plain"] == pytest.approx(r["ms_per_step"]["pair"] / r["ms_per_step"]["plain"])
    assert set(r["pair_sections_ms"]) == {"est_step", "twin_step", "accumulate", "tracker", "log"}
    assert all(v >= 0 for v in r["pair_sections_ms"].values())
    assert 0 < r["changepoint_fraction"] < 1
    for name in ("plain", "single", "pair"):
        m = r["memory"][name]
        assert m["resident_bytes"] > 0 and m["transient_bytes"] > 0
        assert m["peak_bytes"] == m["resident_bytes"] + m["transient_bytes"]
    # the pair holds two models' weights and optimizer state plus the metric state
    assert r["memory"]["pair"]["resident_bytes"] > 2 * r["memory"]["plain"]["resident_bytes"]
    p = r["profile"]
    assert {"est_step", "twin_step", "tracker"} <= set(p["sections_ms"]) and p["top_ops_self_cpu_ms"]
    assert any("Quantize" in k for k in p["quantizer_ms"])  # the quantizers' autograd functions (RangeQuantize, ...)
    keys = {t["key"] for t in r["targets"]}
    assert keys == {"pair_over_plain", "pair_compiled_over_plain_compiled", "pair_peak_over_plain"}
    for t in r["targets"]:
        assert t["pass"] is (None if t["value"] is None else t["value"] <= t["limit"])
    assert [t["key"] for t in r["targets"] if t["value"] is None] == ["pair_compiled_over_plain_compiled"]
    assert [t["case"] for t in d["targets"]] == ["cpu-small"] * len(r["targets"])


@pytest.fixture(scope="module")
def tiny_case():
    case = replace(cases.CASES["cpu-small"], batch=8, **EAGER)
    return measure.run_case(case, warmup=2, steps=2, rounds=1, log_every=2, verbose=False, keep=True)


@pytest.mark.slow
def test_pair_trains_both_runs_in_lockstep(tiny_case):
    loop = tiny_case["_runners"]["pair"]
    pair = loop.pair
    est_layers, twin_layers = pair.layers
    est0, twin0 = pair.weights0
    iterations = 2 + 2 + 1  # warm-up, timed, memory pass
    assert loop.step == iterations and pair.metrics["changepoints"].tracker.last_step == iterations
    assert pair.spec.init == "mirror" and pair.spec.lr_factor == pytest.approx(0.609523, abs=1e-6)
    lr = loop.cfg.optimizer.lr
    assert [g["lr"] for g in pair.optims[0].param_groups] == pytest.approx([lr, lr], rel=1e-4)
    assert [g["lr"] for g in pair.optims[1].param_groups] == pytest.approx([lr * 0.609523, lr], rel=1e-4)

    moved_est = moved_twin = 0
    for (_, le), (_, lt), e0, t0 in zip(est_layers, twin_layers, est0, twin0):
        # the twin started at M(w0_est), which is not w0_est itself
        assert torch.allclose(t0, le.estimator.mirror(e0, le.m), atol=1e-6)
        assert not torch.allclose(t0, e0)
        moved_est += int((le.weight.detach() != e0).sum())
        moved_twin += int((lt.weight.detach() != le.estimator.mirror(e0, le.m)).sum())
        assert lt.estimator.name == "ste" and le.estimator.name == "tanh"
    n = sum(e.numel() for e in est0)
    assert moved_est > n // 2 and moved_twin > n // 2  # both runs trained (not just one)

    figs = {k: float(v) for k, v in pair.metrics["weights"].compute().items()}
    assert figs["pair/distance_travelled"] > 0
    assert figs["pair/quantized_agreement"] > 0.9  # and they track each other
    history = loop.rec.history
    assert history["log_step"] == [2, 4, 5]  # warm-up log, timed log, the memory pass's forced log
    assert all(math.isfinite(v) for v in history["est/loss"] + history["twin/loss"])


@pytest.mark.slow
def test_single_and_plain_train_and_plain_is_plain_torch(tiny_case):
    runners = tiny_case["_runners"]
    single = runners["single"]
    assert not single.pair.metrics and not single.pair.measured and len(single.pair.models) == 1
    assert any(not torch.equal(l.weight.detach(), w0)
               for (_, l), w0 in zip(single.pair.layers[0], single.pair.weights0[0]))
    plain = runners["plain"]
    assert not any(isinstance(m, QuantMixin) for m in plain.model.modules())
    assert isinstance(plain.opt, torch.optim.SGD) and plain.opt.param_groups[0]["momentum"] == 0.9
    assert plain.opt.param_groups[0]["lr"] == single.cfg.optimizer.lr
    assert [p.shape for p in plain.model.parameters()] == [p.shape for p in single.pair.models[0].parameters()]
    assert all(len(plain.opt.state[p]) for p in plain.model.parameters())  # momentum buffers exist: it stepped


def test_case_selection():
    assert [c.name for c in cases.select_cases("cpu-small")] == ["cpu-small"]
    assert cases.select_cases("auto")[0].name == "cpu-small"
    with pytest.raises(SystemExit, match="unknown case"):
        cases.select_cases("cpu-small,nope")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="need CUDA"):
            cases.select_cases("gpu-small128")
    with pytest.raises(SystemExit):
        cli.parse_args(["--steps", "0"])


@pytest.mark.slow
def test_steps_default_to_the_configs_log_every():
    log_every = compose_config().trainer.log_every
    res = measure.run_case(replace(cases.CASES["cpu-small"], batch=8, **EAGER), warmup=1, rounds=1, verbose=False,
                           keep=True)
    assert res["steps_per_round"] == res["log_every"] == log_every
    # warm-up 1 step, timed steps 2..log_every + 1 (one log), then the memory pass's forced log
    assert res["_runners"]["pair"].rec.history["log_step"] == [log_every, log_every + 2]


@pytest.mark.slow
def test_package_entry_points():
    assert bench.main is cli.main and bench.run is cli.run and bench.run_case is measure.run_case
    done = subprocess.run([sys.executable, "-m", "qatrun.bench", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "usage: qatrun-bench" in done.stdout and "--log-every" in done.stdout


@pytest.mark.slow
def test_each_case_is_written_when_measured_so_a_later_failure_keeps_it(tmp_path, monkeypatch):
    """The JSON is rewritten after every case: the GPU check runs two cases in one call under a time
    limit, and a second case killed or crashed must not take the first one's figures with it."""
    real, seen = cli.run_case, []

    def second_fails(case, **kw):
        seen.append(case.name)
        if len(seen) == 2:
            raise RuntimeError("CUDA error: out of memory (a stand-in)")
        return real(case, **kw)

    monkeypatch.setattr(cli, "run_case", second_fails)
    out = tmp_path / "bench.json"
    with pytest.raises(RuntimeError, match="stand-in"):
        cli.run([TINY[0], "cpu-small,cpu-scale-small", *TINY[2:], "--out", str(out), "--quiet"])
    d = json.loads(out.read_text())
    assert seen == ["cpu-small", "cpu-scale-small"] and list(d["cases"]) == ["cpu-small"]
    r = d["cases"]["cpu-small"]
    assert [t["case"] for t in d["targets"]] == ["cpu-small"] * len(r["targets"]) and r["targets"]
    assert r["fp32_precision"] is None  # CPU: no TF32 question (on CUDA: the IEEE settings training uses)
    # a compiled pair without single_compiled (--skip single_compiled) still formats
    r["ratios"] = {**r["ratios"], "pair_compiled_over_plain_compiled": 2.0}
    text = cli.format_case(r)
    assert "c/a = 2.00x" in text and "b/a" not in text.split("compiled:")[1].split("\n")[0]
