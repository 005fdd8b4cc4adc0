"""The house rules of the source tree: imports only go down a floor, no circle, files stay small,
and no docstring points at a file the user does not have."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "qatrun"

# Floors, bottom up: a module may import only from strictly lower floors (or, inside a
# subpackage, from its own siblings when that makes no circle).
FLOORS = [
    {"qatrun", "qatrun.checks", "qatrun.files", "qatrun.config", "qatrun.compose", "qatrun.shapes",
     "qatrun.device", "qatrun.userimport", "qatrun.errors",
     "qatrun.stop", "qatrun.health"},
    {"qatrun.quant", "qatrun.dist", "qatrun.tblog", "qatrun.rundir", "qatrun.identity", "qatrun.registry"},
    {"qatrun.estimators", "qatrun.metrics", "qatrun.models", "qatrun.data", "qatrun.optim", "qatrun.checkpoint"},
    {"qatrun.quantizers"},
    {"qatrun.layers", "qatrun.twin", "qatrun.record", "qatrun.summary"},
    {"qatrun.build"},
    {"qatrun.pair", "qatrun.schema"},
    {"qatrun.helptext"},
    {"qatrun.runname"},
    {"qatrun.spec"},
    {"qatrun.train"},
    {"qatrun.preflight", "qatrun.bench", "qatrun.report"},
    {"qatrun.sweep"},
    {"qatrun.cli"},
    {"qatrun.api"},
    {"qatrun.__main__"},
]


def unit(module: str) -> str:
    """The floor unit of a module: subpackages count as one unit."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def floor(module: str) -> int:
    for i, names in enumerate(FLOORS):
        if unit(module) in names:
            return i
    raise AssertionError(f"{module} has no floor in tests/test_layout.py: place it")


def modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        yield name, path


def is_module(dotted: str) -> bool:
    p = PKG.parent / dotted.replace(".", "/")
    return p.with_suffix(".py").exists() or p.is_dir()


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qatrun"):
            subs = {f"{node.module}.{a.name}" for a in node.names if is_module(f"{node.module}.{a.name}")}
            out.update(subs or {node.module})  # `from qatrun import checks` is an edge to qatrun.checks only
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("qatrun"))
    return out


GRAPH = {name: imports(path) for name, path in modules()}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_only_go_down(module):
    for dep in GRAPH[module]:
        if unit(dep) == unit(module):
            continue  # inside one subpackage: checked for circles below
        assert floor(dep) < floor(module), f"{module} (floor {floor(module)}) imports {dep} (floor {floor(dep)})"


def test_no_import_circle():
    state = {}

    def visit(m, stack):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", "import circle: " + " -> ".join(stack + [m])
        state[m] = "open"
        for dep in GRAPH.get(m, ()):
            if dep in GRAPH and dep != m and not m.startswith(dep + "."):  # a package's own __init__ is no edge back
                visit(dep, stack + [m])
        state[m] = "done"

    for m in GRAPH:
        visit(m, [])


@pytest.mark.parametrize("name,path", list(modules()))
def test_files_stay_small(name, path):
    assert len(path.read_text().splitlines()) <= 400, f"{name} has grown past 400 lines: split it"


def test_no_reference_to_files_outside_the_repository():
    for name, path in modules():
        assert "PAPER.md" not in path.read_text(), f"{name} cites PAPER.md, which users do not have"
