"""The ``qatrun-bench`` command line: options, the run over the selected cases, the JSON file."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from qatrun.bench.cases import CASES, select_cases
from qatrun.bench.measure import run_case
from qatrun.bench.report import device_name, format_case, meta
from qatrun.bench.scaling import format_scaling, scaling_row
from qatrun.files import jsonable, write_atomic


def parse_args(argv=None):
    import qatrun.bench

    p = argparse.ArgumentParser(prog="qatrun-bench", description=qatrun.bench.__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="auto",
                   help=f"comma-separated from {', '.join(CASES)}; 'auto' (default): cpu-small, plus every gpu-* "
                        "case when CUDA is available; 'scaling': the cpu-scale-* cases and their table; "
                        "'all': every case; 'loader': the ImageNet input paths against the pair's consumption "
                        "(qatrun.bench.loader); 'quantizers': each quantizer's single run and pair on cpu-small "
                        "(qatrun.bench.quantizers)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed iterations per config per round (default: the logging interval, --log-every or the "
                        "config's trainer.log_every, so each pair round holds one log)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up iterations per config (default 2 CPU, 5 GPU)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; ms/step is the median (default 3)")
    p.add_argument("--log-every", type=int, default=None,
                   help="pair logging interval (default: the config's trainer.log_every)")
    p.add_argument("--batch", type=int, default=None, help="override every selected case's batch size")
    p.add_argument("--qat-compile", choices=("case", "on", "off"), default="case",
                   help="cfg.compile for the qatrun runs: the case's default (on for GPU cases), or force on/off")
    p.add_argument("--compiled", choices=("case", "on", "off"), default="case",
                   help="the compiled configs beside the others: plain_compiled, and on the CPU single_compiled "
                        "and pair_compiled (case: cpu-small and the GPU cases have them; off: a quick eager run)")
    p.add_argument("--skip", default="",
                   help="comma-separated configs not to build, e.g. 'single' (spares a GPU case a compile); "
                        "plain and pair are always timed")
    p.add_argument("--profile", dest="profile", action="store_true", default=None,
                   help="torch.profiler over one pair iteration (default: on for CPU cases)")
    p.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument("--interleave", choices=("auto", "step", "block"), default="auto",
                   help="alternate configs every iteration (step) or every --steps iterations (block); "
                        "auto: step on CPU, block on GPU")
    p.add_argument("--workers", type=int, default=None,
                   help="loader: DataLoader workers (default: the CPU count - 1, at most 16)")
    p.add_argument("--consumption-from", default=None,
                   help="loader: a bench JSON whose gpu-r50-bf16 pair gives the consumption (default: measure it "
                        "with CUDA, else not measured)")
    p.add_argument("--out", default="results/bench.json", help="JSON output (default results/bench.json)")
    p.add_argument("--quiet", action="store_true", help="only the final tables")
    a = p.parse_args(argv)
    for key in ("steps", "warmup", "rounds", "log_every", "batch"):
        v = getattr(a, key)
        if v is not None and v < (0 if key == "warmup" else 1):
            p.error(f"--{key.replace('_', '-')} must be {'>= 0' if key == 'warmup' else 'positive'}, got {v}")
    return a


def run(argv=None) -> dict:
    """Parse ``argv``, run the selected cases, print the tables, write and return the JSON dict."""
    a = parse_args(argv)
    names = [n.strip() for n in a.cases.split(",")]
    loader, quantizers = "loader" in names, "quantizers" in names
    rest = [n for n in names if n not in ("loader", "quantizers")]
    cases = select_cases(",".join(rest)) if rest else []
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the profiler's "no GPU" error line on CPU-only hosts
    out = {"meta": meta(), "cases": {}}
    path = Path(a.out)
    texts = []
    for case in cases:
        if a.batch is not None:
            case = replace(case, batch=a.batch)
        if a.qat_compile != "case":
            case = replace(case, qat_compile=a.qat_compile == "on")
        if a.compiled != "case":
            on = a.compiled == "on"
            case = replace(case, compiled_baseline=on, compiled_qat=on and not case.qat_compile)
        warmup = a.warmup if a.warmup is not None else (2 if case.device == "cpu" else 5)
        profile = a.profile if a.profile is not None else case.device == "cpu"
        if not a.quiet:
            print(f"[{case.name}] {case.describe()}", flush=True)
        t0 = time.perf_counter()
        res = run_case(case, warmup=warmup, steps=a.steps, rounds=a.rounds, log_every=a.log_every, profile=profile,
                       verbose=not a.quiet, interleave=a.interleave,
                       skip=[s.strip() for s in a.skip.split(",") if s.strip()])
        res["device_name"] = device_name(case.device)
        res["wall_s"] = round(time.perf_counter() - t0, 1)
        out["cases"][case.name] = jsonable(res)
        texts.append(format_case(res))
        if not a.quiet:
            print(texts[-1], flush=True)
        write(out, path)  # after every case: a later case that crashes or is killed leaves this one's figures
    if loader:
        texts.append(run_loader_case(a, out, path))
    if quantizers:
        from qatrun.bench.quantizers import run_quantizers_case

        texts.append(run_quantizers_case(a, out, lambda: write(out, path)))
    rows = [scaling_row(r) for r in out["cases"].values() if r["case"]["scaling"]]
    if rows:
        out["scaling"] = rows
        texts.append(format_scaling(rows))
        if not a.quiet:
            print(texts[-1], flush=True)
    write(out, path)
    if a.quiet:
        print("\n".join(texts))
    print(f"\nqatrun-bench: wrote {path}")
    return out


def run_loader_case(a, out: dict, path: Path) -> str:
    """``--cases loader``: its figures into ``out`` (written at once) and its printed table."""
    from qatrun.bench.loader import format_loader, run_loader

    say = print if not a.quiet else (lambda *args, **kw: None)
    say("[loader] the ImageNet input paths (qatrun.bench.loader)", flush=True)
    t0 = time.perf_counter()
    res = run_loader(batch=a.batch, workers=a.workers, steps=a.steps, rounds=a.rounds,
                     warmup=a.warmup if a.warmup is not None else 1, consumption_from=a.consumption_from, say=say)
    res["device_name"] = device_name(res["case"]["device"])
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    out["cases"]["loader"] = jsonable(res)
    write(out, path)
    say(format_loader(res), flush=True)
    return format_loader(res)


def write(out: dict, path: Path) -> None:
    """The JSON so far (the targets of the cases measured so far), replaced atomically."""
    out["targets"] = [dict(case=n, **t) for n, r in out["cases"].items() for t in r["targets"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: f.write((json.dumps(out, indent=2) + "\n").encode()))


def main(argv=None) -> None:
    """Console script ``qatrun-bench`` (returns None: the exit status stays 0)."""
    try:
        run(argv)
    except ValueError as exc:  # bad options met late (e.g. a config override): one line
        print(f"qatrun-bench: error: {exc}", file=sys.stderr)
        sys.exit(2)
