"""Every figure that compares the two runs of a pair (arXiv 2405.05171; docs/metrics.md, "Metric definitions").

One metric per module, each registered in ``METRICS`` (``qatrun.metrics.base``: the interface and how a
metric names its figures); this package imports its modules by name, so a new metric is one file:

* ``weights``: quantized agreement and alignment of the quantized weights (:class:`WeightComparer`);
* ``function``: function agreement of the test-set logits (:class:`FunctionAgreement`) and the
  Pearson correlation of two curves (:func:`pearson`);
* ``changepoints``: change-point sequences of every weight, online, exact and reduced by two rules (the
  paper's compressed one, x-y-x-y -> x-y until none is left, and qatrun's backtrack one, x-y-x -> x)
  (:class:`ChangePointTracker`, ``tracker``).

Pure torch: no I/O, no config, no host syncs inside ``update``/``accumulate``. Every ``compute()``
returns ``name -> 0-dim tensor`` on the state's device; the caller decides when to move them.
"""

from qatrun.registry import discover
from qatrun.metrics.base import METRICS, Figure, PairMetric, PairView, select
from qatrun.metrics.function import FunctionAgreement, TestScores, function_metrics, pearson
from qatrun.metrics.tracker import ChangePointTracker
from qatrun.metrics.weights import WeightComparer

discover(__name__)  # every metric module registers itself on import

__all__ = ["METRICS", "ChangePointTracker", "Figure", "FunctionAgreement", "PairMetric", "PairView", "TestScores",
           "WeightComparer", "function_metrics", "pearson", "select"]
