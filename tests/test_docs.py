"""The documentation site builds strictly (no broken link, no missing page, no missing included
file), includes the committed results as they are, and documents the configs as they are: the
expected options and keys are read from configs/ at test time, so the checks follow the YAML."""

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
DOCS = ROOT / "docs"
GROUPS = ("dataset", "model", "optimizer", "estimator", "quantizer", "activation", "experiment")

pytest.importorskip("mkdocs", reason="the docs extra is not installed (make install installs it)")
pytest.importorskip("material", reason="the docs extra is not installed (make install installs it)")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(out)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def page(site: Path, name: str) -> str:
    path = site / name / "index.html" if name else site / "index.html"
    assert path.is_file(), f"the site has no page {name or 'index'}"
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text()))


def test_mkdocs_build_strict_has_every_page(site):
    for name in ("", "configuration", "estimators", "quantizers", "own-model-data", "metrics", "api", "sweeps",
                 "reliability", "results", "reproducing", "benchmarks", "method", "development"):
        page(site, name)
    assert (site / "results" / "mnist" / "drift.png").is_file() and (site / "results" / "mnist" / "lr_law.png").is_file()
    assert (site / "search" / "search_index.json").is_file()


def test_results_page_includes_the_committed_findings_and_table(site):
    text = page(site, "results")
    findings = (ROOT / "results" / "mnist" / "findings.md").read_text()
    headings = re.findall(r"\*\*(.+?)\*\*", findings)
    assert len(headings) >= 10
    for heading in headings:
        assert heading in text, f"findings.md's {heading!r} is not on the results page"
    labels = [line.split("|")[1].strip() for line in (ROOT / "results" / "mnist" / "table.md").read_text().splitlines()
              if line.startswith("| ") and not line.startswith("| Comparison")]
    assert len(labels) >= 30
    for label in labels:
        assert label in text, f"table.md's row {label!r} is not on the results page"
    assert "include:" not in text  # every marker was replaced


def test_configuration_page_lists_every_option_of_every_group(site):
    text = page(site, "configuration")
    for group in GROUPS + ("hydra/launcher",):
        for option in sorted((CONFIGS / group).glob("*.yaml")):
            assert f"{group}={option.stem}" in text, f"configs/{group}/{option.name} is not on the configuration page"
    for key in top_level_keys():
        assert key in text, key


def test_own_model_and_data_page_names_the_three_ways():
    text = (DOCS / "own-model-data.md").read_text()
    assert text.startswith("# Your own model and data\n") and "TODO" not in text
    for way in ("model=torchvision model.arch=NAME", "model=custom\nmodel.target=pkg.module:build",
                "dataset=imagefolder dataset.root=DIR"):
        assert way.replace("\n", " ") in text.replace("\n", " ")


# -- the configuration page's table of the keys that matter, against configs/ -----------------

def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def top_level_keys() -> list[str]:
    def walk(d, prefix):
        for k, v in d.items():
            if isinstance(v, dict) and v:
                yield from walk(v, f"{prefix}{k}.")
            else:
                yield prefix + k
    return [k for k in walk({k: v for k, v in load(CONFIGS / "config.yaml").items() if k not in ("defaults", "hydra")}, "")]


def default_options() -> dict[str, str]:
    out = {}
    for item in load(CONFIGS / "config.yaml")["defaults"]:
        if isinstance(item, dict):
            ((group, option),) = item.items()
            out[group] = option
    return out


def values(key: str) -> dict[str, object]:
    """Where ``key`` is set in configs/: {option (or 'config.yaml'): value}."""
    group, _, rest = key.partition(".")
    if group in GROUPS and rest:
        return {p.stem: load(p)[rest] for p in sorted((CONFIGS / group).glob("*.yaml")) if rest in load(p)}
    node = {k: v for k, v in load(CONFIGS / "config.yaml").items() if k != "defaults"}
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return {}
        node = node[part]
    return {"config.yaml": node}


def key_table() -> list[tuple[list[str], str]]:
    text = (DOCS / "configuration.md").read_text()
    section = text.split("## The keys that matter", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert len(rows) >= 15
    out = []
    for row in rows:
        cells = [c.strip() for c in row.strip().strip("|").split(" | ")]
        names = re.findall(r"`([^`]+)`", cells[0])
        first = names[0]
        prefix = first.rsplit(".", 1)[0] if "." in first else ""
        keys = [first] + [(prefix + n if n.startswith(".") else f"{prefix}.{n}" if prefix and "." not in n else n)
                          for n in names[1:]]
        out.append((keys, cells[1]))
    return out


def expected(key: str):
    found = values(key)
    group = key.split(".", 1)[0]
    default = default_options().get(group)
    if default in found:
        return found[default]
    distinct = {repr(v) for v in found.values()}
    assert len(distinct) == 1, f"{key}: the options disagree ({found}); say which option in the table"
    return next(iter(found.values()))


def test_every_documented_key_is_in_the_configs():
    for keys, _ in key_table():
        for key in keys:
            assert values(key), (f"docs/configuration.md documents {key}, which no file of configs/ sets: "
                                 "rename or remove it there")


def test_documented_defaults_are_the_configs_defaults():
    checked = 0
    for keys, cell in key_table():
        per_option = re.findall(r"(\S+) \((\w+)\)", cell)
        if len(keys) == 1 and per_option:  # "0.01 (sgd), 0.001 (adam)"
            group, _, rest = keys[0].partition(".")
            for value, option in per_option:
                actual = load(CONFIGS / group / f"{option}.yaml")[rest]
                assert yaml.safe_load(value) == actual, f"docs/configuration.md: {keys[0]} of {option} is {actual}"
                checked += 1
            continue
        parts = [p.strip() for p in cell.split(" / ")]
        if len(parts) == len(keys) > 1:
            pairs = list(zip(keys, parts))
        elif re.fullmatch(r"[\w.\-]+", cell):
            pairs = [(k, cell) for k in keys]
        else:
            continue  # a cell in words: its keys are checked above
        for key, value in pairs:
            actual = expected(key)
            assert yaml.safe_load(value) == actual, (f"docs/configuration.md says {key} defaults to {value}, "
                                                     f"configs/ say {actual!r}: update the table")
            checked += 1
    assert checked >= 20
