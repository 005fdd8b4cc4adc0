"""Timing of ``qatrun-bench``: device syncs, per-section timers without host syncs, load, the interleaved
timed rounds, and what the rounds say: ratios as the median of per-round ratios, with their spread.

A ratio is taken inside each round and the median taken over rounds, not as a ratio of per-config
medians: the configs of one round ran interleaved, under the same load, so a neighbour's burst cancels
in the round's ratio, while the per-config medians can come from different rounds (on a shared machine
one config's round took 146 ms and another's 580 ms). A ratio below its physical floor (the pair does
two runs' work: at least 2.00x one step of the same kind) is noise, not a result, and is said so.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Sections:
    """Per-section durations inside an iteration without host syncs (CUDA events on the GPU)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.pending: list[tuple[str, object, object]] = []
        self.profiling = False

    @contextlib.contextmanager
    def __call__(self, name: str):
        rf = torch.profiler.record_function(f"qatrun/{name}") if self.profiling else contextlib.nullcontext()
        with rf:
            if self.cuda:
                start = torch.cuda.Event(enable_timing=True)
                start.record()
            else:
                start = time.perf_counter()
            yield
            if self.cuda:
                end = torch.cuda.Event(enable_timing=True)
                end.record()
            else:
                end = time.perf_counter()
        self.pending.append((name, start, end))

    def resolve(self) -> dict[str, float]:
        """Seconds per section since the last resolve (call after a device sync)."""
        out: dict[str, float] = {}
        for name, s, e in self.pending:
            dt = s.elapsed_time(e) / 1e3 if self.cuda else e - s
            out[name] = out.get(name, 0.0) + dt
        self.pending.clear()
        return out


def allocated(device: torch.device) -> int:
    """Bytes allocated on a CUDA device (0 elsewhere)."""
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def loadavg() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


# ----------------------------------------------------------------------------------------------
# Interleaved timed rounds
# ----------------------------------------------------------------------------------------------


def _iterate(runner, n: int) -> None:
    for _ in range(n):
        runner.iteration()


def _time_block(runners, order, device, steps) -> dict[str, float]:
    """Each config's ``steps`` iterations between two syncs: seconds per iteration."""
    out = {}
    for n in order:
        sync(device)
        t0 = time.perf_counter()
        _iterate(runners[n], steps)
        sync(device)
        out[n] = (time.perf_counter() - t0) / steps
    return out


def _time_step(runners, order, device, steps) -> dict[str, float]:
    """The configs alternate every iteration, each iteration timed alone: seconds per iteration."""
    tot = dict.fromkeys(order, 0.0)
    for _ in range(steps):
        for n in order:
            sync(device)
            t0 = time.perf_counter()
            runners[n].iteration()
            sync(device)
            tot[n] += time.perf_counter() - t0
    return {n: t / steps for n, t in tot.items()}


def time_rounds(runners: dict, device, steps: int, rounds: int, interleave: str, say, first: int = 0):
    """Interleaved rounds ``first`` .. ``first + rounds - 1``, configs in rotating order: (seconds/iteration
    per round per config, per round: each qatrun config's section seconds/iteration)."""
    names = list(runners)
    per_round = {n: [] for n in names}
    sec_rounds: list[dict[str, float]] = []
    timer = _time_block if interleave == "block" else _time_step
    for rnd in range(first, first + rounds):
        order = names[rnd % len(names):] + names[: rnd % len(names)]
        for n, s in timer(runners, order, device, steps).items():
            per_round[n].append(s)
        sec_rounds.append({n: {k: v / steps for k, v in r.sec.resolve().items()}
                           for n, r in runners.items() if hasattr(r, "sec")})
        say(f"  round {rnd + 1}: " + ", ".join(f"{n} {per_round[n][-1] * 1e3:.1f} ms" for n in names), flush=True)
    return per_round, sec_rounds


# ----------------------------------------------------------------------------------------------
# What the rounds say: ratios, their spread, their floors
# ----------------------------------------------------------------------------------------------

# The ratios a case's targets read; more rounds are run while one of them spreads wider than SPREAD_WIDE.
HEADLINE = ("pair_over_plain", "pair_over_plain_compiled", "pair_compiled_over_plain_compiled")
SPREAD_WIDE = 0.10  # (max - min) / median of the per-round ratios
MORE_ROUNDS = 3  # at most this many times the rounds asked for, when the spread is wide
PAIR_FLOOR = 2.0  # the pair does two runs' work: at least two steps of the same kind (eager or compiled)


def ratios(ms: dict[str, float]) -> dict[str, float]:
    """Each qatrun config over each plain baseline, and the pair over the single run."""
    bases = [n for n in ms if n.startswith("plain")]
    out = {f"{n}_over_{b}": ms[n] / ms[b] for b in bases for n in ms if not n.startswith("plain")}
    if "single" in ms:
        out["pair_over_single"] = ms["pair"] / ms["single"]
    if "pair_compiled" in ms and "single_compiled" in ms:
        out["pair_compiled_over_single_compiled"] = ms["pair_compiled"] / ms["single_compiled"]
    return out


def round_ratios(per_round: dict[str, list[float]]) -> dict[str, list[float]]:
    """Every ratio of ``ratios`` taken inside each round: ratio name -> one value per round."""
    n = min(len(v) for v in per_round.values())
    each = [ratios({name: v[i] for name, v in per_round.items()}) for i in range(n)]
    return {k: [r[k] for r in each] for k in (each[0] if each else {})}


def spread(values: list[float]) -> dict:
    """The median of per-round values, their range, and (max - min) / median (None for one round)."""
    med = statistics.median(values)
    wide = (max(values) - min(values)) / med if len(values) > 1 and med else None
    return {"median": med, "min": min(values), "max": max(values), "spread": wide, "rounds": len(values)}


def too_wide(per_round: dict[str, list[float]]) -> str | None:
    """The first headline ratio whose per-round values spread wider than SPREAD_WIDE, in words; or None."""
    for key, values in round_ratios(per_round).items():
        s = spread(values)
        if key in HEADLINE and s["spread"] is not None and s["spread"] > SPREAD_WIDE:
            return f"{key} spread {100 * s['spread']:.0f}% > {100 * SPREAD_WIDE:.0f}%"
    return None


def floors(compiled: dict[str, bool]) -> dict[str, float]:
    """The floor of each pair ratio whose two configs are built alike (both eager or both compiled), from
    ``compiled``: config name -> whether it ran compiled. A compiled pair against an eager plain step has
    none: compiling can beat the eager step."""
    out = {}
    for pair in ("pair", "pair_compiled"):
        for plain in ("plain", "plain_compiled"):
            if pair in compiled and plain in compiled and compiled[pair] == compiled[plain]:
                out[f"{pair}_over_{plain}"] = PAIR_FLOOR
    return out


def below_floor(medians: dict[str, float], floor: dict[str, float]) -> dict[str, dict]:
    """The ratios below their floor: name -> {"value", "floor"}."""
    return {k: {"value": medians[k], "floor": f} for k, f in floor.items() if k in medians and medians[k] < f}
