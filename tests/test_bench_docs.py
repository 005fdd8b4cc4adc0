"""The benchmark figures the docs quote are the committed benchmark results, printed by the bench's own formatter."""

import json
from pathlib import Path

from qatrun.bench.quantizers import LIMITS, SETTINGS, format_quantizers

ROOT = Path(__file__).resolve().parents[1]


def page() -> str:  # read in the tests, not at import: a copy of the tests without docs/ still collects
    return (ROOT / "docs" / "benchmarks.md").read_text()


def quoted_blocks() -> list[str]:
    return [b.split("\n", 1)[1].rstrip("\n") for b in page().split("```")[1::2]]


def test_each_committed_bench_text_is_quoted_whole():
    texts = sorted((ROOT / "results" / "bench").glob("*.txt"))
    assert texts
    blocks = quoted_blocks()
    for text in texts:
        assert text.read_text().rstrip("\n") in blocks, f"{text.name} is not quoted as committed in docs/benchmarks.md"
        assert text.name.removesuffix(".txt") in page()


def test_the_quantizer_table_is_the_committed_json_and_meets_its_targets():
    (path,) = sorted((ROOT / "results" / "bench").glob("cpu-quantizers-*.json"))
    res = json.loads(path.read_text())["cases"]["quantizers"]
    assert format_quantizers(res) == path.with_suffix(".txt").read_text().rstrip("\n")
    assert set(res["ratios"]) == set(SETTINGS)
    assert {t["key"] for t in res["targets"]} == {f"{s}/{k}" for s in SETTINGS for k in LIMITS}
    for t in res["targets"]:
        assert t["pass"] and t["value"] <= LIMITS[t["key"].split("/")[1]], t
    ratios, text = res["ratios"], page()
    pair = [r["pair_over_two_singles"] for r in ratios.values()]
    single = [r["single_over_tensor"] for n, r in ratios.items() if n != "pact4"]
    # the prose's ranges, to the printed two decimals
    assert (f"{min(pair):.2f}x-{max(pair):.2f}x two single runs" in text.replace("\n", " "))
    assert (f"{min(single):.2f}x-{max(single):.2f}x the `tensor` run" in text.replace("\n", " "))
    assert f"at {ratios['pact4']['single_over_tensor']:.2f}x" in text
