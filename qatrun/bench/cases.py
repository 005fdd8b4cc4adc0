"""What ``qatrun-bench`` measures: the cases (model, batch, device, precision) and their targets."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Case:
    name: str
    model: str
    batch: int
    device: str  # "cpu" | "cuda"
    precision: str = "fp32"  # fp32 | bf16 (autocast), for every config of the case
    channels_last: bool = False
    num_classes: int = 10
    channels: int = 1
    image_size: int = 28
    qat_compile: bool = False  # cfg.compile for the qatrun runs (torch.compile of each model)
    compiled_baseline: bool = False  # also time plain_compiled
    compiled_qat: bool = False  # also time single_compiled and pair_compiled (compile=true) beside the eager ones
    scaling: bool = False  # a row of the --cases scaling table

    def describe(self) -> str:
        fmt = ", channels_last" if self.channels_last else ""
        comp = ", qatrun compile=true" if self.qat_compile else ""
        size = f", {self.channels}x{self.image_size}x{self.image_size}" if self.scaling else ""
        also = ", plus compiled plain/single/pair" if self.compiled_qat else ""
        return f"{self.model} batch {self.batch}{size} on {self.device}, {self.precision}{fmt}{comp}{also}"


_R50 = dict(model="resnet50", batch=256, device="cuda", channels_last=True, num_classes=1000, channels=3,
            image_size=224, qat_compile=True, compiled_baseline=True)
CASES: dict[str, Case] = {
    "cpu-small": Case("cpu-small", "small_cnn", 600, "cpu", compiled_baseline=True, compiled_qat=True),
    "gpu-small128": Case("gpu-small128", "small_cnn", 128, "cuda", qat_compile=True, compiled_baseline=True),
    "gpu-small600": Case("gpu-small600", "small_cnn", 600, "cuda", qat_compile=True, compiled_baseline=True),
    "gpu-r50-fp32": Case("gpu-r50-fp32", precision="fp32", **_R50),
    "gpu-r50-bf16": Case("gpu-r50-bf16", precision="bf16", **_R50),
    # --cases scaling (CPU, eager): how the pair's cost and the change-point tracker's grow with the model
    "cpu-scale-small": Case("cpu-scale-small", "small_cnn", 64, "cpu", scaling=True),
    "cpu-scale-r18": Case("cpu-scale-r18", "resnet18", 64, "cpu", channels=3, image_size=32, scaling=True),
}
SCALING = [n for n, c in CASES.items() if c.scaling]


@dataclass(frozen=True)
class Target:
    case: str
    name: str
    key: str  # a key of the case's "checks" dict
    limit: float


# What a pair step may cost against plain float training (docs/benchmarks.md). Each is checked only when its
# case ran.
TARGETS = [
    Target("cpu-small", "pair step / plain float step (eager)", "pair_over_plain", 2.2),
    Target("cpu-small", "pair step compiled / plain float step compiled", "pair_compiled_over_plain_compiled", 2.1),
    Target("gpu-r50-bf16", "pair step / plain float step compiled", "pair_over_plain_compiled", 2.1),
    Target("gpu-small128", "pair step / ONE plain eager float step (needs CUDA graphs)", "pair_over_plain", 0.8),
    Target("gpu-r50-fp32", "change-point tracking / pair step", "changepoint_fraction", 0.10),
    Target("gpu-r50-bf16", "change-point tracking / pair step", "changepoint_fraction", 0.10),
    *[Target(c, "pair peak memory / one model (plain float) peak", "pair_peak_over_plain", 2.1) for c in CASES
      if not CASES[c].scaling],
]


def select_cases(spec: str) -> list[Case]:
    """``--cases``: comma-separated names, ``auto`` (cpu-small, plus the GPU cases with CUDA), ``scaling``
    (the cpu-scale-* cases) or ``all``."""
    if spec == "auto":
        names = ["cpu-small"] + ([n for n in CASES if n.startswith("gpu-")] if torch.cuda.is_available() else [])
    elif spec == "all":
        names = list(CASES)
    else:
        names = [n for s in spec.split(",") if s.strip() for n in (SCALING if s.strip() == "scaling" else [s.strip()])]
    bad = [n for n in names if n not in CASES]
    if bad:
        raise SystemExit(f"qatrun-bench: unknown case(s) {', '.join(bad)}; valid: {', '.join(CASES)}, auto, scaling, all")
    cases = [CASES[n] for n in names]
    no_cuda = [c.name for c in cases if c.device == "cuda" and not torch.cuda.is_available()]
    if no_cuda:
        raise SystemExit(f"qatrun-bench: case(s) {', '.join(no_cuda)} need CUDA, which is not available")
    return cases


def check_targets(case: Case, checks: dict) -> list[dict]:
    """Every target of ``case`` against its figure in ``checks`` (``pass`` None where it was not measured)."""
    return [
        {"name": t.name, "key": t.key, "limit": t.limit, "value": checks.get(t.key),
         "pass": None if checks.get(t.key) is None else bool(checks[t.key] <= t.limit)}
        for t in TARGETS if t.case == case.name
    ]
