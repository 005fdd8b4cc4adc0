"""qatrun-report: figures and tables from finished pair runs.

    qatrun-report RUN_OR_MULTIRUN_DIR [...] --out OUT [--formats png pdf] [--label-by KEY ...]

Every directory holding a ``summary.json`` (searched recursively) is one pair. Writes
``OUT/pairs/<label>/{curves,alignment_scatter,movement_scatter,agreement}.<fmt>`` per pair,
``OUT/lr_law.<fmt>`` + ``OUT/lr_law.json`` (error vs learning rate, fitted log-log slopes per family),
``OUT/table.{md,csv}`` + ``OUT/summary.json`` (seeds aggregated per comparison), ``OUT/drift.<fmt>``
(``--drift KEY=VALUE``: chosen pairs overlaid over training, see ``drift.py``) and ``OUT/findings.md``
(a verdict per estimator and learning rate, in plain words, from the numbers: see ``verdict.py``), and
``OUT/atlas.<fmt>`` + ``OUT/atlas.md`` (the optimizer atlas, ``atlas.py``) and ``OUT/quantizer_atlas.<fmt>`` +
``OUT/quantizer_atlas.md`` (the quantizer atlas, ``quantizer_atlas.py``). Missing pieces
(no weight sample, ``pair.twin=none``, NaN metrics) skip the figure and add a note instead.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

import matplotlib

from qatrun.files import jsonable, write_json
from qatrun.rundir import SUMMARY

from .atlas import atlas, atlas_markdown, fig_atlas
from .drift import drift_markdown, drift_table, fig_drift, select
from .figures import pair_figures
from .labels import aggregate
from .lrlaw import fig_lr_law, lr_law
from .quantizer_atlas import fig_quantizer_atlas, quantizer_atlas, quantizer_atlas_markdown
from .runs import find_runs, stats
from .style import STYLE, save
from .tables import table_columns, write_tables, write_tex
from .verdict import findings_markdown, verdicts

DESCRIPTION = """\
Figures and tables from finished qatrun pair runs.

