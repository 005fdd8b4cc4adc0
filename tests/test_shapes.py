"""``qatrun.shapes``: the example bin shapes that ``estimator.shape`` names by import path (configs/estimator/
custom.yaml, the zero_shape experiment, docs/estimators.md). Nothing imports the module: the configs name it,
so this test is what keeps each example's documented class membership and alpha true."""

import math

import pytest

from qatrun import estimators as E
from qatrun import shapes

# name -> alpha (the harmonic mean of g over a bin) as each docstring states it; None: outside the class
EXAMPLES = {"cosine": math.sqrt(3) / 2, "sine": math.sqrt(3) / 2, "bump": 0.6, "zero_at_levels": None}


def test_every_example_is_listed():
    assert sorted(n for n in dir(shapes) if callable(getattr(shapes, n)) and not n.startswith("_")
                  and getattr(shapes, n).__module__ == "qatrun.shapes") == sorted(EXAMPLES)


@pytest.mark.parametrize("name,alpha", EXAMPLES.items())
def test_each_example_builds_the_estimator_its_docstring_describes(name, alpha):
    est = E.create("custom", bits=2, shape=f"qatrun.shapes.{name}", resolution=4096)
    assert est.in_class == (alpha is not None)
    if alpha is not None:
        assert est.alpha == pytest.approx(alpha, rel=1e-6)
