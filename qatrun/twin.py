"""The twin: what the estimator run is compared against (``pair.twin``), as a ``TwinSpec``.

``resolve_twin`` turns the twin mode, the run's estimator, the optimizer's twin rule (``qatrun.optim``)
and an optional twin estimator into the spec: the twin's estimator, its init map (``M_B^{-1}(M_A(w0))``
or the identity), its learning-rate factor, its role (``ROLES``), which ``summary.json`` records as
``twin_role`` and the report, verdicts, HParams and the benchmark read, and how M continues outside
``[-m, m]`` (``pair.mirror_extension``, ``estimators.EXTENSIONS``). Pure torch: no I/O, no config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from qatrun import checks, estimators
from qatrun.estimators import EXTENSIONS, Estimator, NotInClassError, PeriodicEstimator, describe
from qatrun.quantizers.ranges import warp  # per tensor: estimators.warp itself; per channel: channel by channel


class Role(NamedTuple):
    """A twin role: its word in a report label (``warped`` twin), what the comparison means, and the optimizer
    twin rules (``qatrun.optim.RULES``) under which the theorem predicts this twin to track the run (none: a
    control or a floor)."""

    word: str
    description: str
    predicted_under: tuple[str, ...] = ()


# The twin's role (docs/configuration.md, "pair.twin"): ``twin_role`` in summary.json; the report's labels, the
# verdicts, TensorBoard's HParams and the benchmark read its words and its prediction from here.
ROLES = {
    "warped": Role("warped", "STE twin from M(w0) at lr x alpha", ("warp",)),
    "ab_warped": Role("warped", "twin estimator B from M_B^-1(M_A(w0)) at lr x alpha_A/alpha_B", ("warp",)),
    "paper_control": Role("paper-control", "twin from w0 at lr x alpha (the paper's control)"),
    "warp_init": Role("init-map", "twin from M(w0) at the same lr (ablation: the init map alone)"),
    "plain_ste": Role("plain", "plain STE twin from w0 at the same lr", ("identity", "exact")),
    "ab_unwarped": Role("unwarped", "twin estimator B from w0 at the same lr", ("identity", "exact")),
    "jitter": Role("jitter", "the estimator against itself at a scaled lr (the noise floor)"),
    "self": Role("self", "the estimator against itself at the same lr (must agree exactly)"),
    "none": Role("no", "no twin (the estimator run alone)"),
}


def predicted(role: str, rule: str | None) -> bool:
    """Whether the theorem predicts a twin of ``role`` to track the run under the optimizer's twin ``rule``."""
    return role in ROLES and rule in ROLES[role].predicted_under


