"""Shared by the metric modules: NaN-safe ratios of device tensors."""

from __future__ import annotations

import torch

NAN = float("nan")


def ratio(num: torch.Tensor, den) -> torch.Tensor:
    """num / den in float64, NaN when den == 0 (den a tensor or a host int); no host sync."""
    num = num.to(torch.float64)
    if isinstance(den, torch.Tensor):
        den = den.to(torch.float64)
        return torch.where(den > 0, num / den.clamp(min=1), torch.full_like(num, NAN))
    return num / den if den > 0 else torch.full_like(num, NAN)


def to_host(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """0-dim device tensors to Python floats in one transfer (one sync, not one per metric)."""
    if not values:
        return {}
    flat = torch.stack([v.detach().to(torch.float64).reshape(()) for v in values.values()]).tolist()
    return dict(zip(values, flat))
