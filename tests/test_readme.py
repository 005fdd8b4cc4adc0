"""The README is the five-minute tour: short, every figure in it taken from the committed results
(results/mnist/runs), every link and make target real. The generated findings and table live in
the docs site, which includes them at build time (tests/test_docs.py)."""

import json
import re
import statistics
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
RUNS = ROOT / "results" / "mnist" / "runs"


def summaries(block: str, lr: float | None = None, opt: str | None = None, role: str | None = None) -> list[dict]:
    found = [json.loads(p.read_text()) for p in sorted((RUNS / block).glob("*/summary.json"))]
    if lr is not None:
        found = [s for s in found if abs(s["config"]["optimizer"]["lr"] - lr) < 1e-12]
    if opt is not None:
        found = [s for s in found if s["config"]["optimizer"]["name"] == opt]
    if role is not None:
        found = [s for s in found if s.get("twin_role") == role]
    assert found, f"no committed runs in results/mnist/runs/{block}" + (f" at lr {lr}" if lr else "") + (
        f" with {opt} {role}" if opt or role else "")
    return found


def percent(values: list[float]) -> str:
    """As the README writes a figure: percent, one decimal, ± sample std when there are seeds."""
    mean = f"{100 * statistics.mean(values):.1f}"
    return mean if len(values) == 1 else f"{mean} ± {100 * statistics.stdev(values):.1f}"


def test_readme_reads_in_five_minutes():
    assert len(README.splitlines()) <= 200
    assert "<!-- findings:begin" not in README and "<!-- table:begin" not in README  # the docs include them


def headline_rows():
    m = re.search(r"<!-- headline:begin[^>]*-->\n(.*?)<!-- headline:end -->", README, re.S)
    assert m, "README has no headline block"
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in m.group(1).strip().splitlines()]
    assert rows[0][2:] == ["mover agreement (%)", "untrained twin (%)"], rows[0]
    return rows[2:]


def test_headline_figures_are_the_committed_runs():
    rows = headline_rows()
    assert len(rows) >= 5
    for name, runs, agreement, untrained in rows:
        m = re.fullmatch(r"`(\w+)`(?: lr=([\d.e-]+))?(?: (\w+) (\w+))?", runs)
        assert m, f"headline row {name!r}: runs cell {runs!r} is not `block` [lr=X] [OPTIMIZER TWIN_ROLE]"
        found = summaries(m[1], float(m[2]) if m[2] else None, m[3], m[4])
        assert agreement == percent([s["pair/mover_agreement"] for s in found]), (name, runs)
        assert untrained == percent([s["pair/mover_agreement_untrained"] for s in found]), (name, runs)


def test_worked_example_matches_the_committed_run_of_the_same_config():
    """The quoted `make run` output (eager) against the suite's run of the same config (lr_sgd at lr
    0.01, compiled): counted figures agree to the printed digits, the float sums (alignment error,
    logit MSE) to float rounding (compile vs eager, results/mnist/compile_check)."""
    block = re.search(r"\$ make run\n.*?\n\nrun directory: .*?\n(.*?)```", README, re.S)
    assert block, "README has no quoted `make run` output"
    (run,) = summaries("lr_sgd", 0.01)
    assert run["config"]["estimator"]["name"] == "tanh" and run["steps"] == 100 and run["seed"] == 0
    checked = 0
    for line in block.group(1).strip().splitlines():
        if " against " in line:  # what was compared (runs since twin_role print it): the default pair
            assert line.strip() == "tanh(k=5.5) against ste: STE twin from M(w0) at lr x alpha (warped); sgd lr 0.01"
            continue
        m = re.fullmatch(r"\s*(\S+)\s+([-\d.e]+|\w+)(?:\s+\(untrained twin ([\d.e-]+)\))?", line)
        assert m, line
        key, value, untrained = m.groups()
        for k, v in [(key, value)] + ([(f"{key}_untrained", untrained)] if untrained else []):
            assert k in run, f"{k} is not in the committed summary"
            if not re.fullmatch(r"[-\d.e]+", v):
                assert run[k] == v, (k, v, run[k])
                continue
            decimals = len(v.split(".")[1]) if "." in v else 0
            tol = 2e-3 * abs(run[k]) if k in ("pair/logit_mse",) or "alignment_error" in k else 0.51 * 10 ** -decimals
            assert abs(float(v) - run[k]) <= tol, (k, v, run[k])
            checked += 1
    assert checked >= 15