@dataclass(frozen=True)
class TwinSpec:
    """How the twin differs from the estimator run.

    ``source`` / ``target``: the in-class estimators whose maps carry the run into the twin's
    coordinates, ``w_twin = M_target^{-1}(M_source(w))`` (``estimators.warp``; target None: the STE).
    ``source`` is None when the twin is not warped. ``role`` (a key of ``ROLES``) says what the
    comparison is; ``predicted``: the theorem predicts this twin to track the run under the optimizer's
    ``rule`` (``warp``, ``identity`` or ``exact``, ``qatrun.optim``). ``extension``: how both maps continue
    outside ``[-m, m]`` (``shift`` or ``periodic``, ``estimators.EXTENSIONS``), for the init and the alignment.
    """

    mode: str
    estimator: Estimator | None  # None: no twin (pair.twin=none)
    init: str  # "mirror" (w0 -> M_B^{-1}(M_A(w0))) or "identity"
    lr_factor: float  # multiplies the lr of the twin's quantized weights (alpha_A / alpha_B)
    lr_scale: float  # multiplies the twin's whole lr (jitter: 1.01)
    source: PeriodicEstimator | None = None
    target: PeriodicEstimator | None = None
    role: str = "none"
    rule: str = "warp"
    extension: str = "shift"
    # False when the grid moves (a learned or recomputed range): the theorem covers a fixed grid, so the twin
    # is the natural one (from the initial grid) and its figures are measured, not predicted
    in_theorem: bool = True

    @property
    def predicted(self) -> bool:
        return predicted(self.role, self.rule)

    @property
    def description(self) -> str:
        """The twin in words, with its estimator (``tanh(k=2.5) twin from w0 at the same lr``)."""
        text = ROLES[self.role].description
        if self.role.startswith("ab_") and self.estimator is not None:
            text = text.replace("twin estimator B", f"{describe(self.estimator)} twin")
        if self.role == "jitter":
            text = text.replace("a scaled lr", f"lr x {self.lr_scale:g}")
        return text

    def to_twin(self, w: torch.Tensor, m) -> torch.Tensor:
        """An estimator-run weight in the twin's coordinates (the identity when not warped)."""
        return warp(w, m, self.source, self.target, self.extension) if self.init == "mirror" else w.detach()

    def figures(self) -> dict:
        """What the summary records about the twin, beside ``twin``, ``twin_init`` and the lr factors."""
        est = self.estimator
        return {"twin_estimator": describe(est) if est is not None else None,
                "twin_map": describe(self.source) if self.source is not None else None,
                "alpha_twin": est.alpha if est is not None and est.in_class else None,
                "twin_clip": list(est.clip) if isinstance(est, PeriodicEstimator) else None,
                "twin_role": self.role, "twin_predicted": self.predicted, "twin_description": self.description,
                "twin_rule": self.rule, "mirror_extension": self.extension, "in_theorem": self.in_theorem}


def _role(which: str, init: str, use_alpha: bool, ab: bool, lr_scale: float) -> str:
    if which == "same":
        return "jitter" if lr_scale != 1.0 else "self"
    if init == "mirror":
        return ("ab_warped" if ab else "warped") if use_alpha else "warp_init"
    if use_alpha:
        return "paper_control"
    return "ab_unwarped" if ab else "plain_ste"


# pair.twin values: (twin estimator, init map, use alpha). "auto" asks the optimizer. "twin" is the
# configured twin estimator (twin_estimator; the STE when none is given).
TWIN_MODES = {
    "full": ("twin", "mirror", True),  # warped init and lr factor, whatever the optimizer
    "ste": ("ste", "identity", False),  # the no-warp control with a plain STE twin
    "nowarp": ("twin", "identity", False),  # the no-warp control with the configured twin estimator
    "warp_init": ("twin", "mirror", False),  # ablation: warped init only
    "warp_lr": ("twin", "identity", True),  # ablation: lr factor only
    "self": ("same", "identity", False),  # the estimator against itself (jitter floor)
}
TWIN_CHOICES = ("auto", "none", *TWIN_MODES)


