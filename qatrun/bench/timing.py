"""Timing helpers of ``qatrun-bench``: device syncs, per-section timers without host syncs, load."""

from __future__ import annotations

import contextlib
import os
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
