"""Weight gradient estimators: g(w), the twin's learning-rate factor alpha, the mirror map M.

``base``: the registry, the base classes and the exact warp ``M_B^{-1}(M_A(w))``; ``periodic``: the
periodic estimators (ste, pwl, tanh, custom); ``literature``: published estimators with their class
membership decided (qnet, approxsign, dsq_anneal, ewgs). Each module registers its own estimators
(``@register("name")``) and the package imports its modules by name, so a new family is one new file.
See arXiv 2405.05171 and docs/method.md.

    from qatrun import estimators
    A = estimators.create("tanh", bits=2, k=5.5)
    B = estimators.create("custom", bits=2, shape="qatrun.shapes.cosine")
    w_twin = estimators.warp(w, m, A, B)      # Q(w_twin) == Q(w), bit for bit
    estimators.warp(w, m, A, B, "periodic")   # M continued outside [-m, m] as the authors' code does
"""

from qatrun.estimators.base import (ESTIMATORS, EXTENSIONS, Estimator, NotInClassError, PeriodicEstimator,
                                    check_extension, create, describe, edges, names, register, warp)
from qatrun.registry import discover

discover(__name__)  # every module here registers its own estimators: a new family is one new file

__all__ = ["ESTIMATORS", "EXTENSIONS", "Estimator", "NotInClassError", "PeriodicEstimator", "check_extension", "create",
           "describe", "edges", "names", "register", "warp"]
