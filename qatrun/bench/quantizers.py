"""``qatrun-bench --cases quantizers``: what each weight quantizer, and one quantized-activation setting, costs.

On the CPU small case (``cpu-small``, eager) every setting's single run and pair are built from the default
config with the setting's overrides and timed in the same interleaved rounds as the plain float step
(``timing.time_rounds``), so every ratio is taken inside a round, under one load, and its median taken over
the rounds, as for the other cases. Per setting:

* ``pair_over_two_singles``: the pair over two single runs of the same setting (target: at most 1.10, the
  pair's lockstep and metrics within 10% of running the two runs apart);
* ``single_over_tensor``: the setting's single run over the ``tensor`` single run, the paper's per-tensor
  fixed grid (target: at most 1.3);
* ``single_over_plain`` and ``pair_over_plain``: both against the plain float step, for scale.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace

import torch

from qatrun.bench.cases import CASES, Case
from qatrun.bench.runners import PlainStep, QatLoop, make_batch, make_cfg
from qatrun.bench.timing import loadavg, spread, time_rounds
from qatrun.spec import group

# setting -> its config overrides; ``tensor`` (the default) is the reference of ``single_over_tensor``
SETTINGS: dict[str, tuple[str, ...]] = {
    "tensor": (),
    "channel": ("quantizer=channel",),
    "lsq": ("quantizer=lsq",),
    "lsq_channel": ("quantizer=lsq", "quantizer.scope=channel"),
    "dynamic_absmean": ("quantizer=dynamic",),
    "dynamic_max_abs": ("quantizer=dynamic", "quantizer.stat=max_abs"),
    "pact4": ("activation=pact", "activation.bits=4"),
}
LIMITS = {"pair_over_two_singles": 1.10, "single_over_tensor": 1.3}
WORDS = {"pair_over_two_singles": "pair / two single runs", "single_over_tensor": "single run / tensor single run"}


def build(case: Case, settings: dict, warmup: int, log_every: int | None, say) -> tuple[dict, torch.device]:
    """The plain float step and each setting's single run and pair on one synthetic batch, warmed up."""
    device = torch.device(case.device)
    base = make_cfg(case, log_every)
    x, y = make_batch(case, device, base.seed)
    model_options = {k: v for k, v in group(base.model)[1].items() if k not in ("he_init", "quantize_linear")}
    runners = {"plain": PlainStep(case, x, y, group(base.optimizer), seed=base.seed, model_kwargs=model_options)}
    for name, overrides in settings.items():
        cfg = make_cfg(case, log_every, overrides)
        for kind in ("single", "pair"):
            runners[f"{name}/{kind}"] = QatLoop(cfg, x, y, case.num_classes, pair=kind == "pair")
    say(f"  built plain and {len(settings)} settings x (single, pair); {warmup} warm-up steps each ...", flush=True)
    for r in runners.values():
        for _ in range(warmup):
            r.iteration()
        if isinstance(r, QatLoop):
            r.sec.resolve()
        r.zero_grads()
    return runners, device


def round_ratios(per_round: dict[str, list[float]], settings) -> dict[str, dict[str, list[float]]]:
    """Each setting's ratios taken inside each round: setting -> ratio name -> one value per round."""
    out = {}
    for name in settings:
        single, pair = per_round[f"{name}/single"], per_round[f"{name}/pair"]
        out[name] = {
            "pair_over_two_singles": [p / (2 * s) for p, s in zip(pair, single)],
            "single_over_plain": [s / b for s, b in zip(single, per_round["plain"])],
            "pair_over_plain": [p / b for p, b in zip(pair, per_round["plain"])],
        }
        if "tensor" in settings:
            out[name]["single_over_tensor"] = [s / t for s, t in zip(single, per_round["tensor/single"])]
    return out


def verdicts(ratios: dict[str, dict[str, float]]) -> list[dict]:
    """Every setting's targets against its median ratios (the bench JSON's ``targets`` entries)."""
    return [{"name": f"{name}: {WORDS[key]}", "key": f"{name}/{key}", "limit": limit, "value": r[key],
             "pass": bool(r[key] <= limit)}
            for name, r in ratios.items() for key, limit in LIMITS.items() if key in r]


