"""The memory pass and the profile of ``qatrun-bench`` (definitions in the package doc): resident plus
transient bytes per config, the change-point tracker's size, torch.profiler over pair iterations."""

from __future__ import annotations

import gc
import json
import os
import tempfile

import torch

from qatrun.bench.runners import QatLoop
from qatrun.bench.timing import sync



def _storage_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        s = t.untyped_storage()
        key = (s.device.type, s.data_ptr())
        if key not in seen:
            seen.add(key)
            total += s.nbytes()
    return total


def measure_memory(runner, device: torch.device, resident_gpu: int | None, pair: bool) -> dict:
    """Peak = resident + transient of one iteration (plus a logging step for the pair); see the package doc."""
    runner.zero_grads()
    gc.collect()
    resident = _storage_bytes(runner.resident_tensors())
    out = {"resident_state_bytes": resident}

    def one():
        runner.iteration()
        if pair:
            runner.log()

    if device.type == "cuda":
        sync(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        one()
        sync(device)
        transient = torch.cuda.max_memory_allocated(device) - start
        out.update(resident_bytes=resident_gpu, resident_method="measured memory_allocated growth (build + warm-up)",
                   transient_method="torch.cuda.max_memory_allocated")
    else:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            one()
        transient = _cpu_peak_from_profile(prof)
        out.update(resident_bytes=resident, resident_method="sum of distinct tensor storages",
                   transient_method="profiler allocation events (upper bound)")
    out["transient_bytes"] = int(transient)
    out["peak_bytes"] = int(out["resident_bytes"] + transient) if out["resident_bytes"] is not None else None
    return out


def _cpu_peak_from_profile(prof) -> int:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f).get("traceEvents", [])
    tot = [e["args"].get("Total Allocated", 0) for e in events
           if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type", 0) == 0]
    return max([0, *tot])


def tracker_figures(pair) -> dict | None:
    """The change-point tracker's size: weights tracked, state bytes (both runs), bytes per weight."""
    metric = pair.metrics.get("changepoints")
    if metric is None:
        return None
    t = metric.tracker
    nbytes = _storage_bytes(t.state.values())
    return {"weights": t.numel, "state_bytes": nbytes, "bytes_per_weight": nbytes / max(t.numel, 1)}


def profile_pair(runner: QatLoop, iterations: int = 1, top: int = 12) -> dict:
    """torch.profiler over pair iterations: section totals, quantizer fwd/bwd, top ops."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if runner.x.is_cuda else [])
    runner.sec.profiling = True
    try:
        with profile(activities=acts) as prof:
            for _ in range(iterations):
                runner.iteration()
            if runner.pair.measured:
                runner.log()
            sync(runner.x.device)
    finally:
        runner.sec.profiling = False
        runner.sec.resolve()
    avg = prof.key_averages()
    ms = lambda us: round(us / 1e3 / iterations, 3)  # noqa: E731
    sections = {e.key.removeprefix("qatrun/"): ms(e.cpu_time_total) for e in avg if e.key.startswith("qatrun/")}
    quant = {e.key: ms(e.cpu_time_total) for e in avg if "Quantize" in e.key}  # the quantizers' autograd Functions
    ops = sorted((e for e in avg if not e.key.startswith("qatrun/")), key=lambda e: e.self_cpu_time_total,
                 reverse=True)[:top]
    return {
        "iterations": iterations,
        "note": "ms per pair iteration under the profiler (the log section once in total)",
        "sections_ms": sections,
        "quantizer_ms": quant,
        "top_ops_self_cpu_ms": {e.key: ms(e.self_cpu_time_total) for e in ops},
    }


def memory_figures(runners: dict, device, resident_gpu: dict, r: dict) -> dict:
    """The memory pass of every config; adds the peak ratios to ``r`` (the case's ratios)."""
    mem = {n: measure_memory(run, device, resident_gpu.get(n), pair=n == "pair") for n, run in runners.items()}
    if mem["plain"]["peak_bytes"]:
        r["pair_peak_over_plain"] = mem["pair"]["peak_bytes"] / mem["plain"]["peak_bytes"]
        if "single" in mem:
            r["pair_peak_over_single"] = mem["pair"]["peak_bytes"] / mem["single"]["peak_bytes"]
    return mem
