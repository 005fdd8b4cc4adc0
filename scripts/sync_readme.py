"""Paste results/mnist/{findings,table}.md into the README's marked blocks (after make report-mnist).

    python scripts/sync_readme.py

tests/test_readme.py fails when the README's blocks and the committed files differ, so prose
that quotes the results cannot drift from them.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = {"findings": "results/mnist/findings.md", "table": "results/mnist/table.md"}


def main() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, path in BLOCKS.items():
        text = (ROOT / path).read_text().strip()
        if name == "findings":
            text = text.split("\n", 1)[1].strip()  # drop the file's own title
        pattern = re.compile(rf"(<!-- {name}:begin[^>]*-->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(readme):
            raise SystemExit(f"README.md has no <!-- {name}:begin --> ... <!-- {name}:end --> block")
        readme = pattern.sub(lambda m: m.group(1) + text + "\n" + m.group(2), readme)
    (ROOT / "README.md").write_text(readme)


if __name__ == "__main__":
    main()
