"""The rolling hashes and level tensors behind the change-point tracker (``qatrun.metrics.tracker``).

Pure torch: constants and one helper, no state.
"""

from __future__ import annotations

import torch

# Two independent polynomial hashes: h <- (h * B + (level + 1)) mod P, with P < 2^31 so h fits in
# int32 and h * B + level + 1 < 2^62 + 2^15 fits in int64.
_PRIMES = (2147483647, 2147483629)
_BASES = (742938285, 1000000007)
# Inverses of the bases mod P: a hash can drop its last element, h' = (h - (level + 1)) * B^-1 mod P, so
# removing a change needs no stored copy of the hash before it.
_INV_BASES = tuple(pow(b, -1, p) for b, p in zip(_BASES, _PRIMES))
_NO_LEVEL = -1  # "no such level" (levels are >= 0)
# Each rule's figures (suffix of the figure names) from its count, hash and error-integral state.
_RULES = {"": ("count", "hash", "dist"), "_compressed": ("ccount", "chash", "cdist"),
          "_backtrack": ("bcount", "bhash", "bdist")}
_RUNS = ("a", "b")
_PER_RUN = ("level", "prev", "count", "hash", "osc",  # exact sequence, oscillations
            "bcount", "bhash", "can_undo",  # backtrack rule
            "ccount", "chash", "clast2", "clast3")  # compressed (the authors') rule


def _flat_levels(levels, check: bool = False) -> torch.Tensor:
    """One flat int16 tensor from a tensor or a list of per-layer tensors (``check``: range, syncs)."""
    parts = [levels] if isinstance(levels, torch.Tensor) else list(levels)
    if check:
        for l in parts:
            if l.is_floating_point() or l.is_complex():
                raise TypeError(f"level indices must be integer tensors, got {l.dtype}")
            if l.numel() and not (0 <= int(l.min()) and int(l.max()) < 2**15 - 1):
                raise ValueError("level indices must be in [0, 32767)")
    return torch.cat([l.reshape(-1).to(torch.int16) for l in parts])
