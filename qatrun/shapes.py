"""Example bin shapes for ``estimator=custom`` (``estimator.shape=qatrun.shapes.NAME``).

The configs name them by import path (``configs/estimator/custom.yaml``'s default, the ``zero_shape``
experiment), as they would a user's own shape, so no module imports this one; ``tests/test_shapes.py``
keeps each docstring's class membership and alpha true. Saved runs name these paths: they stay here.

A shape is ``g`` on one bin as a torch function of ``u`` in [0, 1), the position between two
adjacent levels (the rounding threshold is at u = 1/2).
"""

import torch


def cosine(u: torch.Tensor) -> torch.Tensor:
    """``1 + cos(2 pi u) / 2``: peaks at the levels, dips at the threshold; alpha = sqrt(3)/2."""
    return 1 + 0.5 * torch.cos(2 * torch.pi * u)


def bump(u: torch.Tensor) -> torch.Tensor:
    """``0.2 + 1.6 sin^2(pi u)``: peaks at the threshold, like a soft DSQ."""
    return 0.2 + 1.6 * torch.sin(torch.pi * u) ** 2


def zero_at_levels(u: torch.Tensor) -> torch.Tensor:
    """``2 sin^2(pi u)``: zero at every level, so 1/g is not integrable (outside the class)."""
    return 2 * torch.sin(torch.pi * u) ** 2


def sine(u: torch.Tensor) -> torch.Tensor:
    """``1 + sin(2 pi u) / 2``: ``cosine`` moved a quarter bin, so not symmetric about the threshold
    (M moves the clipping edges to -0.889 m and 1.111 m); the same alpha as cosine, sqrt(3)/2."""
    return 1 + 0.5 * torch.sin(2 * torch.pi * u)