def anchors(md: Path) -> set[str]:
    """The ids Python-Markdown's toc gives the headings of a page (what MkDocs links to)."""
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", md.read_text(), re.M):
        text = re.sub(r"[`*]", "", heading).strip().lower()
        out.add(re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text)).strip("-"))
    return out


def test_readme_links_point_at_real_pages_and_headings():
    links = re.findall(r"\]\(([^)\s]+)\)", README)
    assert len(links) >= 10
    for link in links:
        if link.startswith("http"):
            continue
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.is_file(), f"README links to {link}: no such file"
        if anchor:
            assert anchor in anchors(target), f"README links to {link}: no such heading"


def test_every_make_target_in_the_readme_exists():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    used = set(re.findall(r"\bmake ([a-z][a-z-]*)", README))
    assert {"install", "run", "test", "test-fast", "docs"} <= used
    assert used <= targets, used - targets


def test_atlas_rows_are_the_committed_atlas():
    """The README's optimizer atlas rows are rows of the generated results/mnist/atlas.md, verbatim."""
    m = re.search(r"<!-- atlas:begin[^>]*-->\n(.*?)<!-- atlas:end -->", README, re.S)
    assert m, "README has no atlas block"
    committed = (ROOT / "results" / "mnist" / "atlas.md").read_text().splitlines()
    rows = [line for line in m.group(1).strip().splitlines()]
    assert rows[0] == committed[0] and len(rows) >= 2 + 11  # the header, and every registered optimizer
    for row in rows[2:]:
        assert row in committed, row


def test_quantizer_atlas_rows_are_the_committed_atlas():
    """The README's quantizer atlas rows are rows of the generated results/mnist/quantizer_atlas.md, verbatim: every
    setting of the quantizers block under both optimizers, outside-the-theorem rows labelled so."""
    m = re.search(r"<!-- qatlas:begin[^>]*-->\n(.*?)<!-- qatlas:end -->", README, re.S)
    assert m, "README has no quantizer atlas block"
    committed = (ROOT / "results" / "mnist" / "quantizer_atlas.md").read_text().splitlines()
    rows = m.group(1).strip().splitlines()
    assert rows[0] == committed[0] and all(row in committed for row in rows[2:])
    body = [r.split("|")[1:4] for r in rows[2:]]
    assert {(q.strip(), o.strip()) for q, _, o in body} >= {(q, o) for q in ("tensor", "channel", "lsq")
                                                             for o in ("sgd", "adam")}
    assert all(("outside" in t) == q.strip().startswith(("lsq", "dynamic")) for q, t, _ in body)


def test_twin_rules_are_the_registrys():
    """Each optimizer's twin rule and its reason, as the README lists them, are those registered in qatrun.optim."""
    from qatrun.optim import OPTIMIZERS

    m = re.search(r"<!-- rules:begin[^>]*-->\n(.*?)<!-- rules:end -->", README, re.S)
    assert m, "README has no twin-rule block"
    listed = {}
    for line in m.group(1).strip().splitlines():
        rule, names, why = re.fullmatch(r"\* \*\*(\w+)\*\* \(([^)]*)\): (.*)", line).groups()
        listed[rule] = (set(re.findall(r"`(\w+)`", names)), why)
    for rule, (names, why) in listed.items():
        assert names == {n for n in OPTIMIZERS.names() if OPTIMIZERS.meta(n)["twin_rule"] == rule}, rule
        for n in names:
            assert OPTIMIZERS.meta(n)["why"].startswith(why.split(" (")[0]), (n, why)
    assert set(listed) == {OPTIMIZERS.meta(n)["twin_rule"] for n in OPTIMIZERS.names()}
