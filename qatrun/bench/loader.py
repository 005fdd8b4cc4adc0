"""``qatrun-bench --cases loader``: images/s of the ImageNet input paths beside what the pair eats.

A generated ImageFolder tree of JPEGs of ImageNet's typical sizes (500x375 and the like, smooth
content with grain, about 80 KB each at quality 90, as ImageNet's files are) is read through
``qatrun.data.imagenet.ImageNetData``, the class training reads, with ``--workers`` DataLoader
workers:

* ``pil`` (``dataset.decode=cpu``): PIL decodes, crops and flips in the workers;
* ``device`` (``dataset.decode=device``): the workers read the bytes, the run's device (CUDA when
  present, else this CPU, in the main process) decodes and augments;
* ``read``: the device path's share of the workers alone (bytes and JPEG header, no decode):
  what the CPU must keep up with when the GPU decodes.

Each is timed over ``--steps`` batches after warm-up batches, in interleaved rounds (the median
round is reported); images/s in total and per worker. The consumption is the images/s of the
ResNet-50 bf16 channels_last batch-256 pair step: taken from a bench JSON
(``--consumption-from``, the ``gpu-r50-bf16`` case) or measured here (eager) when CUDA is present;
on a CPU it is not measured and the ratios use ``QUOTED`` (an earlier H200 probe), so labelled.
Verdict: the device path delivers at least ``TARGET`` times the consumption.
"""

from __future__ import annotations

import io
import math
import os
import statistics
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch

QUOTED = 3300.0  # images/s: ResNet-50 bf16 channels_last pair, 77 ms at batch 256, one H200 (plain PyTorch probe)
TARGET = 1.5  # the loader must deliver this many times what the pair consumes
SIZES = ((375, 500), (500, 375), (333, 500), (375, 500), (400, 500), (375, 500))  # (height, width)
DISTINCT = 48  # distinct encodings; the tree repeats them under other names


