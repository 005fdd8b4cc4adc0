"""The rows of ``scripts/gpu_check.sh``'s table: one check's figures and its verdict, from its files.

    python scripts/gpu_rows.py TABLE KIND NAME RC SECONDS LOG [ARGS...]

appends ``| NAME | figures | VERDICT | SECONDS s |`` to the Markdown file TABLE and prints the same
row as one line. RC is the check's exit status (124 or 137: killed by its ``timeout``; 125: not
started, the time budget was spent). Verdicts: PASS and FAIL against each check's limit, ``measured``
where a check has no limit, TIMEOUT, SKIPPED, ERROR (the check failed before it produced its
figures; the row quotes the last line of its LOG). KIND
and its ARGS:

* ``tests``: pytest's last line; PASS when RC is 0.
* ``agreement GPU_SUMMARY CPU_SUMMARY TOL``: the same config on both devices; PASS when the
  quantized agreements differ by at most TOL.
* ``identical SUMMARY_A SUMMARY_B``: PASS when the two ``summary.json`` files are byte for byte equal;
  else the keys whose values differ.
* ``distributed SUMMARY BACKEND``: PASS when the run's ``distributed`` is BACKEND with world size 1.
* ``bench BENCH_JSON CASE``: ms/step, images/s and peak memory of the plain step and the pair, and
  every target of the case: PASS when all measured targets hold, FAIL when one does not.
* ``loader BENCH_JSON``: the ``loader`` case of ``qatrun-bench --cases loader``: images/s of the PIL
  path and of the device-decode path (in total and per worker), the pair's consumption: PASS when
  the device path delivers at least the target (1.5x) of what the ResNet-50 bf16 pair consumes,
  ``measured`` where no consumption was measured (a CPU).

``python scripts/gpu_rows.py --verdicts TABLE`` exits 1 when a row of TABLE is not PASS or measured.
Standard library only: the GPU machine has no more than its own Python.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

GOOD = ("PASS", "measured")
HEADER = "| check | figures | verdict | time |\n"


def last_line(log: str) -> str:
    """The log's last non-empty line, shortened: why a check failed, in the table itself."""
    try:
        lines = [ln.strip() for ln in Path(log).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return f"no log {log}"
    line = lines[-1] if lines else "empty log"
    return (line[:197] + "...") if len(line) > 200 else line


def load(path: str) -> dict:
    return json.loads(Path(path).read_text())


def tests(log: str, rc: int) -> tuple[str, str]:
    return last_line(log), "PASS" if rc == 0 else "FAIL"


def agreement(gpu: str, cpu: str, tol: str) -> tuple[str, str]:
    a, b = load(gpu), load(cpu)
    key = "pair/quantized_agreement"
    delta = abs(a[key] - b[key])
    more = ", ".join(f"{k.split('/')[-1]} {a[k]:.4f} vs {b[k]:.4f}" for k in ("pair/mover_agreement", "est/test_acc")
                     if isinstance(a.get(k), float) and isinstance(b.get(k), float))
    text = (f"quantized agreement {a[key]:.5f} (this device) vs {b[key]:.5f} (CPU): they differ by {delta:.5f} "
            f"(limit {float(tol)}); {more}; {a['steps']} steps")
    return text, "PASS" if delta <= float(tol) else "FAIL"


def identical(first: str, second: str) -> tuple[str, str]:
    if Path(first).read_bytes() == Path(second).read_bytes():
        return "the two summary.json files are byte for byte identical", "PASS"
    a, b = load(first), load(second)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return f"{len(keys)} keys differ: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}", "FAIL"


def distributed(summary: str, backend: str) -> tuple[str, str]:
    s = load(summary)
    got = s.get("distributed")
    text = f"distributed {got}, {s['steps']} paired step(s), quantized agreement {s['pair/quantized_agreement']:.5f}"
    return text, "PASS" if got == {"backend": backend, "world_size": 1} else "FAIL"


def bench(path: str, case: str) -> tuple[str, str]:
    c = load(path)["cases"][case]
    batch, ms, mem = c["case"]["batch"], c["ms_per_step"], c.get("memory", {})
    parts = []
    for name in ("plain", "plain_compiled", "pair"):
        if name in ms:
            peak = (mem.get(name) or {}).get("peak_bytes")
            gib = f", peak {peak / 2**30:.2f} GiB" if peak else ""
            parts.append(f"{name} {ms[name]:.2f} ms ({1000 * batch / ms[name]:.0f} img/s{gib})")
    targets = [t for t in c.get("targets", []) if t["pass"] is not None]
    parts += [f"{t['key']} {t['value']:.3f} <= {t['limit']}: {'ok' if t['pass'] else 'MISSED'}" for t in targets]
    notes = c.get("notes") or {}
    parts += [f"{n}: torch.compile failed{', ran eager' if v.get('ran_eager') else ', dropped'} ({v['compile_error']})"
              for n, v in notes.items() if v.get("compile_error")]
    if notes:
        parts.append("build + warm-up " + ", ".join(f"{n} {v.get('build_and_warmup_s', 0):.0f} s"
                                                      for n, v in notes.items()))
    verdict = "measured" if not targets else "PASS" if all(t["pass"] for t in targets) else "FAIL"
    return "; ".join(parts), verdict


def loader(path: str) -> tuple[str, str]:
    c = load(path)["cases"]["loader"]
    paths, eat = c["paths"], c["consumption"]
    parts = [f"{name} {p['images_per_s']:.0f} img/s ({p['per_worker']:.0f} per worker)" for name, p in paths.items()]
    parts.append(f"{c['workers']} workers, batch {c['case']['batch']}")
    rate = eat.get("images_per_s")
    parts.append(f"pair consumes {rate:.0f} img/s ({eat['source']})" if rate else f"pair: {eat['source']}")
    parts.append(f"cores per GPU: pil {c['cores_per_gpu']['pil']}, device {c['cores_per_gpu']['device']}")
    targets = [t for t in c.get("targets", []) if t["pass"] is not None]
    parts += [f"device path / consumption {t['value']:.2f}x >= {t['limit']}: {'ok' if t['pass'] else 'MISSED'}"
              for t in targets]
    verdict = "measured" if not targets else "PASS" if all(t["pass"] for t in targets) else "FAIL"
    return "; ".join(parts), verdict


KINDS = {"agreement": agreement, "identical": identical, "distributed": distributed, "bench": bench, "loader": loader}


def row(kind: str, rc: int, log: str, args: list[str]) -> tuple[str, str]:
    if rc == 125:
        return last_line(log), "SKIPPED"
    if rc in (124, 137):
        return f"killed by its time limit; {last_line(log)}", "TIMEOUT"
    if kind == "tests":
        return tests(log, rc)
    try:
        text, verdict = KINDS[kind](*args)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        return f"exit {rc}, no figures ({type(exc).__name__}: {exc}); {last_line(log)}", "ERROR"
    if rc != 0:
        return f"exit {rc}; {text}", "ERROR"
    return text, verdict


def verdicts(table: str) -> int:
    text = Path(table).read_text()
    if HEADER not in text:
        print("no row ran")
        return 1
    rows = [ln.split("|") for ln in text[text.index(HEADER) + len(HEADER):].splitlines() if ln.startswith("| ")]
    bad = [r[1].strip() for r in rows if r[3].strip() not in GOOD]
    print(f"{len(rows)} rows, {len(bad)} not passed{': ' + ', '.join(bad) if bad else ''}")
    return 1 if bad else 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--verdicts"]:
        return verdicts(argv[1])
    table, kind, name, rc, seconds, log, *args = argv
    if kind != "tests" and kind not in KINDS:
        sys.exit(f"gpu_rows: unknown kind {kind!r}; valid: tests, {', '.join(KINDS)}")
    text, verdict = row(kind, int(rc), log, args)
    text = text.replace("|", "/")
    path = Path(table)
    head = "" if path.exists() and HEADER in path.read_text() else HEADER + "|---|---|---|---|\n"
    with path.open("a") as f:
        f.write(f"{head}| {name} | {text} | {verdict} | {seconds} s |\n")
    print(f"{name:<28} {verdict:<9} {text} ({seconds} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
