"""``scripts/gpu_check.sh --dry-run``: the GPU check's own install, data path and rows, on the CPU;
``scripts/gpu_rows.py``: each row's verdict from its files.

A copy of the checkout (what the GPU machine gets), the carried folder ``.gpu/mnist`` with gzipped idx
files (a small fake MNIST here; the wheels are not needed where Hydra is installed), then the script:
a non-editable install into its own site folder, the config composed from there with the working
directory outside the checkout, the MNIST files unpacked, every row tiny on the CPU (the cuda tests
collected from outside the checkout and skipped, 2-step pairs with downloads off, torchrun with gloo,
the bench, the loader bench), one table.
"""

import gzip
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MNIST = {"train-images-idx3-ubyte": (2051, (1200, 28, 28)), "train-labels-idx1-ubyte": (2049, (1200,)),
         "t10k-images-idx3-ubyte": (2051, (200, 28, 28)), "t10k-labels-idx1-ubyte": (2049, (200,))}


def _copy_checkout(dest: Path) -> None:
    """The tracked and untracked-not-ignored files the install needs (what travels to the GPU machine)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "--", "pyproject.toml", "README.md",
                            "qatrun", "configs", "scripts", "tests"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split("\n")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(src.read_bytes())


def _fake_mnist(folder: Path) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for name, (magic, shape) in MNIST.items():
        data = rng.integers(0, 256 if magic == 2051 else 10, size=shape, dtype=np.uint8)
        header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in shape)
        (folder / f"{name}.gz").write_bytes(gzip.compress(header + data.tobytes()))


def _run(repo: Path, tmp: Path, tag: str, **more):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp), "PY": sys.executable, "OUT": str(tmp / f"out_{tag}"),
           "QATRUN_SITE": str(tmp / f"site_{tag}"), "QATRUN_DATA": str(tmp / f"data_{tag}"), "GPU_WORK": str(tmp / f"work_{tag}"),
           "KINETO_LOG_LEVEL": "5", **more}
    return subprocess.run(["bash", str(repo / "scripts" / "gpu_check.sh"), "--dry-run"], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=600)


def _table(path: Path) -> dict:
    """check -> (figures, verdict) of a gpu_check table."""
    rows = [ln.split(" | ") for ln in path.read_text().splitlines() if ln.startswith("| ") and "---" not in ln]
    return {r[0][2:]: (r[1], r[2]) for r in rows[1:]}


@pytest.mark.slow
def test_gpu_check_dry_run_installs_and_trains_from_carried_files(tmp_path):
    repo = tmp_path / "checkout"
    _copy_checkout(repo)
    assert not (repo / "qatrun" / "configs").exists()  # configs reach qatrun.configs only through the install
    _fake_mnist(repo / ".gpu" / "mnist")

    res = _run(repo, tmp_path, "a")
    assert res.returncode in (0, 1), res.stdout[-2000:] + res.stderr[-3000:]
    site = tmp_path / "site_a"
    assert (site / "qatrun" / "configs" / "config.yaml").is_file()  # the non-editable install ships the YAML
    assert f"into {site}" in res.stdout and "config composes" in res.stdout
    raw = tmp_path / "data_a" / "mnist" / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(MNIST)  # unpacked where qatrun reads MNIST
    rows = _table(tmp_path / "out_a" / "table.md")
    assert list(rows) == ["cuda tests", "mnist pair cpu vs cpu", "mnist pair, lsq + 4-bit inputs cpu vs cpu",
                          "deterministic=true twice", "torchrun, 1 process", "bench cpu-small (dry run)",
                          "loader (dry run)"]
    assert rows["cuda tests"][1] == "PASS" and " skipped" in rows["cuda tests"][0]  # collected from outside, none ran
    for name in ("mnist pair cpu vs cpu", "mnist pair, lsq + 4-bit inputs cpu vs cpu"):
        assert rows[name][1] == "PASS" and "differ by 0.00000" in rows[name][0]
    for run in ("mnist_quant", "mnist_quant_cpu"):  # both sides of the row trained the quantizers
        quant = json.loads((tmp_path / "work_a" / run / "summary.json").read_text())
        assert quant["config"]["quantizer"]["name"] == "lsq" and quant["quantized_inputs"] == ["conv2"]
    assert rows["deterministic=true twice"] == ("the two summary.json files are byte for byte identical", "PASS")
    assert rows["torchrun, 1 process"][1] == "PASS" and "'backend': 'gloo'" in rows["torchrun, 1 process"][0]
    assert "img/s" in rows["bench cpu-small (dry run)"][0]  # its verdict is the CPU's at batch 8: either
    figures, verdict = rows["loader (dry run)"]  # no GPU: nothing consumed to compare with
    assert verdict == "measured" and "pair: not measured (no GPU)" in figures
    assert all(f"{p} " in figures for p in ("pil", "device", "read")) and "1 workers, batch 8" in figures
    summary = json.loads((tmp_path / "work_a" / "mnist" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["config"]["device"] == "cpu"
    assert json.loads((tmp_path / "work_a" / "torchrun" / "summary.json").read_text())["steps"] == 1
    assert "# GPU check: CPU (dry run)" in (tmp_path / "out_a" / "table.md").read_text()
    # What comes back from the device is $OUT: the table and one archive (the tool returns 8 files at most).
    assert sorted(p.name for p in (tmp_path / "out_a").iterdir()) == ["gpu_check_files.tar.gz", "table.md"]
    with tarfile.open(tmp_path / "out_a" / "gpu_check_files.tar.gz") as tar:
        names = tar.getnames()
    assert {"./mnist/summary.json", "./mnist_cpu/summary.json", "./torchrun.log", "./bench_dry.json",
            "./bench_loader.json"} <= set(names)
    assert not [n for n in names if n.endswith("checkpoint.pt")]
    assert res.returncode == (0 if rows["bench cpu-small (dry run)"][1] == "PASS" else 1)

    # A second try runs only the rows it names.
    res = _run(repo, tmp_path, "c", ROWS="torchrun")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert list(_table(tmp_path / "out_c" / "table.md")) == ["torchrun, 1 process"]

    # Without the carried MNIST the script stops before any run (downloads stay off): it never fetches.
    for f in (repo / ".gpu" / "mnist").iterdir():
        f.unlink()
    res = _run(repo, tmp_path, "b")
    assert res.returncode == 2 and "MNIST file train-images-idx3-ubyte is neither in" in res.stderr
    assert not (tmp_path / "work_b" / "mnist").exists()
    with tarfile.open(tmp_path / "out_b" / "gpu_check_files.tar.gz") as tar:  # the setup's logs still come back
        assert "./install.log" in tar.getnames()


# ----------------------------------------------------------------------------------------------
# gpu_rows.py: the verdicts, from files made here
# ----------------------------------------------------------------------------------------------

def _rows_module():
    spec = importlib.util.spec_from_file_location("gpu_rows", ROOT / "scripts" / "gpu_rows.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _json(path: Path, obj) -> str:
    path.write_text(json.dumps(obj))
    return str(path)


def test_agreement_row_holds_the_limit_and_names_both_devices(tmp_path):
    g = _rows_module()
    cpu = _json(tmp_path / "cpu.json", {"pair/quantized_agreement": 0.9900, "est/test_acc": 0.91, "steps": 100})
    near = _json(tmp_path / "near.json", {"pair/quantized_agreement": 0.9915, "est/test_acc": 0.92, "steps": 100})
    far = _json(tmp_path / "far.json", {"pair/quantized_agreement": 0.9925, "est/test_acc": 0.92, "steps": 100})
    text, verdict = g.agreement(near, cpu, "0.002")
    assert verdict == "PASS" and "0.99150 (this device) vs 0.99000 (CPU)" in text and "differ by 0.00150" in text
    assert "test_acc 0.9200 vs 0.9100" in text
    assert g.agreement(far, cpu, "0.002")[1] == "FAIL"
    assert g.agreement(cpu, far, "0.002")[1] == "FAIL"  # either direction


def test_identical_row_compares_bytes_and_names_what_differs(tmp_path):
    g = _rows_module()
    a = _json(tmp_path / "a.json", {"x": 1.0, "y": [1, 2], "z": "s"})
    b = _json(tmp_path / "b.json", {"x": 1.0, "y": [1, 2], "z": "s"})
    c = _json(tmp_path / "c.json", {"x": 1.0000001, "y": [1, 2], "z": "s"})
    assert g.identical(a, b)[1] == "PASS"
    assert g.identical(a, c) == ("1 keys differ: x", "FAIL")


def test_distributed_row_wants_the_backend_and_a_group_of_one(tmp_path):
    g = _rows_module()
    base = {"steps": 1, "pair/quantized_agreement": 1.0}
    nccl = _json(tmp_path / "n.json", {**base, "distributed": {"backend": "nccl", "world_size": 1}})
    single = _json(tmp_path / "s.json", {**base, "distributed": None})
    assert g.distributed(nccl, "nccl")[1] == "PASS"
    assert g.distributed(nccl, "gloo")[1] == "FAIL" and g.distributed(single, "nccl")[1] == "FAIL"


def test_bench_row_reports_throughput_memory_and_every_measured_target(tmp_path):
    g = _rows_module()

    def case(targets, notes=None):
        return {"cases": {"gpu-r50-bf16": {
            "case": {"batch": 256}, "ms_per_step": {"plain": 64.0, "plain_compiled": 50.0, "pair": 128.0},
            "memory": {"plain": {"peak_bytes": 2 * 2**30}, "pair": {"peak_bytes": 3 * 2**30}},
            "targets": targets, "notes": notes or {"pair": {"build_and_warmup_s": 91.4}}}}}

    ok = {"key": "pair_over_plain_compiled", "value": 2.56, "limit": 2.1, "pass": False}
    unmeasured = {"key": "changepoint_fraction", "value": None, "limit": 0.1, "pass": None}
    text, verdict = g.bench(_json(tmp_path / "a.json", case([ok, unmeasured])), "gpu-r50-bf16")
    assert verdict == "FAIL" and "pair_over_plain_compiled 2.560 <= 2.1: MISSED" in text
    assert "pair 128.00 ms (2000 img/s, peak 3.00 GiB)" in text and "plain 64.00 ms (4000 img/s, peak 2.00 GiB)" in text
    assert "changepoint_fraction" not in text and "build + warm-up pair 91 s" in text
    passed = {**ok, "value": 2.0, "pass": True}
    notes = {"pair": {"compile_error": "BackendCompilerFailed: x", "ran_eager": True, "build_and_warmup_s": 3}}
    text, verdict = g.bench(_json(tmp_path / "b.json", case([passed, unmeasured], notes)), "gpu-r50-bf16")
    assert verdict == "PASS" and "pair: torch.compile failed, ran eager (BackendCompilerFailed: x)" in text
    assert g.bench(_json(tmp_path / "c.json", case([unmeasured])), "gpu-r50-bf16")[1] == "measured"


def test_loader_row_holds_the_device_path_to_one_and_a_half_times_the_consumption(tmp_path):
    g = _rows_module()

    def case(device_rate, consumed):
        paths = {"pil": {"images_per_s": 1800.0, "per_worker": 120.0},
                 "device": {"images_per_s": device_rate, "per_worker": device_rate / 15},
                 "read": {"images_per_s": 30000.0, "per_worker": 2000.0}}
        value = None if consumed is None else device_rate / consumed
        target = {"key": "loader_over_consumption", "limit": 1.5, "value": value,
                  "pass": None if value is None else value >= 1.5}
        source = "bench_r50.json (gpu-r50-bf16 pair, compile=true)" if consumed else "not measured (no GPU)"
        return {"cases": {"loader": {"case": {"batch": 256}, "workers": 15, "paths": paths, "targets": [target],
                                     "consumption": {"images_per_s": consumed, "source": source},
                                     "cores_per_gpu": {"pil": 42, "device": 4}}}}

    text, verdict = g.loader(_json(tmp_path / "a.json", case(6000.0, 3300.0)))
    assert verdict == "PASS" and "device path / consumption 1.82x >= 1.5: ok" in text
    assert "pil 1800 img/s (120 per worker)" in text and "pair consumes 3300 img/s (bench_r50.json" in text
    assert "cores per GPU: pil 42, device 4" in text and "15 workers, batch 256" in text
    text, verdict = g.loader(_json(tmp_path / "b.json", case(4000.0, 3300.0)))
    assert verdict == "FAIL" and "1.21x >= 1.5: MISSED" in text
    assert g.loader(_json(tmp_path / "c.json", case(4000.0, None)))[1] == "measured"


def test_rows_in_the_table_and_the_exit_verdict(tmp_path, capsys):
    g = _rows_module()
    table, log = tmp_path / "table.md", tmp_path / "run.log"
    table.write_text("# GPU check: test\n\n")
    log.write_text("step 3\nqatrun: error: CUDA error: an illegal memory access | was encountered\n\n")
    good = _json(tmp_path / "s.json", {"steps": 1, "pair/quantized_agreement": 1.0,
                                       "distributed": {"backend": "nccl", "world_size": 1}})
    assert g.main([str(table), "distributed", "torchrun", "0", "12", str(log), good, "nccl"]) == 0
    assert g.main(["--verdicts", str(table)]) == 0
    g.main([str(table), "distributed", "late", "125", "0", str(log), good, "nccl"])
    g.main([str(table), "distributed", "slow", "124", "90", str(log), good, "nccl"])
    g.main([str(table), "distributed", "broken", "1", "5", str(log), str(tmp_path / "none.json"), "nccl"])
    g.main([str(table), "distributed", "exit2", "2", "5", str(log), good, "nccl"])
    rows = _table(table)
    assert table.read_text().count("| check | figures | verdict | time |") == 1
    assert [v for _, v in rows.values()] == ["PASS", "SKIPPED", "TIMEOUT", "ERROR", "ERROR"]
    assert "illegal memory access / was encountered" in rows["broken"][0]  # the log's last line, no stray column
    assert rows["exit2"][0].startswith("exit 2; distributed")
    assert g.main(["--verdicts", str(table)]) == 1
    assert "5 rows, 4 not passed: late, slow, broken, exit2" in capsys.readouterr().out
