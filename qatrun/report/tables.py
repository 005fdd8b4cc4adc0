"""The comparison table: ``table.md`` (mean ± sample std over seeds), ``table.csv`` and, on request,
``table.tex`` (a booktabs LaTeX table). A comparison with one seed has no std (an empty CSV cell)."""

from __future__ import annotations

import csv
from pathlib import Path

from qatrun.metrics.names import columns

# Each metric names its table columns beside its class (``qatrun.metrics``); a run's summary records those of
# the metrics it measured (``columns``: key -> [header, kind, position]), so a plug-in metric's column shows
# even where its package is not imported. Kind "frac" prints 4 decimals, "err" 3 significant digits.


BEFORE = ["changepoints", "function", "weights"]  # the metrics of every summary without a "columns" record


def _declared(run) -> dict:
    cols = run.summary.get("columns")
    if isinstance(cols, dict):
        return {k: v for k, v in cols.items() if isinstance(v, list) and len(v) == 3 and isinstance(v[0], str)
                and v[1] in ("frac", "err") and isinstance(v[2], (int, float))}
    return columns(BEFORE)  # a summary from before metrics named their columns: the metrics there were then


def table_columns(runs) -> list[tuple[str, str, str]]:
    """(summary key, header, kind) of every column the runs' metrics declare, in their declared order."""
    cols: dict = {}
    for run in runs:
        for key, spec in _declared(run).items():
            cols.setdefault(key, spec)
    return [(k, h, kind) for k, (h, kind, _) in sorted(cols.items(), key=lambda kv: kv[1][2])]


def sig3(x: float) -> str:
    return f"{x:#.3g}".rstrip(".") if x else "0"  # 3 significant digits, trailing zeros kept (0.200)


def cell(st: dict, kind: str) -> str:
    if st["mean"] is None:
        return "—"
    f = (lambda x: f"{x:.4f}") if kind == "frac" else sig3
    return f(st["mean"]) + (f" ± {f(st['std'])}" if st["n"] > 1 else "")


def tex_escape(s: str) -> str:
    for a, b in (("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"),
                 ("$", r"\$"), ("{", r"\{"), ("}", r"\}"), ("±", r"$\pm$"), ("—", "---"), ("|", r"\textbar{}")):
        s = s.replace(a, b)
    return s


def write_tex(comparisons: list[dict], out: Path, cols) -> Path:
    """``table.tex``: one row per comparison, a column per metric (``\\usepackage{booktabs}``)."""
    heads = ["Comparison"] + [h for _, h, _ in cols] + ["Seeds"]
    lines = [r"% qatrun-report: mean $\pm$ sample standard deviation over seeds; needs \usepackage{booktabs}",
             r"\begin{tabular}{l" + "r" * (len(heads) - 1) + "}", r"\toprule",
             " & ".join(tex_escape(h) for h in heads) + r" \\", r"\midrule"]
    for c in comparisons:
        cells = [c["label"]] + [cell(c["metrics"][k], kind) for k, _, kind in cols] + [str(c["n_seeds"])]
        lines.append(" & ".join(tex_escape(x) for x in cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    (out / "table.tex").write_text("\n".join(lines) + "\n")
    return out / "table.tex"


def md_escape(s: str) -> str:
    return s.replace("|", "\\|")  # a bar in a header (|log m ratio|) must not split the markdown cell


def write_tables(comparisons: list[dict], out: Path, cols) -> None:
    heads = ["Comparison"] + [md_escape(h) for _, h, _ in cols] + ["n seeds"]
    lines = ["Mean ± sample standard deviation over seeds (NaN values left out; — : not available).", "",
             "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for c in comparisons:
        cells = [md_escape(c["label"])] + [cell(c["metrics"][k], kind) for k, _, kind in cols] + [str(c["n_seeds"])]
        lines.append("| " + " | ".join(cells) + " |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    with open(out / "table.csv", "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["comparison", "n_seeds"] + [f"{k}_{s}" for k, _, _ in cols for s in ("mean", "std")])
        for c in comparisons:
            wr.writerow([c["label"], c["n_seeds"]] + ["" if (v := c["metrics"][k][s]) is None else v
                                                      for k, _, _ in cols for s in ("mean", "std")])
