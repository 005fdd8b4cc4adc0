"""The printed ``qatrun-bench`` table of one case and the run's metadata (docs/benchmarks.md)."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys

import torch

from qatrun.bench.cases import Case


def _mb(b) -> str:
    return "n/a" if b is None else f"{b / 2**20:.1f} MB"


def _header(res: dict) -> str:
    c = res["case"]
    return (f"== {c['name']}: " + Case(**c).describe()
            + f" | {_rounds(res)} x {res['steps_per_round']} steps ({res['interleave']}-interleaved)"
            + f" after {res['warmup']} warm-up,"
            + f" log_every={res['log_every']}, {res['estimator']} vs {res['twin']} twin"
            + f" ({res.get('twin_role', 'twin')}: init {res['twin_init']}, lr x {res['twin_lr_factor']:.4g})")


def _rounds(res: dict) -> str:
    asked = res.get("rounds_asked", res["rounds"])
    more = res["rounds"] - asked
    return f"{res['rounds']} rounds" + (f" ({asked} asked, {more} more for a wide spread)" if more else "")


def _over(res: dict, n: str, base: str) -> float:
    """Config ``n`` over ``base``: the median of per-round ratios (1 for the base itself)."""
    if n == base:
        return 1.0
    return res["ratios"].get(f"{n}_over_{base}") or res["ms_per_step"][n] / res["ms_per_step"][base]


def _table(res: dict) -> list[str]:
    ms = res["ms_per_step"]
    compiled = "plain_compiled" in ms
    hdr = f"  {'config':<16}{'ms/step':>10}{'min':>10}{'max':>10}{'vs plain':>10}"
    if compiled:
        hdr += f"{'vs compiled':>13}"
    lines = [hdr + f"{'peak mem':>12}{'resident':>12}{'transient':>12}"]
    for n, v in ms.items():
        rr = res["ms_per_step_rounds"][n]
        row = f"  {n:<16}{v:>10.2f}{min(rr):>10.2f}{max(rr):>10.2f}{_over(res, n, 'plain'):>9.2f}x"
        if compiled:
            row += f"{_over(res, n, 'plain_compiled'):>12.2f}x"
        m = res["memory"].get(n, {})
        row += f"{_mb(m.get('peak_bytes')):>12}{_mb(m.get('resident_bytes')):>12}{_mb(m.get('transient_bytes')):>12}"
        lines.append(row)
    return lines


def _compiled_ratios(r: dict) -> str:
    """Both steps compiled: pair_compiled / plain_compiled (and single_compiled / plain_compiled)."""
    if "pair_compiled_over_plain_compiled" not in r:
        return ""
    single = r.get("single_compiled_over_plain_compiled")  # absent when single_compiled was skipped
    return (f", compiled: c/a = {r['pair_compiled_over_plain_compiled']:.2f}x"
            + (f", b/a = {single:.2f}x" if single is not None else ""))


def _single(r: dict, key: str, what: str) -> str:
    return f"{what} = {r[key]:.2f}x, " if key in r else ""  # absent when single was skipped


def _spread_line(res: dict) -> list[str]:
    """The per-round range of the pair's ratios, and each ratio below its floor said to be noise."""
    sp = res.get("ratio_spread", {})
    what = {"pair_over_plain": "c/a", "pair_over_plain_compiled": "c/a_compiled",
            "pair_compiled_over_plain_compiled": "compiled c/a"}
    parts = [f"{w} {sp[k]['min']:.2f}-{sp[k]['max']:.2f}x ({100 * sp[k]['spread']:.0f}%)"
             for k, w in what.items() if k in sp and sp[k]["spread"] is not None]
    lines = [f"  per-round range (spread = range / median): {', '.join(parts)}"] if parts else []
    for k, b in res.get("below_floor", {}).items():
        lines.append(f"  NOISE: {what.get(k, k)} = {b['value']:.2f}x is below its physical floor {b['floor']:.2f}x (the "
                     "pair does two runs' work): the figure is noise from a shared machine, not a result")
    return lines


