"""MkDocs hook: the docs quote the repository, they do not retype it.

Two markers, each alone on a line of a page, are replaced at build time:

* ``<!-- include: results/mnist/findings.md -->`` pastes a file of the repository (its own first
  ``# `` title left out: the page has its own). A missing file fails the build.
* ``<!-- config-reference: GROUP -->`` renders the options of ``configs/GROUP/*.yaml`` (``top``:
  the keys of ``configs/config.yaml``; ``experiment``: what each preset sets) with every key's
  default and the YAML's own comment, read from the files at build time, so the reference follows
  the configs.

The figures under ``results/mnist/*.png`` are added to the site as ``results/mnist/<name>.png``.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
FIGURES = "results/mnist"  # its *.png files join the site under the same path

INCLUDE = re.compile(r"^<!-- include: (?P<path>\S+) -->$", re.M)
REFERENCE = re.compile(r"^<!-- config-reference: (?P<group>\S+) -->$", re.M)
LINE = re.compile(r"^(?P<indent>\s*)(?P<dash>- )?(?P<key>[A-Za-z_/@.][\w@/.]*)\s*:(?:\s+(?P<rest>.*?))?\s*$")
SKIP = {"defaults", "hydra"}  # composition and Hydra's own settings are not options


def on_files(files, config):
    for png in sorted((ROOT / FIGURES).glob("*.png")):
        files.append(File(f"{FIGURES}/{png.name}", src_dir=str(ROOT), dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files


def on_page_markdown(markdown, page, config, files):
    markdown = INCLUDE.sub(lambda m: include(m["path"], page), markdown)
    return REFERENCE.sub(lambda m: reference(m["group"], page), markdown)


def include(rel: str, page) -> str:
    path = ROOT / rel
    if not path.is_file():
        raise PluginError(f"{page.file.src_uri}: include: {rel} does not exist")
    text = path.read_text().strip()
    if text.startswith("# "):
        text = text.split("\n", 1)[1].strip() if "\n" in text else ""
    return text


def split_comment(rest: str | None) -> tuple[str, str]:
    """``value  # comment`` -> (value, comment); a '#' inside quotes or ${...} is part of the value."""
    if not rest:
        return "", ""
    quote, depth = None, 0
    for i, ch in enumerate(rest):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        elif ch == "#" and depth == 0 and (i == 0 or rest[i - 1].isspace()):
            return rest[:i].strip(), rest[i + 1:].strip()
    return rest.strip(), ""


def parse(path: Path) -> tuple[str, list[tuple[str, str, str]], list[str]]:
    """The leading comment (description), the leaf keys as (dotted key, value, comment) in file
    order, and the group selections of the defaults list (``override /dataset: imagenet`` ->
    ``dataset=imagenet``)."""
    desc, rows, selections, stack = [], [], [], []
    skip_below = None
    seen_key = False
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("#"):
            if not seen_key and indent == 0 and not stripped.startswith("# @package"):
                desc.append(stripped.lstrip("#").strip())
            continue
        seen_key = True
        if skip_below is not None and indent > skip_below:
            if stripped.startswith("- override /") or (stripped.startswith("- ") and ": " in stripped):
                sel = split_comment(stripped[2:])[0].replace("override ", "").lstrip("/")
                group, _, option = sel.partition(":")
                if not group.startswith("/schema") and not group.startswith("schema"):
                    selections.append(f"{group.strip()}={option.strip()}")
            continue
        skip_below = None
        if stripped.startswith("- "):
            continue
        m = LINE.match(line)
        if not m:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        value, comment = split_comment(m["rest"])
        if not stack and m["key"] in SKIP:
            skip_below = indent
            continue
        if value == "" and not comment.startswith("|"):
            stack.append((indent, m["key"]))
            continue
        rows.append((".".join([k for _, k in stack] + [m["key"]]), value, comment))
    return " ".join(desc), rows, selections


def cell(text: str) -> str:
    return text.replace("|", "\\|")  # a literal bar inside a table cell


def table(rows, prefix: str) -> list[str]:
    out = ["| key | default | note (from the YAML) |", "| --- | --- | --- |"]
    for key, value, comment in rows:
        if key == "name":
            continue
        full = f"{prefix}.{key}" if prefix else key
        out.append(f"| `{full}` | `{value}` | {cell(comment)} |")
    return out


def reference(group: str, page) -> str:
    if group == "top":
        _, rows, _ = parse(CONFIGS / "config.yaml")
        return "\n".join(table(rows, ""))
    folder = CONFIGS / group
    options = sorted(folder.glob("*.yaml"))
    if not options:
        raise PluginError(f"{page.file.src_uri}: config-reference: no configs/{group}/*.yaml")
    prefix = group.replace("/", ".")
    out = []
    if group == "experiment":
        out += ["| preset | what it is | what it sets |", "| --- | --- | --- |"]
        for path in options:
            desc, rows, selections = parse(path)
            sets = [f"`{s}`" for s in selections] + [f"`{k}={v}`" for k, v, _ in rows if k != "experiment_name"]
            out.append(f"| `experiment={path.stem}` | {cell(desc)} | {', '.join(sets)} |")
        return "\n".join(out)
    for path in options:
        desc, rows, _ = parse(path)
        out += [f"#### `{group}={path.stem}`", ""]
        if desc:
            out += [desc, ""]
        out += table(rows, prefix) + [""]
    return "\n".join(out)