def run_quantizers(case: Case = CASES["cpu-small"], warmup: int = 2, steps: int | None = None, rounds: int = 3,
                   log_every: int | None = None, settings: dict = SETTINGS, verbose: bool = True) -> dict:
    """Time the plain step and every setting's single run and pair in interleaved rounds; the figures."""
    say = print if verbose else (lambda *a, **k: None)
    case = replace(case, compiled_baseline=False, compiled_qat=False, qat_compile=False)
    load0 = loadavg()
    runners, device = build(case, settings, warmup, log_every, say)
    steps = steps if steps is not None else runners["tensor/pair" if "tensor" in settings else next(
        n for n in runners if n.endswith("/pair"))].log_every
    per_round, _ = time_rounds(runners, device, steps, rounds, "step", say)
    each = {name: {k: spread(v) for k, v in r.items()} for name, r in round_ratios(per_round, settings).items()}
    ratios = {name: {k: s["median"] for k, s in r.items()} for name, r in each.items()}
    ms = {n: sorted(v)[len(v) // 2] * 1e3 for n, v in per_round.items()}
    return {
        "case": asdict(case), "settings": {n: list(o) for n, o in settings.items()},
        "warmup": warmup, "steps_per_round": steps, "rounds": rounds, "interleave": "step",
        "ms_per_step": ms, "ratios": ratios,
        "ratio_spread": {n: {k: {m: v for m, v in s.items() if m != "median"} for k, s in r.items()}
                         for n, r in each.items()},
        "targets": verdicts(ratios), "loadavg_1min": {"before": load0, "after": loadavg()},
    }


def format_quantizers(res: dict) -> str:
    """The table ``qatrun-bench`` prints: ms/step and the ratios of each setting, with the two verdicts."""
    c, load = res["case"], res["loadavg_1min"]
    lines = [f"== quantizers: {c['model']} batch {c['batch']} on {c['device']}, eager; {res['rounds']} rounds of "
             f"{res['steps_per_round']} steps; load {load['before']} -> {load['after']}",
             f"  plain float step: {res['ms_per_step']['plain']:.1f} ms",
             f"  {'setting':<16} {'single ms':>9} {'pair ms':>8} {'single/plain':>12} {'pair/plain':>10} "
             f"{'pair/2 singles':>14} {'single/tensor':>13}"]
    passed = {t["key"]: t["pass"] for t in res["targets"]}
    for name, r in res["ratios"].items():
        mark = lambda key: "" if f"{name}/{key}" not in passed else (" ok" if passed[f"{name}/{key}"] else " OVER")
        tensor = f"{r['single_over_tensor']:.2f}x{mark('single_over_tensor')}" if "single_over_tensor" in r else "-"
        lines.append(f"  {name:<16} {res['ms_per_step'][name + '/single']:>9.1f} {res['ms_per_step'][name + '/pair']:>8.1f}"
                     f" {r['single_over_plain']:>11.2f}x {r['pair_over_plain']:>9.2f}x "
                     f"{r['pair_over_two_singles']:>10.2f}x{mark('pair_over_two_singles'):<4} {tensor:>13}")
    lines.append(f"  targets: pair / two single runs <= {LIMITS['pair_over_two_singles']:.2f}x, single run / tensor "
                 f"single run <= {LIMITS['single_over_tensor']:.1f}x (medians of per-round ratios)")
    return "\n".join(lines)


def run_quantizers_case(a, out: dict, write) -> str:
    """``--cases quantizers`` from the command line's options ``a``: its figures into ``out`` (``write()``
    saves them at once) and its printed table."""
    say = print if not a.quiet else (lambda *args, **kw: None)
    case = CASES["cpu-small"] if a.batch is None else replace(CASES["cpu-small"], batch=a.batch)
    say(f"[quantizers] {len(SETTINGS)} settings x (single run, pair) against the plain float step "
        "(qatrun.bench.quantizers)", flush=True)
    t0 = time.perf_counter()
    res = run_quantizers(case, warmup=a.warmup if a.warmup is not None else 2, steps=a.steps, rounds=a.rounds,
                         log_every=a.log_every, verbose=not a.quiet)
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    out["cases"]["quantizers"] = res
    write()
    say(format_quantizers(res), flush=True)
    return format_quantizers(res)