def _ratio_lines(res: dict) -> list[str]:
    r, rm = res["ratios"], res["ratios_from_min"]
    return [
        f"  ratios: {_single(r, 'single_over_plain', 'b/a')}c/a = {r['pair_over_plain']:.2f}x"
        + (f", c/b = {r['pair_over_single']:.2f}x" if "pair_over_single" in r else "")
        + (f", c/a_compiled = {r['pair_over_plain_compiled']:.2f}x" if "pair_over_plain_compiled" in r else "")
        + _compiled_ratios(r) + " (medians of per-round ratios)"
        + (f", pair peak / plain peak = {r['pair_peak_over_plain']:.2f}x" if "pair_peak_over_plain" in r else ""),
        f"  same from the fastest round of each config: {_single(rm, 'single_over_plain', 'b/a')}"
        f"c/a = {rm['pair_over_plain']:.2f}x"
        + (f", c/a_compiled = {rm['pair_over_plain_compiled']:.2f}x" if "pair_over_plain_compiled" in rm else "")
        + _compiled_ratios(rm),
        *_spread_line(res),
    ]


def _load_warning(res: dict) -> list[str]:
    load = [v for v in res["loadavg_1min"].values() if v is not None]
    cores = os.cpu_count() or 1
    if load and max(load) > 1.25 * cores:
        return [f"  WARNING: 1-min load average {max(load):.1f} on {cores} cores: other processes shared the "
                "machine, timings are noisy (interleaving spreads the noise over all configs)"]
    return []


def _section_lines(res: dict) -> list[str]:
    lines = []
    if res["pair_sections_ms"]:
        lines.append("  pair sections (ms/step, median; log amortized over log_every): "
                     + ", ".join(f"{k} {v:.2f}" for k, v in res["pair_sections_ms"].items()))
        lines.append(f"  change-point tracking: {res['changepoint_ms']:.2f} ms/step = "
                     f"{100 * res['changepoint_fraction']:.1f}% of the pair step")
    if res.get("pair_compiled_sections_ms"):
        lines.append("  pair_compiled sections (ms/step, median): "
                     + ", ".join(f"{k} {v:.2f}" for k, v in res["pair_compiled_sections_ms"].items()))
    ms = res["ms_per_step"]
    for pair, plain in (("pair", "plain"), ("pair_compiled", "plain_compiled")):
        if pair in ms and plain in ms:
            share = 1 - 2 / _over(res, pair, plain)  # from the per-round ratio, as the ratios are
            lines.append(f"  {pair} overhead over 2 x {plain}: {share * ms[pair]:+.2f} ms/step "
                         f"({share * 100:+.1f}% of the pair step)")
    return lines


def _note_lines(res: dict) -> list[str]:
    lines = []
    for n, note in res["notes"].items():
        if "compile_error" in note:
            what = "ran eager" if note.get("ran_eager") else "dropped"
            lines.append(f"  NOTE {n}: torch.compile failed, {what}: {note['compile_error']}")
    return lines


def _profile_lines(res: dict) -> list[str]:
    lines = []
    for key, what in (("profile", "pair"), ("profile_compiled", "pair_compiled")):
        if key not in res:
            continue
        p = res[key]
        lines += [f"  profile of {what} (one iteration + one log, torch.profiler, ms):",
                  "    sections: " + ", ".join(f"{k} {v:.2f}" for k, v in p["sections_ms"].items())]
        if p["quantizer_ms"]:
            lines.append("    quantizer: " + ", ".join(f"{k} {v:.2f}" for k, v in p["quantizer_ms"].items()))
        lines.append("    top ops (self CPU): "
                     + ", ".join(f"{k} {v:.1f}" for k, v in p["top_ops_self_cpu_ms"].items()))
    return lines


def _target_lines(res: dict) -> list[str]:
    lines = []
    for t in res["targets"]:
        verdict = "NOISE " if t.get("noise") else "n/a" if t["pass"] is None else ("PASS" if t["pass"] else "FAIL")
        share = t["key"] == "changepoint_fraction"
        val = "n/a" if t["value"] is None else (f"{100 * t['value']:.1f}%" if share else f"{t['value']:.2f}x")
        lim = f"{100 * t['limit']:.0f}%" if share else f"{t['limit']}x"
        lines.append(f"  {verdict:<5}{t['name']}: {val} vs target <= {lim}" + (" (below its floor: no verdict)"
                                                                              if t.get("noise") else ""))
    return lines


def format_case(res: dict) -> str:
    """The printed table of one case's result (``run_case``'s dict)."""
    return "\n".join([_header(res), *_table(res), *_ratio_lines(res), *_load_warning(res), *_section_lines(res),
                      *_note_lines(res), *_profile_lines(res), *_target_lines(res)])


def device_name(case_device: str) -> str:
    """The GPU's name for a CUDA case, else the CPU model."""
    if case_device == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def meta() -> dict:
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": device_name("cpu"),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "argv": sys.argv[1:],
    }