def _jpeg(rng, height: int, width: int) -> bytes:
    """Smooth random colour fields plus grain: compresses like a photograph (~80 KB at 500x375)."""
    from PIL import Image

    small = rng.integers(0, 256, (max(height // 16, 2), max(width // 16, 2), 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC), dtype=np.int16)
    grain = rng.normal(0, 12, (height, width, 3)).astype(np.int16)
    buf = io.BytesIO()
    Image.fromarray((field + grain).clip(0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_tree(root: str, images: int, classes: int = 4, seed: int = 0) -> dict:
    """``root/{train,val}/<class>/*.JPEG``: ``images`` train files, a few val files; returns its facts."""
    rng = np.random.default_rng(seed)
    blobs = [_jpeg(rng, *SIZES[i % len(SIZES)]) for i in range(DISTINCT)]
    for split, n in (("train", images), ("val", classes)):
        for c in range(classes):
            os.makedirs(os.path.join(root, split, f"c{c}"), exist_ok=True)
        for i in range(n):
            with open(os.path.join(root, split, f"c{i % classes}", f"{i:06d}.JPEG"), "wb") as f:
                f.write(blobs[i % DISTINCT])
    return {"images": images, "classes": classes, "mean_kb": round(sum(map(len, blobs)) / len(blobs) / 1024, 1),
            "sizes": sorted({f"{w}x{h}" for h, w in SIZES})}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_data(data, device, warmup: int, steps: int) -> float:
    """images/s of ``data.batch`` over ``steps`` batches after ``warmup`` (from step 0: a fresh epoch)."""
    for s in range(warmup):
        data.batch(s)
    _sync(device)
    t0 = time.perf_counter()
    n = 0
    for s in range(warmup, warmup + steps):
        n += len(data.batch(s)[1])
    _sync(device)
    return n / (time.perf_counter() - t0)


def _time_read(loader, warmup: int, steps: int) -> float:
    """images/s of the device path's workers alone: encoded batches, no decode."""
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    n = sum(len(next(it)[2]) for _ in range(steps))
    return n / (time.perf_counter() - t0)


def _loaders(root: str, device, batch: int, workers: int) -> dict:
    from torch.utils.data import DataLoader

    from qatrun.data.encoded import collate_encoded
    from qatrun.data.imagenet import ImageNetData

    kw = dict(root=root, device=device, batch_size=batch, eval_batch_size=batch, workers=workers, image_size=224,
              resize=256, train_subset=None, test_subset=None, seed=0)
    pil, dev = ImageNetData(decode="cpu", **kw), ImageNetData(decode="device", **kw)
    read = DataLoader(dev.train_loader.dataset, batch_size=batch, shuffle=False, num_workers=workers,
                      collate_fn=collate_encoded, persistent_workers=workers > 0)
    return {"pil": pil, "device": dev, "read": read}


def measure_paths(root: str, device, batch: int, workers: int, warmup: int, steps: int, rounds: int, say) -> dict:
    """images/s per path (median round, every round kept), in total and per worker, interleaved."""
    device = torch.device(device)
    runs = _loaders(root, device, batch, workers)
    per_round = {name: [] for name in runs}
    for r in range(rounds):
        for name, obj in runs.items():
            rate = _time_read(obj, warmup, steps) if name == "read" else _time_data(obj, device, warmup, steps)
            per_round[name].append(rate)
        say("  round {}/{}: {}".format(r + 1, rounds, ", ".join(f"{n} {v[-1]:.0f} img/s" for n, v in per_round.items())),
            flush=True)
    cores = max(workers, 1)
    return {name: {"images_per_s": statistics.median(v), "per_worker": statistics.median(v) / cores,
                   "rounds": [round(x, 1) for x in v]} for name, v in per_round.items()}


def consumption(device: torch.device, from_json: str | None, say) -> dict:
    """images/s of the ResNet-50 bf16 pair step: from a bench JSON, measured (CUDA), or not measured."""
    if from_json:
        import json

        with open(from_json) as f:
            case = json.load(f)["cases"]["gpu-r50-bf16"]
        ms, batch = case["ms_per_step"]["pair"], case["case"]["batch"]
        how = "compile=true" if case["case"].get("qat_compile") else "eager"
        return {"images_per_s": 1000 * batch / ms, "source": f"{from_json} (gpu-r50-bf16 pair, {how})"}
    if device.type != "cuda":
        return {"images_per_s": None, "source": "not measured (no GPU)"}
    from qatrun.bench.cases import CASES
    from qatrun.bench.measure import run_case

    say("  measuring the ResNet-50 bf16 pair step (eager) ...", flush=True)
    case = replace(CASES["gpu-r50-bf16"], qat_compile=False, compiled_baseline=False)
    res = run_case(case, warmup=3, steps=5, rounds=1, verbose=False, skip=["single"])
    return {"images_per_s": 1000 * case.batch / res["ms_per_step"]["pair"],
            "source": "measured here (gpu-r50-bf16 pair, eager, 5 steps)"}


def figures(paths: dict, eat: dict) -> dict:
    """Ratios against the consumption (or ``QUOTED``) and the CPU cores one GPU needs on each path."""
    rate = eat["images_per_s"] or QUOTED
    ratios = {name: p["images_per_s"] / rate for name, p in paths.items()}
    cores = {"pil": math.ceil(TARGET * rate / paths["pil"]["per_worker"]),
             "device": math.ceil(TARGET * rate / paths["read"]["per_worker"]) + 1}  # + the main process
    value = ratios["device"] if eat["images_per_s"] else None
    target = {"name": f"device-path loader / ResNet-50 bf16 pair consumption (>= {TARGET}x)",
              "key": "loader_over_consumption", "limit": TARGET, "value": value,
              "pass": None if value is None else bool(value >= TARGET)}
    return {"against": rate, "ratios": ratios, "cores_per_gpu": cores, "targets": [target]}


def run_loader(device: str | None = None, batch: int | None = None, workers: int | None = None, steps: int | None = None,
               rounds: int = 3, warmup: int = 1, consumption_from: str | None = None, say=print) -> dict:
    """Generate the tree, time the three paths, take the consumption: the JSON-able result."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    batch = batch or (256 if dev.type == "cuda" else 32)
    steps = steps or (8 if dev.type == "cuda" else 4)
    workers = workers if workers is not None else max(1, min((os.cpu_count() or 2) - 1, 16))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core for the main process: the CPU decode's figure is per core
    try:
        with tempfile.TemporaryDirectory(prefix="qatrun-loader-") as root:
            tree = make_tree(root, batch * (warmup + steps))
            say(f"  tree: {tree['images']} JPEGs ({', '.join(tree['sizes'])}, mean {tree['mean_kb']} KB)", flush=True)
            paths = measure_paths(root, dev, batch, workers, warmup, steps, rounds, say)
    finally:
        torch.set_num_threads(threads)
    eat = consumption(dev, consumption_from, say)
    case = {"name": "loader", "device": dev.type, "batch": batch, "scaling": False}
    return {"case": case, "tree": tree, "workers": workers, "warmup": warmup, "steps_per_round": steps,
            "rounds": rounds, "paths": paths, "consumption": eat, **figures(paths, eat)}


def format_loader(res: dict) -> str:
    c, eat, w = res["case"], res["consumption"], res["workers"]
    where = "the GPU" if c["device"] == "cuda" else "this CPU (main process)"
    rate = f"{eat['images_per_s']:.0f} img/s, {eat['source']}" if eat["images_per_s"] else eat["source"]
    against = "the consumption" if eat["images_per_s"] else f"{QUOTED:.0f} img/s (quoted: an earlier H200 probe)"
    what = {"pil": "pil: PIL decode + crop in the workers", "device": f"device: decode + crop on {where}",
            "read": "read: the device path's workers (bytes only)"}
    lines = [f"== loader: batch {c['batch']}, {w} worker(s), {res['tree']['images']} JPEGs "
             f"(mean {res['tree']['mean_kb']} KB) | {res['rounds']} rounds x {res['steps_per_round']} batches after "
             f"{res['warmup']} warm-up",
             f"  {'path':<48}{'img/s':>9}{'per worker':>12}{'vs ' + ('pair' if eat['images_per_s'] else 'quoted'):>10}"]
    for name, p in res["paths"].items():
        lines.append(f"  {what[name]:<48}{p['images_per_s']:>9.0f}{p['per_worker']:>12.0f}{res['ratios'][name]:>9.2f}x")
    lines.append(f"  pair consumption (ResNet-50 bf16 pair step): {rate}")
    cores = res["cores_per_gpu"]
    lines.append(f"  CPU cores per GPU to deliver {TARGET}x {against}: pil {cores['pil']}, "
                 f"device {cores['device']} (workers reading bytes, plus the main process)")
    for t in res["targets"]:
        verdict = "not checked (no consumption measured)" if t["pass"] is None else "PASS" if t["pass"] else "FAIL"
        value = "" if t["value"] is None else f": {t['value']:.2f}x"
        lines.append(f"  {verdict} {t['name']}{value}")
    return "\n".join(lines)


__all__ = ["QUOTED", "TARGET", "consumption", "figures", "format_loader", "make_tree", "measure_paths", "run_loader"]
