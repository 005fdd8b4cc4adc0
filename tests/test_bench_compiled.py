"""qatrun-bench's compiled configs (plain_compiled, single_compiled, pair_compiled beside the eager ones on
the CPU), the compiled ratio with its target, and the --cases scaling table; tiny sizes.

torch.compile is swapped for dynamo with a counting backend that runs the traced graph as is: what the
bench does with compiled runners (the dynamo resets a compiled pair makes, the re-warm that catches
them) is the same, without inductor's minutes of code generation on a CPU.
"""

import json
import statistics
from dataclasses import replace

import pytest
import torch

from qatrun import bench
from qatrun.bench import cases, measure
from qatrun.bench.scaling import format_scaling, scaling_row

TINY = ["--batch", "8", "--warmup", "1", "--steps", "2", "--rounds", "2", "--log-every", "2", "--no-profile"]


@pytest.fixture
def counted_compile(monkeypatch):
    """torch.compile -> dynamo with a backend that counts its compiles (each trace of a frame)."""
    compiles = []
    real = torch.compile

    def backend(gm, example_inputs):
        compiles.append(gm)
        return gm.forward

    monkeypatch.setattr(torch, "compile", lambda model, **kw: real(model, backend=backend))
    return compiles


def test_cpu_case_times_the_compiled_pair_against_the_compiled_plain_step(tmp_path, capsys, monkeypatch,
                                                                          counted_compile):
    in_rounds = []
    real_rounds = measure.time_rounds

    def watched_rounds(*args, **kwargs):
        before = len(counted_compile)
        out = real_rounds(*args, **kwargs)
        in_rounds.append(len(counted_compile) - before)
        return out

    monkeypatch.setattr(measure, "time_rounds", watched_rounds)
    out = tmp_path / "bench.json"
    bench.main(["--cases", "cpu-small", *TINY, "--out", str(out)])
    printed = capsys.readouterr().out
    r = json.loads(out.read_text())["cases"]["cpu-small"]

    names = ["plain", "plain_compiled", "single", "pair", "single_compiled", "pair_compiled"]
    assert list(r["ms_per_step"]) == names
    assert counted_compile  # the compiled configs did go through dynamo
    assert in_rounds and set(in_rounds) == {0}  # nothing recompiled inside the timed rounds (the re-warm took it),
    # more rounds included (run while the per-round ratios spread wide)
    for n in ("plain_compiled", "single_compiled", "pair_compiled"):
        assert r["notes"][n]["rewarm_s"] >= 0 and "compile_error" not in r["notes"][n]
    ms, rounds = r["ms_per_step"], r["ms_per_step_rounds"]
    per_round = lambda a, b: sorted(x / y for x, y in zip(rounds[a], rounds[b]))  # noqa: E731
    for a, b in (("pair_compiled", "plain_compiled"), ("pair", "plain")):  # the median of per-round ratios
        assert r["ratios"][f"{a}_over_{b}"] == pytest.approx(statistics.median(per_round(a, b)))
        assert r["ratios_of_medians"][f"{a}_over_{b}"] == pytest.approx(ms[a] / ms[b])
    target = {t["key"]: t for t in r["targets"]}["pair_compiled_over_plain_compiled"]
    assert target["limit"] == 2.1
    if target.get("noise"):  # under the 2.00x floor on a loaded machine: noise, no verdict
        assert target["pass"] is None and target["value"] < 2.0
    else:
        assert target["pass"] is (target["value"] <= 2.1)
    verdict = "NOISE " if target.get("noise") else "PASS" if target["pass"] else "FAIL"
    assert f"{verdict:<5}pair step compiled / plain float step compiled: {target['value']:.2f}x vs target <= 2.1x" \
        in printed
    ratio_line = next(line for line in printed.splitlines() if line.startswith("  ratios:"))
    assert f"c/a = {r['ratios']['pair_over_plain']:.2f}x" in ratio_line  # eager, and beside it compiled
    assert f"compiled: c/a = {r['ratios']['pair_compiled_over_plain_compiled']:.2f}x" in ratio_line
    assert set(r["pair_compiled_sections_ms"]) == {"est_step", "twin_step", "accumulate", "tracker", "log"}


def test_skip_single_and_what_cannot_be_skipped():
    case = replace(cases.CASES["cpu-small"], batch=8, compiled_baseline=False, compiled_qat=False)
    res = measure.run_case(case, warmup=0, steps=1, rounds=1, log_every=1, verbose=False, skip=["single"])
    assert list(res["ms_per_step"]) == ["plain", "pair"] and "pair_over_single" not in res["ratios"]
    assert "c/a = " in bench.format_case(res)
    with pytest.raises(ValueError, match="cannot skip pair"):
        measure.run_case(case, warmup=0, steps=1, rounds=1, verbose=False, skip=["pair"])


def test_scaling_cases_and_table(tmp_path, capsys):
    assert [c.name for c in cases.select_cases("scaling")] == ["cpu-scale-small", "cpu-scale-r18"]
    assert [c.name for c in cases.select_cases("cpu-small,scaling")] == ["cpu-small", "cpu-scale-small", "cpu-scale-r18"]
    out = tmp_path / "bench.json"
    bench.main(["--cases", "cpu-scale-small", "--batch", "8", "--warmup", "0", "--steps", "1", "--rounds", "1",
                "--log-every", "1", "--no-profile", "--out", str(out)])
    printed = capsys.readouterr().out
    d = json.loads(out.read_text())
    (row,) = d["scaling"]
    r = d["cases"]["cpu-scale-small"]
    assert row == json.loads(json.dumps(scaling_row(r)))
    assert row["quantized_weights"] == 32 * 9 + 64 * 32 * 9  # the small CNN's two convolutions
    assert row["tracker_bytes_per_weight"] == pytest.approx(118, abs=0.01)  # ChangePointTracker: 118 B per weight
    assert row["tracker_share"] == r["changepoint_fraction"] and row["pair_ms"] == r["ms_per_step"]["pair"]
    assert row["tracker_ms_per_mweight"] == pytest.approx(row["tracker_ms"] / (row["quantized_weights"] / 1e6))
    assert format_scaling(d["scaling"]) in printed and "18,720" in printed
