"""How ``qatrun-bench`` measures one case (``run_case``): the build and warm-up, interleaved timed
rounds, the memory pass and the profile. The definitions are in the package doc."""

from __future__ import annotations

import gc
import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict

import torch
from omegaconf import OmegaConf

from qatrun.bench.cases import Case, check_targets
from qatrun.bench.runners import PlainStep, QatLoop, make_batch, make_cfg, without_compile
from qatrun.bench.timing import allocated, loadavg, sync
from qatrun.device import fp32_precision, set_fp32_precision
from qatrun.spec import group

# ----------------------------------------------------------------------------------------------
# Memory and profile
# ----------------------------------------------------------------------------------------------


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
    quant = {e.key: ms(e.cpu_time_total) for e in avg if "QuantizeWeight" in e.key}
    ops = sorted((e for e in avg if not e.key.startswith("qatrun/")), key=lambda e: e.self_cpu_time_total,
                 reverse=True)[:top]
    return {
        "iterations": iterations,
        "note": "ms per pair iteration under the profiler (the log section once in total)",
        "sections_ms": sections,
        "quantizer_ms": quant,
        "top_ops_self_cpu_ms": {e.key: ms(e.self_cpu_time_total) for e in ops},
    }


# ----------------------------------------------------------------------------------------------
# One case: build and warm up, timed rounds, figures
# ----------------------------------------------------------------------------------------------


def _builders(case: Case, cfg, x, y) -> dict:
    """name -> (build, compiled, eager rebuild or None: dropped when its compile fails)."""
    model_options = {k: v for k, v in group(cfg.model)[1].items() if k not in ("he_init", "quantize_linear")}
    kw = dict(seed=cfg.seed, model_kwargs=model_options)  # the same architecture as the qatrun runs
    opt = group(cfg.optimizer)
    qat = lambda c, pair: lambda: QatLoop(c, x, y, case.num_classes, pair)  # noqa: E731
    out = {"plain": (lambda: PlainStep(case, x, y, opt, **kw), False, None)}
    if case.compiled_baseline:
        out["plain_compiled"] = (lambda: PlainStep(case, x, y, opt, compiled=True, **kw), True, None)
    for name in ("single", "pair"):
        out[name] = (qat(cfg, name == "pair"), case.qat_compile, qat(without_compile(cfg), name == "pair"))
    return out


def _iterate(runner, n: int) -> None:
    for _ in range(n):
        runner.iteration()


