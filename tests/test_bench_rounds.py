"""qatrun-bench's ratios on recorded timings (nothing is timed here): the median of per-round ratios with
its spread, more rounds while it is wide, and a ratio below its physical floor called noise."""

from dataclasses import asdict

import pytest

from qatrun.bench import cases, measure, timing
from qatrun.bench.report import format_case

# Seconds per step of three interleaved rounds on a shared machine: a neighbour's burst slowed round 2
# for both configs alike (146 -> 580 ms), and hit the plain step alone inside round 3. The ratio of the
# per-config medians (0.600 / 0.400 = 1.50x) mixes rounds; the per-round ratios are 2.10, 2.05, 1.50.
RECORDED = {"plain": [0.146, 0.580, 0.400], "pair": [0.3066, 1.189, 0.600]}


def test_the_ratio_is_the_median_of_per_round_ratios_with_its_spread():
    per = timing.round_ratios(RECORDED)["pair_over_plain"]
    assert per == pytest.approx([2.10, 2.05, 1.50])
    fig = measure.timing_figures(RECORDED, [], timing.floors({"plain": False, "pair": False}))
    assert fig["ratios"]["pair_over_plain"] == pytest.approx(2.05)
    assert fig["ratios_of_medians"]["pair_over_plain"] == pytest.approx(1.50)  # what the bench printed before
    sp = fig["ratio_spread"]["pair_over_plain"]
    assert (sp["min"], sp["max"], sp["rounds"]) == pytest.approx((1.50, 2.10, 3))
    assert sp["spread"] == pytest.approx(0.60 / 2.05)
    assert fig["below_floor"] == {}  # 2.05x: above the floor
    assert timing.too_wide(RECORDED) == "pair_over_plain spread 29% > 10%"
    assert timing.too_wide({"plain": [0.10, 0.11], "pair": [0.21, 0.225]}) is None  # 2.10x and 2.05x: 2%


def test_the_floor_applies_only_to_configs_built_alike():
    assert timing.floors({"plain": False, "pair": False}) == {"pair_over_plain": 2.0}
    both = timing.floors({"plain": False, "plain_compiled": True, "pair": False, "pair_compiled": True})
    assert both == {"pair_over_plain": 2.0, "pair_compiled_over_plain_compiled": 2.0}
    # a GPU case's compiled pair against the eager plain step: compiling may beat it, no floor
    assert timing.floors({"plain": False, "plain_compiled": True, "pair": True}) == {"pair_over_plain_compiled": 2.0}
    case = cases.CASES["gpu-small128"]
    assert measure.compiled_configs(case, dict.fromkeys(["plain", "plain_compiled", "pair"]),
                                    {"pair": {"ran_eager": True}}) == {"plain": False, "plain_compiled": True,
                                                                       "pair": False}


def recorded_result(per_round: dict) -> dict:
    """A case's result dict around recorded rounds, as ``run_case`` builds it (no runner, no timing)."""
    case = cases.CASES["cpu-small"]
    res = {"case": asdict(case), "warmup": 2, "steps_per_round": 10, "rounds": 5, "rounds_asked": 3,
           "interleave": "step", "log_every": 10, "estimator": "tanh", "twin": "auto -> ste", "twin_init": "mirror",
           "twin_role": "warped", "twin_lr_factor": 0.6095, "loadavg_1min": {"before": 3.9, "after": 4.1},
           "notes": {}, "memory": {}, "profile": None,
           **measure.timing_figures(per_round, [], timing.floors({"plain": False, "pair": False}))}
    res.pop("profile")
    measure.checks_and_targets(case, res)
    return res


def test_a_ratio_below_its_floor_is_called_noise_not_a_result():
    # the trial's second `make bench`: the eager pair at 1.72x of the plain step, under the 2.00x it cannot beat
    noisy = {"plain": [0.146, 0.580, 0.300, 0.250, 0.200], "pair": [0.251, 1.000, 0.516, 0.430, 0.344]}
    res = recorded_result(noisy)
    assert res["ratios"]["pair_over_plain"] == pytest.approx(1.72)
    assert res["below_floor"] == {"pair_over_plain": {"value": pytest.approx(1.72), "floor": 2.0}}
    (target,) = [t for t in res["targets"] if t["key"] == "pair_over_plain"]
    assert target["pass"] is None and target["noise"] is True  # no PASS for a figure under its floor
    text = format_case(res)
    assert "5 rounds (3 asked, 2 more for a wide spread) x 10 steps" in text
    assert ("  NOISE: c/a = 1.72x is below its physical floor 2.00x (the pair does two runs' work): the figure is "
            "noise from a shared machine, not a result") in text
    assert "NOISE pair step / plain float step (eager): 1.72x vs target <= 2.2x" in text
    assert "per-round range (spread = range / median): c/a 1.72-1.72x (0%)" in text
    assert "PASS pair step / plain" not in text


def test_more_rounds_are_run_while_the_spread_is_wide(monkeypatch):
    more = [({"plain": [0.150], "pair": [0.150 * r]}, [{}]) for r in (2.08, 2.06, 2.10, 2.07, 2.09, 2.08)]
    rounds = iter([(RECORDED, [{}] * 3), *more])
    calls = []

    def recorded(runners, device, steps, n, interleave, say, first=0):
        calls.append((n, first))
        return next(rounds)

    monkeypatch.setattr(measure, "time_rounds", recorded)
    said = []
    per_round, sec_rounds, done = measure.timed_rounds({}, None, 10, 3, "step", lambda *a, **k: said.append(a[0]))
    # round 3's 1.50x keeps the spread over 10%: one more round at a time, up to MORE_ROUNDS x the 3 asked
    assert calls == [(3, 0)] + [(1, i) for i in range(3, 9)]
    assert done == 9 == len(per_round["pair"]) == len(sec_rounds)
    assert said[0] == "  one more round (pair_over_plain spread 29% > 10%)"
    assert timing.round_ratios(per_round)["pair_over_plain"][3:] == pytest.approx([2.08, 2.06, 2.10, 2.07, 2.09, 2.08])


def test_a_narrow_spread_runs_no_more_rounds(monkeypatch):
    monkeypatch.setattr(measure, "time_rounds", lambda *a, **k: ({"plain": [0.10, 0.11, 0.10],
                                                                  "pair": [0.21, 0.225, 0.205]}, [{}] * 3))
    assert measure.timed_rounds({}, None, 10, 3, "step", print)[2] == 3
