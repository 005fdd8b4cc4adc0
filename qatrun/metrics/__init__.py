"""Every figure that compares the two runs of a pair (arXiv 2405.05171; docs/metrics.md, "Metric definitions").

* ``weights``: quantized agreement and alignment of the quantized weights (:class:`WeightComparer`);
* ``function``: function agreement of the test-set logits (:class:`FunctionAgreement`) and the
  Pearson correlation of two curves (:func:`pearson`);
* ``changepoints``: change-point sequences of every weight, online, exact and reduced by two rules (the
  paper's compressed one, x-y-x-y -> x-y until none is left, and qatrun's backtrack one, x-y-x -> x)
  (:class:`ChangePointTracker`).

Pure torch: no I/O, no config, no host syncs inside ``update``/``accumulate``. Every ``compute()``
returns ``name -> 0-dim tensor`` on the state's device; the caller decides when to move them.
"""

from qatrun.metrics.changepoints import ChangePointTracker
from qatrun.metrics.function import FunctionAgreement, function_metrics, pearson
from qatrun.metrics.weights import WeightComparer

__all__ = ["ChangePointTracker", "FunctionAgreement", "WeightComparer", "function_metrics", "pearson"]