def _build_and_warm_up(name, build, compiled, eager, warmup, device, note, say):
    """The built, warmed-up runner; a compile failure falls back to ``eager`` (or drops it: None)."""
    r = build()
    try:
        _iterate(r, max(warmup, 3) if compiled else warmup)
        sync(device)
        return r
    except Exception as exc:  # a torch.compile failure must not lose the other numbers
        if not compiled:
            raise
        note["compile_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    if eager is None:
        say(f"  {name}: torch.compile failed, dropped ({note['compile_error']})", flush=True)
        return None
    say(f"  {name}: torch.compile failed, running it eager ({note['compile_error']})", flush=True)
    r = eager()
    note["ran_eager"] = True
    _iterate(r, warmup)
    sync(device)
    return r


def _compiled_qat_builders(case: Case, cfg, x, y) -> dict:
    """``single_compiled`` / ``pair_compiled``: the qatrun runs with ``compile=true`` beside the eager ones
    (``case.compiled_qat``; the GPU cases compile ``single`` and ``pair`` themselves). Dropped, with a
    note, when the compile fails: a compiled label must not time an eager run."""
    if not case.compiled_qat or case.qat_compile:
        return {}
    c = OmegaConf.merge(cfg, {"compile": True})
    qat = lambda pair: lambda: QatLoop(c, x, y, case.num_classes, pair)  # noqa: E731
    return {"single_compiled": (qat(False), True, None), "pair_compiled": (qat(True), True, None)}


def build_runners(case: Case, cfg, x, y, warmup: int, say, skip=()) -> tuple[dict, dict, dict]:
    """Build and warm up every config: (runners, GPU resident bytes per config, notes per config).

    A compiled pair resets dynamo when it is built (``pair.Pair``), so the compiled configs built before
    it would recompile inside the timed rounds: with more than one compiled config, every compiled one
    runs one more iteration after the last build (its recompile, if any, lands there). ``skip``: configs
    not built (``plain`` and ``pair`` always are)."""
    device = x.device
    runners, resident_gpu, notes, compiled_names = {}, {}, {}, []
    builders = {**_builders(case, cfg, x, y), **_compiled_qat_builders(case, cfg, x, y)}
    bad = [n for n in skip if n in ("plain", "pair") or n not in builders]
    if bad:
        raise ValueError(f"cannot skip {', '.join(bad)}: case {case.name} has {', '.join(builders)}, and plain and "
                         "pair are always timed")
    for name, (build, compiled, eager) in {n: b for n, b in builders.items() if n not in skip}.items():
        say(f"  building {name} + {warmup} warm-up steps ...", flush=True)
        sync(device)
        before = allocated(device)
        t0 = time.perf_counter()
        note = notes.setdefault(name, {})
        r = _build_and_warm_up(name, build, compiled, eager, warmup, device, note, say)
        if r is None:
            continue
        if isinstance(r, QatLoop):
            r.sec.resolve()
        r.zero_grads()
        if device.type == "cuda":
            resident_gpu[name] = allocated(device) - before
        note["build_and_warmup_s"] = round(time.perf_counter() - t0, 2)
        runners[name] = r
        if compiled and not note.get("ran_eager"):
            compiled_names.append(name)
    if len(compiled_names) > 1:
        say(f"  one more iteration of {', '.join(compiled_names)} (recompiles after the last dynamo reset) ...",
            flush=True)
        for name in compiled_names:
            t0 = time.perf_counter()
            runners[name].iteration()
            sync(device)
            notes[name]["rewarm_s"] = round(time.perf_counter() - t0, 2)
            if isinstance(runners[name], QatLoop):
                runners[name].sec.resolve()
            runners[name].zero_grads()
    return runners, resident_gpu, notes


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


def time_rounds(runners: dict, device, steps: int, rounds: int, interleave: str, say):
    """Interleaved rounds, configs in rotating order: (seconds/iteration per round per config,
    per round: each qatrun config's section seconds/iteration)."""
    names = list(runners)
    per_round = {n: [] for n in names}
    sec_rounds: list[dict[str, float]] = []
    timer = _time_block if interleave == "block" else _time_step
    for rnd in range(rounds):
        order = names[rnd % len(names):] + names[: rnd % len(names)]
        for n, s in timer(runners, order, device, steps).items():
            per_round[n].append(s)
        sec_rounds.append({n: {k: v / steps for k, v in r.sec.resolve().items()}
                           for n, r in runners.items() if isinstance(r, QatLoop)})
        say(f"  round {rnd + 1}/{rounds}: " + ", ".join(f"{n} {per_round[n][-1] * 1e3:.1f} ms" for n in names),
            flush=True)
    return per_round, sec_rounds


def ratios(ms: dict[str, float]) -> dict[str, float]:
    """Each qatrun config over each plain baseline, and the pair over the single run."""
    bases = [n for n in ms if n.startswith("plain")]
    out = {f"{n}_over_{b}": ms[n] / ms[b] for b in bases for n in ms if not n.startswith("plain")}
    if "single" in ms:
        out["pair_over_single"] = ms["pair"] / ms["single"]
    if "pair_compiled" in ms and "single_compiled" in ms:
        out["pair_compiled_over_single_compiled"] = ms["pair_compiled"] / ms["single_compiled"]
    return out


def _median_sections(sec_rounds: list[dict], name: str) -> dict[str, float]:
    """ms/step per section of config ``name``, the median over rounds."""
    rounds = [s[name] for s in sec_rounds if name in s]
    return {k: statistics.median(r.get(k, 0.0) for r in rounds) * 1e3 for k in (rounds[0] if rounds else {})}


def timing_figures(per_round: dict, sec_rounds: list[dict]) -> dict:
    """ms/step (median and fastest round), the ratios and the pairs' sections from the timed rounds."""
    ms = {n: statistics.median(v) * 1e3 for n, v in per_round.items()}
    ms_min = {n: min(v) * 1e3 for n, v in per_round.items()}
    sections = _median_sections(sec_rounds, "pair")
    compiled = {"pair_compiled_sections_ms": _median_sections(sec_rounds, "pair_compiled")} if "pair_compiled" in ms else {}
    return {
        "ms_per_step": ms,
        "ms_per_step_min": ms_min,
        "ms_per_step_rounds": {n: [v * 1e3 for v in vs] for n, vs in per_round.items()},
        "ratios": ratios(ms),
        "ratios_from_min": ratios(ms_min),
        "pair_sections_ms": sections,
        "changepoint_ms": sections.get("tracker", 0.0),
        "changepoint_fraction": sections.get("tracker", 0.0) / ms["pair"],
        **compiled,
    }


def memory_figures(runners: dict, device, resident_gpu: dict, r: dict) -> dict:
    """The memory pass of every config; adds the peak ratios to ``r`` (the case's ratios)."""
    mem = {n: measure_memory(run, device, resident_gpu.get(n), pair=n == "pair") for n, run in runners.items()}
    if mem["plain"]["peak_bytes"]:
        r["pair_peak_over_plain"] = mem["pair"]["peak_bytes"] / mem["plain"]["peak_bytes"]
        if "single" in mem:
            r["pair_peak_over_single"] = mem["pair"]["peak_bytes"] / mem["single"]["peak_bytes"]
    return mem


def _device_and_interleave(case: Case, interleave: str) -> tuple[torch.device, str]:
    device = torch.device(case.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"case {case.name} needs CUDA")
    if interleave == "auto":
        interleave = "step" if device.type == "cpu" else "block"
    if interleave not in ("step", "block"):
        raise ValueError(f"interleave must be auto, step or block, got {interleave!r}")
    return device, interleave


def run_case(case: Case, warmup: int = 2, steps: int | None = None, rounds: int = 3, log_every: int | None = None,
             profile: bool = False, verbose: bool = True, keep: bool = False, interleave: str = "auto",
             overrides=(), skip=()) -> dict:
    """Build every config of ``case``, warm up, time interleaved rounds; return the figures.

    ``steps``: timed iterations per config per round (default: the config's ``trainer.log_every``,
    after ``log_every`` if given, so each pair round holds exactly one logging step).
    ``interleave``: ``step`` alternates the configs every iteration inside a round (each config
    still runs ``steps`` iterations per round, timed one by one: what the CPU wants, where a
    neighbour's load drifts and a sync is free); ``block`` runs each config's ``steps`` iterations
    between two syncs, configs in rotating order (what the GPU wants: the host runs ahead within a
    block, as in training); ``auto``: step on the CPU, block on the GPU.
    ``keep=True`` also returns the runners (``result["_runners"]``, not JSON) for inspection.
    ``skip``: configs not built (e.g. ``single``, to spare a GPU case a compile).
    """
    device, interleave = _device_and_interleave(case, interleave)
    say = print if verbose else (lambda *a, **k: None)
    torch._dynamo.reset()  # the case before this one (another batch size) must not make these graphs dynamic
    if device.type == "cuda":  # what training runs: fp32 is IEEE fp32 (no TF32), set before anything compiles
        set_fp32_precision()
    cfg = make_cfg(case, log_every, overrides)
    steps = steps if steps is not None else int(cfg.trainer.log_every)
    x, y = make_batch(case, device, cfg.seed)

    load0 = loadavg()
    runners, resident_gpu, notes = build_runners(case, cfg, x, y, warmup, say, skip)
    per_round, sec_rounds = time_rounds(runners, device, steps, rounds, interleave, say)
    load1 = loadavg()

    pair = runners["pair"].pair
    res = {
        "case": asdict(case),
        "warmup": warmup, "steps_per_round": steps, "rounds": rounds, "interleave": interleave,
        "log_every": int(cfg.trainer.log_every),
        "estimator": pair.est.name,
        "twin": f"{cfg.pair.twin} -> {pair.spec.estimator.name}",
        "twin_init": pair.spec.init, "twin_role": pair.spec.role, "twin_lr_factor": pair.spec.lr_factor,
        **timing_figures(per_round, sec_rounds),
        "loadavg_1min": {"before": load0, "after": load1},
        "notes": notes,
        "fp32_precision": fp32_precision() if device.type == "cuda" else None,
    }
    say("  memory pass ...", flush=True)
    res["memory"] = memory_figures(runners, device, resident_gpu, res["ratios"])
    res["tracker"] = tracker_figures(pair)
    if profile:
        say("  profiling the pair ...", flush=True)
        res["profile"] = profile_pair(runners["pair"])
        if "pair_compiled" in runners:
            res["profile_compiled"] = profile_pair(runners["pair_compiled"])

    res["checks"] = {
        "pair_over_plain": res["ratios"]["pair_over_plain"],
        "pair_over_plain_compiled": res["ratios"].get("pair_over_plain_compiled"),
        "pair_compiled_over_plain_compiled": res["ratios"].get("pair_compiled_over_plain_compiled"),
        "changepoint_fraction": res["changepoint_fraction"],
        "pair_peak_over_plain": res["ratios"].get("pair_peak_over_plain"),
    }
    res["targets"] = check_targets(case, res["checks"])
    if keep:
        res["_runners"] = runners
    return res
