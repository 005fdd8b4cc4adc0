"""The README quotes the committed results, it does not retype them: the blocks between the
markers must equal the files qatrun-report wrote."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def block(name: str) -> str:
    m = re.search(rf"<!-- {name}:begin[^>]*-->\n(.*?)<!-- {name}:end -->", README, re.S)
    assert m, f"README has no {name} block"
    return m.group(1).strip()


@pytest.mark.parametrize("name,path", [("findings", "results/mnist/findings.md"),
                                       ("table", "results/mnist/table.md")])
def test_readme_quotes_the_committed_results(name, path):
    text = (ROOT / path).read_text().strip()
    if name == "findings":
        text = text.split("\n", 1)[1].strip()  # the file's own title is not quoted
    assert block(name) == text, f"README's {name} block differs from {path}: run the report and paste it"
