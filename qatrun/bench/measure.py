"""How ``qatrun-bench`` measures one case (``run_case``): the build and warm-up, the interleaved timed
rounds (more while the ratios spread wide), the figures and the verdicts; the memory pass and the profile
are ``memory``'s, the rounds and what they say ``timing``'s. The definitions are in the package doc."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict

import torch
from omegaconf import OmegaConf

from qatrun.bench.cases import Case, check_targets
from qatrun.bench.memory import memory_figures, profile_pair, tracker_figures
from qatrun.bench.runners import PlainStep, QatLoop, make_batch, make_cfg, without_compile
from qatrun.bench.timing import (MORE_ROUNDS, allocated, below_floor, floors, loadavg, ratios, round_ratios, spread,
                                  sync, time_rounds, too_wide)
from qatrun.device import fp32_precision, set_fp32_precision
from qatrun.spec import group

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


def _median_sections(sec_rounds: list[dict], name: str) -> dict[str, float]:
    """ms/step per section of config ``name``, the median over rounds."""
    rounds = [s[name] for s in sec_rounds if name in s]
    return {k: statistics.median(r.get(k, 0.0) for r in rounds) * 1e3 for k in (rounds[0] if rounds else {})}


def timing_figures(per_round: dict, sec_rounds: list[dict], floor: dict[str, float]) -> dict:
    """ms/step (median and fastest round), the ratios (the median of per-round ratios, with their spread and
    the ratios of the per-config medians beside them), the ratios below their ``floor``, the pairs' sections."""
    ms = {n: statistics.median(v) * 1e3 for n, v in per_round.items()}
    ms_min = {n: min(v) * 1e3 for n, v in per_round.items()}
    each = {k: spread(v) for k, v in round_ratios(per_round).items()}
    medians = {k: s["median"] for k, s in each.items()}
    sections = _median_sections(sec_rounds, "pair")
    compiled = {"pair_compiled_sections_ms": _median_sections(sec_rounds, "pair_compiled")} if "pair_compiled" in ms else {}
    return {
        "ms_per_step": ms,
        "ms_per_step_min": ms_min,
        "ms_per_step_rounds": {n: [v * 1e3 for v in vs] for n, vs in per_round.items()},
        "ratios": medians,
        "ratio_spread": {k: {n: v for n, v in s.items() if n != "median"} for k, s in each.items()},
        "ratios_of_medians": ratios(ms),
        "ratios_from_min": ratios(ms_min),
        "below_floor": below_floor(medians, floor),
        "pair_sections_ms": sections,
        "changepoint_ms": sections.get("tracker", 0.0),
        "changepoint_fraction": sections.get("tracker", 0.0) / ms["pair"],
        **compiled,
    }


def _device_and_interleave(case: Case, interleave: str) -> tuple[torch.device, str]:
    device = torch.device(case.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"case {case.name} needs CUDA")
    if interleave == "auto":
        interleave = "step" if device.type == "cpu" else "block"
    if interleave not in ("step", "block"):
        raise ValueError(f"interleave must be auto, step or block, got {interleave!r}")
    return device, interleave


def compiled_configs(case: Case, runners: dict, notes: dict) -> dict[str, bool]:
    """Config name -> whether it ran compiled (a compile that failed and ran eager did not)."""
    qat = {"single": case.qat_compile, "pair": case.qat_compile}
    return {n: qat.get(n, n.endswith("_compiled")) and not notes.get(n, {}).get("ran_eager") for n in runners}


def timed_rounds(runners: dict, device, steps: int, rounds: int, interleave: str, say) -> tuple[dict, list, int]:
    """``rounds`` interleaved rounds, then one more at a time while a headline ratio's per-round values
    spread wide (``timing.too_wide``), up to MORE_ROUNDS x ``rounds``: (per round per config, sections, rounds)."""
    per_round, sec_rounds = time_rounds(runners, device, steps, rounds, interleave, say)
    done = rounds
    while done < MORE_ROUNDS * rounds and (why := too_wide(per_round)):
        say(f"  one more round ({why})", flush=True)
        more, more_sec = time_rounds(runners, device, steps, 1, interleave, say, first=done)
        for n, v in more.items():
            per_round[n] += v
        sec_rounds += more_sec
        done += 1
    return per_round, sec_rounds, done


def checks_and_targets(case: Case, res: dict) -> None:
    """The figures the targets read (``checks``) and the verdicts; a ratio below its floor is noise: no verdict."""
    res["checks"] = {
        "pair_over_plain": res["ratios"]["pair_over_plain"],
        "pair_over_plain_compiled": res["ratios"].get("pair_over_plain_compiled"),
        "pair_compiled_over_plain_compiled": res["ratios"].get("pair_compiled_over_plain_compiled"),
        "changepoint_fraction": res["changepoint_fraction"],
        "pair_peak_over_plain": res["ratios"].get("pair_peak_over_plain"),
    }
    res["targets"] = check_targets(case, res["checks"])
    for target in res["targets"]:
        if target["key"] in res["below_floor"]:
            target.update({"pass": None, "noise": True})


def run_case(case: Case, warmup: int = 2, steps: int | None = None, rounds: int = 3, log_every: int | None = None,
             profile: bool = False, verbose: bool = True, keep: bool = False, interleave: str = "auto",
             overrides=(), skip=()) -> dict:
    """Build every config of ``case``, warm up, time interleaved rounds (more while the ratios spread wide);
    return the figures.

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
    per_round, sec_rounds, done = timed_rounds(runners, device, steps, rounds, interleave, say)
    load1 = loadavg()

    pair = runners["pair"].pair
    res = {
        "case": asdict(case),
        "warmup": warmup, "steps_per_round": steps, "rounds": done, "rounds_asked": rounds, "interleave": interleave,
        "log_every": int(cfg.trainer.log_every),
        "estimator": pair.est.name,
        "twin": f"{cfg.pair.twin} -> {pair.spec.estimator.name}",
        "twin_init": pair.spec.init, "twin_role": pair.spec.role, "twin_lr_factor": pair.spec.lr_factor,
        **timing_figures(per_round, sec_rounds, floors(compiled_configs(case, runners, notes))),
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
    checks_and_targets(case, res)
    if keep:
        res["_runners"] = runners
    return res
