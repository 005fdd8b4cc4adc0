"""qatrun: paired quantization-aware training runs.

Reproduces "Custom Gradient Estimators are Straight-Through Estimators in Disguise"
(Schoenbauer et al., arXiv 2405.05171): an estimator run and its adjusted-STE twin trained in
lockstep, with metrics of how far their weight trajectories drift apart.

``qatrun.run([...overrides], **options)`` trains one pair from Python (``qatrun/api.py``).
"""

__version__ = "0.1.0"


def __getattr__(name):
    # qatrun.run is loaded on first use: `import qatrun` stays light, and the package's own
    # __init__ (the bottom floor) does not import the API (the top floor) at import time.
    if name == "run":
        import importlib

        return importlib.import_module("qatrun.api").run
    raise AttributeError(f"module 'qatrun' has no attribute {name!r}")
