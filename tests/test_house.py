"""The house rules of issue 29, measured on the source: no import circle (relative imports included), the math
rooms import only torch, numpy, the standard library and each other, the report does not import the training,
no function over 60 lines, no module over 300 lines (``tests/test_layout.py`` holds the floors)."""

import ast
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "qatrun"
MAX_FUNCTION, MAX_MODULE = 60, 300

# The math rooms: pure torch (docs/development.md). Beside each other they may use the plain-Python helpers below.
MATH = ("qatrun.quant", "qatrun.estimators", "qatrun.metrics", "qatrun.quantizers")
HELPERS = ("qatrun.registry", "qatrun.checks", "qatrun.userimport")
MATH_THIRD_PARTY = {"torch", "numpy"}
# What finished runs are read by: never the training, the pair, the entry points.
REPORT_NEVER = ("qatrun.train", "qatrun.pair", "qatrun.cli", "qatrun.api", "qatrun.sweep", "qatrun.preflight")


def modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        is_pkg = rel.name == "__init__"
        yield ".".join(rel.parts[:-1] if is_pkg else rel.parts), path, is_pkg


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _exists(dotted: str) -> bool:
    p = PKG.parent / dotted.replace(".", "/")
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def imports(module: str, path: Path, is_pkg: bool) -> set[str]:
    """Every module named by an import anywhere in the file (functions included), relative ones resolved."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_pkg, node)
            subs = {f"{target}.{a.name}" for a in node.names if _exists(f"{target}.{a.name}")}
            out.update(subs or {target})
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


MODULES = {m: (p, pkg) for m, p, pkg in modules()}
GRAPH = {m: imports(m, p, pkg) for m, (p, pkg) in MODULES.items()}


def _inside(dep: str, units) -> bool:
    return any(dep == u or dep.startswith(u + ".") for u in units)


def test_no_import_circle():
    state, path = {}, []

    def visit(m):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", "import circle: " + " -> ".join(path[path.index(m):] + [m])
        state[m] = "open"
        path.append(m)
        for dep in sorted(GRAPH.get(m, ())):
            if dep in GRAPH and dep != m and not m.startswith(dep + "."):  # a package's own __init__ is no edge back
                visit(dep)
        path.pop()
        state[m] = "done"

    for m in sorted(GRAPH):
        visit(m)


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if _inside(m, MATH)))
def test_math_imports_only_torch_numpy_and_each_other(module):
    bad = []
    for dep in GRAPH[module]:
        top = dep.split(".")[0]
        if top == "qatrun":
            if not (_inside(dep, MATH) or _inside(dep, HELPERS) or dep == "qatrun"):
                bad.append(dep)
        elif top not in MATH_THIRD_PARTY and top not in sys.stdlib_module_names and top != "__future__":
            bad.append(dep)
    assert not bad, f"{module} is a math room (pure torch) but imports {', '.join(sorted(bad))}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if _inside(m, ("qatrun.report",))))
def test_the_report_does_not_import_the_training(module):
    bad = sorted(d for d in GRAPH[module] if _inside(d, REPORT_NEVER))
    assert not bad, f"{module} reads finished runs but imports {', '.join(bad)}"


def _too_long_functions(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION:
                out.append(f"{node.name} ({n} lines, line {node.lineno})")
    return out


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_function_over_60_lines(module):
    long = _too_long_functions(MODULES[module][0])
    assert not long, f"{module}: over {MAX_FUNCTION} lines: {', '.join(long)}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_over_300_lines(module):
    n = len(MODULES[module][0].read_text().splitlines())
    assert n <= MAX_MODULE, f"{module} has {n} lines (at most {MAX_MODULE}): split it by job"
