"""qatrun: paired quantization-aware training runs.

Reproduces "Custom Gradient Estimators are Straight-Through Estimators in Disguise"
(Schoenbauer et al., arXiv 2405.05171): an estimator run and its adjusted-STE twin trained in
lockstep, with metrics of how far their weight trajectories drift apart.
"""

__version__ = "0.1.0"