def resolve_twin(mode: str, estimator: Estimator, optimizer_warps: bool | str, lr_scale: float = 1.0,
                 twin_estimator: Estimator | None = None, extension: str = "shift") -> TwinSpec:
    """Turn ``pair.twin`` into a TwinSpec. ``optimizer_warps``: the optimizer's twin rule (``warp``,
    ``identity``, ``exact``; or a bool, True for ``warp``): ``auto`` warps under ``warp`` only.
    ``extension`` (``pair.mirror_extension``): how the maps continue outside ``[-m, m]``.

    ``twin_estimator`` (B; default the STE) is the twin's own estimator: an A-B pair. Warped, the twin
    starts at ``M_B^{-1}(M_A(w0))`` and trains at ``alpha_A / alpha_B`` times the lr (arXiv 2405.05171:
    both are STEs in disguise); an estimator outside the class warps through its ``reference()``.
    """
    rule = ("warp" if optimizer_warps else "identity") if isinstance(optimizer_warps, bool) else optimizer_warps
    if rule not in ("warp", "identity", "exact"):
        raise ValueError(f"unknown twin rule {rule!r}; valid: warp, identity, exact")
    if mode not in TWIN_CHOICES:
        raise ValueError(f"unknown pair.twin {mode!r}; valid: {', '.join(TWIN_CHOICES)}")
    if not lr_scale > 0:
        raise ValueError(f"pair.twin_lr_scale must be positive, got {lr_scale}")
    checks.one_of("pair.mirror_extension", extension, EXTENSIONS, suggest=True)
    if twin_estimator is not None:
        if twin_estimator.grid != estimator.grid:
            raise ValueError(
                f"the twin's estimator has {twin_estimator.bits} bits on the {twin_estimator.grid.kind} grid but the "
                f"run's has {estimator.bits} bits on the {estimator.grid.kind} grid: they must match "
                f"(set twin_estimator.bits={estimator.bits} twin_estimator.grid={estimator.grid.kind})")
        if mode in ("none", "self", "ste"):
            raise ValueError(f"pair.twin={mode} does not use a twin estimator, but twin_estimator="
                             f"{describe(twin_estimator)} was given; with one use pair.twin=auto, full, nowarp, "
                             "warp_init or warp_lr (or drop twin_estimator)")
    if mode == "none":
        return TwinSpec(mode, None, "identity", 1.0, 1.0, rule=rule, extension=extension)
    mode_used = ("full" if rule == "warp" else "nowarp") if mode == "auto" else mode
    which, init, use_alpha = TWIN_MODES[mode_used]
    ab = which == "twin" and twin_estimator is not None
    role = _role(which, init, use_alpha, ab and twin_estimator.name != "ste", float(lr_scale))  # an explicit STE twin is the plain STE twin
    if which == "same":
        return TwinSpec(mode, estimator, init, 1.0, float(lr_scale), role=role, rule=rule, extension=extension)
    twin = twin_estimator if ab else estimators.create("ste", bits=estimator.bits, grid=estimator.grid)
    if init == "identity" and not use_alpha:
        return TwinSpec(mode, twin, init, 1.0, float(lr_scale), role=role, rule=rule, extension=extension)
    try:
        source, target = estimator.reference(), twin.reference()
    except NotInClassError as exc:
        why = str(exc).split("; pair it with")[0]  # the estimator says why; the remedy is said once, here
        raise ValueError(f"pair.twin={mode} needs both estimators' mirror map and alpha, but {why}; pair it with "
                         "pair.twin=ste (a plain STE twin from w0), nowarp or self") from None
    factor = source.alpha / target.alpha if use_alpha else 1.0
    if init == "mirror":
        lo, hi = estimators.edges(source, target, extension)
        if isinstance(twin, PeriodicEstimator):
            twin = twin.with_clip(lo, hi, extension)
        elif abs(lo + 1) > estimators.base.EDGE_TOL or abs(hi - 1) > estimators.base.EDGE_TOL:
            raise ValueError(f"the warp moves the clipping edges to [{lo:.6g} m, {hi:.6g} m] but twin estimator "
                             f"{describe(twin)} can only pass gradients on [-m, m]; choose a periodic twin estimator")
    return TwinSpec(mode, twin, init, factor, float(lr_scale), source if init == "mirror" else None,
                    target if init == "mirror" and not target.is_identity else None, role=role, rule=rule,
                    extension=extension)


def alignment_map(estimator: Estimator, spec: TwinSpec):
    """layer -> its weights in the twin's coordinates, ``M_B^{-1}(M_A(w))`` (``M_A(w)`` for an STE twin),
    whether or not the twin's init went through it, so that a warped pair and its no-warp control
    report the same "through M" alignment; None when either estimator has no map."""
    if spec.init == "mirror":  # exactly the map the init went through
        return lambda layer: spec.to_twin(layer.weight, layer.m)
    try:
        source = estimator.reference()
        target = spec.estimator.reference()
    except NotInClassError:
        return None
    return lambda layer: warp(layer.weight, layer.m, source, target, spec.extension)
