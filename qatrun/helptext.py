"""The blocks of ``qatrun --help`` that come from the registries (``configs/hydra/help/qatrun.yaml`` reads
them through the ``qatrun_help`` resolver, ``qatrun.runname.register_resolvers``): each family's options, the
presets, and each optimizer's twin rule with why. A new registered member appears here by itself."""

from __future__ import annotations

from importlib import resources

from qatrun.optim import OPTIMIZERS, twin_rule
from qatrun.schema import FAMILIES

TWIN_NOTE = "\n                (the twin's own, for an A-B pair: estimator@twin_estimator=<option>; null = STE)"


def _wrap(words: list[str], indent: int, width: int = 100) -> str:
    lines, line = [], ""
    for w in words:
        if line and len(line) + len(w) + 2 > width - indent:
            lines.append(line + ",")
            line = w
        else:
            line = f"{line}, {w}" if line else w
    return ("\n" + " " * indent).join(lines + [line])


def help_text(section: str) -> str:
    """A block of ``qatrun --help``: ``groups`` (each family's registered options and the presets) or
    ``optimizers`` (each optimizer's twin rule and why)."""
    if section == "groups":
        root = resources.files("qatrun.configs").joinpath("experiment")
        presets = sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))
        rows = [(f, _wrap(reg.names(), 16) + (TWIN_NOTE if f == "estimator" else "")) for f, (reg, _) in FAMILIES.items()]
        rows.append(("experiment", _wrap(presets, 16) + "\n                (presets: small deltas)"))
        return "\n".join(f"  {f:13s} {text}" for f, text in rows)
    if section == "optimizers":
        return "\n".join(f"  {n:10s} {twin_rule(n):9s} {OPTIMIZERS.meta(n)['why']}" for n in OPTIMIZERS.names())
    raise ValueError(f"unknown help section {section!r}; valid: groups, optimizers")