qatrun trains a quantized network with a custom weight gradient estimator and, in lockstep on the
same batches, its adjusted straight-through-estimator twin, to test the claim that such estimators
are STEs in disguise (arXiv 2405.05171). qatrun-report reads the run directories it wrote (any
directory holding a summary.json, searched recursively: single runs, multirun sweeps, whole
result trees), groups runs that differ only by seed into comparisons, and writes:

  OUT/table.md, table.csv     one row per comparison: mean ± sample std over seeds (no std for one seed)
  OUT/table.tex               the same as a booktabs LaTeX table (--formats ... tex)
  OUT/pairs/<label>/          per run: training curves, agreement over training, weight alignment
                              and weight movement scatters (w/m: weights in units of the layer's grid range)
  OUT/lr_law.*                pair error against learning rate with log-log slopes (>= 3 lrs per family)
  OUT/findings.md             a verdict per estimator and learning rate, in plain words, from the numbers
  OUT/drift.*                 with --drift KEY=VALUE: the selected pairs overlaid over training steps
  OUT/atlas.*, atlas.md       the optimizer atlas, when the runs hold verdicts for two or more optimizers:
                              each one's predicted twin, the other rule's twin, the jitter floor, the
                              untrained twin and the lr slope (--atlas KEY=VALUE picks the runs)
  OUT/quantizer_atlas.*, .md  the quantizer atlas: the same four twins and a verdict per quantizer setting
                              (per-channel, learned, recomputed ranges; quantized inputs) and optimizer;
                              a grid that moves is outside the theorem: measured (--quantizer-atlas KEY=VALUE)
  OUT/summary.json            everything above as data, plus notes on what was skipped and why

Metrics: over the weights that changed level (movers) the agreement of final levels and of level
sequences, beside what an untrained twin would score; quantized agreement over all weights;
alignment error through the mirror map M and through the identity (distance between the mapped
estimator weights and the twin's, over the twin's distance travelled); change-point error,
inference agreement, logit MSE; docs/metrics.md, "Metric definitions", defines each."""

EPILOG = """\
examples:
  qatrun-report multirun/2026-11-28/10-00-00 --out report/
  qatrun-report results/mnist/runs --out report/ --formats png tex --no-pairs
  qatrun-report results/mnist/runs --out report/ --drift experiment_name=long
  qatrun-report results/mnist/runs --out report/ --quantizer-atlas experiment_name=quantizers
  qatrun-report outputs/ --out report/ --label-by optimizer.name pair.twin"""
FIGURE_FORMATS = ("png", "pdf", "svg")

def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", label).strip("_") or "run"


def prune_pairs(pairs_dir: Path, written: set, notes: list) -> None:
    """Drop OUT/pairs/<label>/ directories this report did not write (runs gone or relabelled), when they
    hold nothing but figures: a report into an existing OUT must not show figures of runs it left out."""
    for d in sorted(pairs_dir.iterdir()) if pairs_dir.is_dir() else []:
        if d.is_dir() and d.name not in written and all(f.suffix[1:] in FIGURE_FORMATS for f in d.iterdir()):
            shutil.rmtree(d)
            notes.append(f"removed {d}: figures of a run not in this report")


def atlases(runs, out: Path, formats, atlas_by, quantizer_by, notes: list) -> tuple[list, list, list[str]]:
    """The optimizer atlas and the quantizer atlas (figure and table each, where the runs hold one), and the
    lines findings.md quotes them with."""
    rows = atlas(select(runs, atlas_by) if atlas_by else runs)
    q_rows = quantizer_atlas(select(runs, quantizer_by) if quantizer_by else runs, asked=bool(quantizer_by))
    lines = []
    with matplotlib.rc_context(STYLE):
        if rows:
            save(fig_atlas(rows), out, "atlas", formats)
            (out / "atlas.md").write_text(atlas_markdown(rows))
            lines += ["Optimizer atlas (mover agreement, %, over the weights that changed level; `atlas.png`):\n",
                      atlas_markdown(rows)]
        elif atlas_by:
            notes.append(f"atlas: no verdict for two optimizers among the runs with {' '.join(atlas_by)}; skipped")
        if q_rows:
            save(fig_quantizer_atlas(q_rows), out, "quantizer_atlas", formats)
            (out / "quantizer_atlas.md").write_text(quantizer_atlas_markdown(q_rows))
            lines += ["Quantizer atlas (mover agreement, %, over the weights that changed level; "
                      "`quantizer_atlas.png`; a grid that moves is outside the theorem: measured):\n",
                      quantizer_atlas_markdown(q_rows)]
        elif quantizer_by:
            notes.append(f"quantizer atlas: no verdict among the runs with {' '.join(quantizer_by)}; skipped")
    return rows, q_rows, lines


def report(paths, out: Path, formats=("png", "pdf"), label_by=None, family_by=None, pair_figs=True,
           drift=None, atlas_by=None, quantizer_atlas_by=None) -> dict:
    notes: list = []
    runs = find_runs(paths, notes)
    if not runs:
        raise FileNotFoundError(f"no summary.json under {' '.join(map(str, paths))}")
    drifting = select(runs, drift) if drift else []
    if drift and not drifting:
        notes.append(f"drift: no run has {' '.join(drift)}; drift figure skipped")
    out.mkdir(parents=True, exist_ok=True)
    comparisons, pairs, cols = [], {}, table_columns(runs)
    with matplotlib.rc_context(STYLE):
        for label, rs in aggregate(runs, label_by):
            keys = sorted({k for r in rs for k, v in r.summary.items() if isinstance(v, (int, float)) or v is None}
                          | {k for k, _, _ in cols})
            comparisons.append({"label": label, "n_seeds": len(rs), "seeds": [r.flat.get("seed") for r in rs],
                                "runs": [str(r.path) for r in rs],
                                "metrics": {k: stats([r.value(k) for r in rs]) for k in keys}})
            for r in rs if pair_figs else []:
                pl = f"{label} seed={r.flat.get('seed')}"
                d = slug(pl) if slug(pl) not in pairs else f"{slug(pl)}_{r.path.name}"
                pairs[d] = pair_figures(r, pl, out / "pairs" / d, formats, notes)
        prune_pairs(out / "pairs", set(pairs), notes)
        law = lr_law(runs, family_by, notes)
        if law:
            save(fig_lr_law(law), out, "lr_law", formats)
        else:
            notes.append("lr law: no family with >= 3 learning rates; lr_law figure skipped")
        if drifting:
            save(fig_drift(drifting), out, "drift", formats)
    atlas_rows, q_rows, atlas_lines = atlases(runs, out, formats, atlas_by, quantizer_atlas_by, notes)
    write_json(out / "lr_law.json", law)
    write_tables(comparisons, out, cols)
    vs = verdicts(runs)
    drift_rows = drift_table(drifting)
    kept_out = [f"* {n}\n" for n in notes if "diverged and are kept out" in n]  # divergence is a finding too
    if not law:
        lrs = sorted({r.value("optimizer.lr") for r in runs})
        kept_out.append(f"No learning-rate law: it fits a slope per family of runs that differ only in the lr and "
                        f"needs at least 3 learning rates in one family; these runs have {len(lrs)} "
                        f"({', '.join(f'{v:g}' for v in lrs)}) and no family with 3.\n")
    (out / "findings.md").write_text(findings_markdown(vs, law, drift_markdown(drift_rows) + kept_out + atlas_lines))
    result = jsonable({"comparisons": comparisons, "columns": cols, "lr_law": law, "verdicts": vs, "drift": drift_rows,
                       "atlas": atlas_rows, "quantizer_atlas": q_rows,
                       "pairs": pairs, "notes": notes})
    write_json(out / SUMMARY, result)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="qatrun-report", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", help="run directories or multirun directories (searched recursively)")
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--formats", "--format", nargs="+", default=["png", "pdf"], choices=[*FIGURE_FORMATS, "tex"],
                   help="figure formats, and tex for table.tex (default: png pdf; tex alone: png pdf figures too)")
    p.add_argument("--label-by", nargs="+", default=None, metavar="KEY",
                   help="dotted config/summary keys naming each comparison (default: the keys that differ)")
    p.add_argument("--family-by", nargs="+", default=None, metavar="KEY",
                   help="config keys grouping runs for the lr law (default: everything but lr and seed)")
    p.add_argument("--no-pairs", action="store_true", help="skip the per-pair figures (large sweeps)")
    p.add_argument("--drift", nargs="+", default=None, metavar="KEY=VALUE",
                   help="overlay the runs with these config values in OUT/drift.* (mover agreement and alignment "
                        "error against the step) and tabulate them in findings.md, e.g. --drift experiment_name=long")
    p.add_argument("--atlas", nargs="+", default=None, metavar="KEY=VALUE",
                   help="draw the optimizer atlas (OUT/atlas.*, atlas.md) from the runs with these config values, "
                        "e.g. --atlas experiment_name=optimizers (default: all runs, when they hold verdicts for "
                        "two or more optimizers)")
    p.add_argument("--quantizer-atlas", nargs="+", default=None, metavar="KEY=VALUE",
                   help="draw the quantizer atlas (OUT/quantizer_atlas.*, quantizer_atlas.md) from the runs with these "
                        "config values, e.g. --quantizer-atlas experiment_name=quantizers (default: all runs, when "
                        "they hold verdicts for two or more quantizer settings)")
    args = p.parse_args(argv)
    figure_formats = [f for f in args.formats if f in FIGURE_FORMATS] or ["png", "pdf"]
    try:
        res = report(args.paths, Path(args.out), figure_formats, args.label_by, args.family_by, not args.no_pairs,
                     args.drift, args.atlas, args.quantizer_atlas)
    except (FileNotFoundError, ValueError) as e:
        print(f"qatrun-report: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # OUT cannot be made or written: a file on its path, no permission, a full disk
        print(f"qatrun-report: cannot write {e.filename}: {e.strerror} (--out must name a directory that can be "
              "created and written)", file=sys.stderr)
        return 2
    if "tex" in args.formats:
        write_tex(res["comparisons"], Path(args.out), res["columns"])
    for n in res["notes"]:
        print(f"note: {n}", file=sys.stderr)
    n_runs = sum(c["n_seeds"] for c in res["comparisons"])
    print(f"qatrun-report: {n_runs} run(s), {len(res['comparisons'])} comparison(s) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
