"""qatrun-report: figures and tables from finished pair runs (``qatrun-report --help``).

    runs.py     load run directories, group seeds into comparisons, labels, statistics
    names.py    what a run compared, in words (both estimators, the twin's role, the optimizer's twin rule)
    figures.py  per-pair figures (curves, alignment and movement scatters, agreement); plot style
    lrlaw.py    the learning-rate law: error vs learning rate, log-log fit per family
    atlas.py    the optimizer atlas: each optimizer's predicted twin against the other rule's, the floors
    quantizer_atlas.py  the quantizer atlas: the same rows per quantizer setting (outside the theorem: measured)
    tables.py   table.md / table.csv
    cli.py      report(): everything into one output directory; main(): the command line

The metrics are defined in docs/metrics.md, "Metric definitions"; the claim they test is
arXiv 2405.05171 ("Custom Gradient Estimators are Straight-Through Estimators in Disguise").
"""

import matplotlib

matplotlib.use("Agg")  # files only; set before any submodule imports pyplot

from .cli import main, report  # noqa: E402

__all__ = ["main", "report"]
