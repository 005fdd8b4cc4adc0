"""A metric, a model and a dataset added as one new file each, in a package of their own (QATRUN_PLUGINS), and a
pair trained with them through the command line: the metric reaches summary.json, the printed lines, TensorBoard,
the report's table and HParams, and nothing in qatrun was edited."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.test_plugins import DATASET, MODEL, MODEL_YAML

METRIC = '''
import torch

from qatrun.metrics.base import METRICS, Figure, PairMetric


@METRICS.register("toy_gap")
class LevelGap(PairMetric):
    """Mean |level_est - level_twin| over the quantized weights, averaged over the steps so far."""

    figures = (Figure("pair/toy_gap", "log", True, column=("Toy level gap", "err", 135), order=145),)

    def __init__(self, view):
        super().__init__(view)
        self.total = torch.zeros((), dtype=torch.float64, device=view.device)
        self.steps = 0

    def update(self, step):
        gaps = [(a.grid.level_index(a.weight, a.m) - b.grid.level_index(b.weight, b.m)).abs().double().mean()
                for (_, a), (_, b) in zip(self.view.est_layers, self.view.twin_layers)]
        self.total += torch.stack(gaps).mean()
        self.steps += 1

    def compute(self, per_layer=False):
        return {"pair/toy_gap": self.total / max(self.steps, 1)}

    def state_dict(self):
        return {"total": self.total.clone(), "steps": self.steps}

    def load_state_dict(self, state):
        self.total.copy_(state["total"])
        self.steps = state["steps"]

    def resident(self):
        return [self.total]
'''

DATA_YAML = """defaults:
  - /schema/dataset/toy_blobs@_here_
  - _self_
name: toy_blobs
batch_size: 16
classes: 3
side: 8
steps: 4
"""


def bin_of(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@pytest.mark.slow
def test_a_metric_a_model_and_a_dataset_as_one_file_each_through_the_cli(tmp_path):
    pkg = tmp_path / "toyplug"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name, text in (("toy_model.py", MODEL), ("toy_data.py", DATASET), ("toy_gap.py", METRIC)):
        (pkg / name).write_text(textwrap.dedent(text))
    for group, name, text in (("model", "toy_mlp", MODEL_YAML), ("dataset", "toy_blobs", DATA_YAML)):
        (tmp_path / "conf" / group).mkdir(parents=True)
        (tmp_path / "conf" / group / f"{name}.yaml").write_text(text)
    env = {**os.environ, "QATRUN_PLUGINS": "toyplug", "PYTHONPATH": str(tmp_path)}
    common = [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "model=toy_mlp", "dataset=toy_blobs",
              "trainer.max_steps=12", "trainer.log_every=4", "trainer.eval_every=6", "trainer.progress=false",
              "device=cpu", "optimizer.lr=0.5"]
    run = tmp_path / "run"
    out = subprocess.run([bin_of("qatrun"), *common, f"hydra.run.dir={run}"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    s = json.loads((run / "summary.json").read_text())

    # summary.json: the figure, its curve (step 0 is logged outside the history) and its column
    gap = s["pair/toy_gap"]
    assert s["history"]["log_step"] == [4, 8, 12] and s["history"]["pair/toy_gap"][-1] == gap
    assert 0 < gap < 2**2, "the two runs (tanh vs its STE twin, lr 0.5) part on some weights, by less than the grid"
    assert s["columns"]["pair/toy_gap"] == ["Toy level gap", "err", 135]
    # the printed block, in the metric's declared place (order 145: after the logit MSE, 140)
    lines = out.stdout.splitlines()
    at = next(i for i, l in enumerate(lines) if l.strip().startswith("pair/toy_gap"))
    assert lines[at].split()[-1] == f"{gap:.6g}" and lines[at - 1].strip().startswith("pair/logit_mse")
    # TensorBoard: its scalar at every log step, and the HParams session lists it among the metrics
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ev = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    ev.Reload()
    assert [e.step for e in ev.Scalars("pair/toy_gap")] == [0, 4, 8, 12]
    assert ev.Scalars("pair/toy_gap")[-1].value == pytest.approx(gap, rel=1e-6)
    raw = b"".join(p.read_bytes() for p in (run / "tb").rglob("events.out.tfevents.*"))
    assert b"pair/toy_gap" in raw and b"hparams" in raw
    assert s["hparams"]["model"] == "toy_mlp" and s["hparams"]["dataset"] == "toy_blobs"

    # the report's table, read by a process that has not imported the plug-in: the column comes from the summary
    env_plain = {k: v for k, v in os.environ.items() if k != "QATRUN_PLUGINS"}
    rep = subprocess.run([bin_of("qatrun-report"), str(run), "--out", str(tmp_path / "rep"), "--no-pairs"],
                         cwd=tmp_path, env=env_plain, capture_output=True, text=True, timeout=600)
    assert rep.returncode == 0, rep.stderr[-3000:]
    head, _, row = (tmp_path / "rep" / "table.md").read_text().splitlines()[2:5]
    cells = [c.strip() for c in head.split("|")]
    assert cells.index("Toy level gap") == cells.index("Corr. test acc.") + 1  # its declared position
    assert [c.strip() for c in row.split("|")][cells.index("Toy level gap")] == f"{gap:#.3g}".rstrip(".")

    # the control: the same pair without the metric has none of it
    run2 = tmp_path / "run2"
    out = subprocess.run([bin_of("qatrun"), *common, "trainer.metrics=[weights,changepoints,function]",
                          f"hydra.run.dir={run2}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    s2 = json.loads((run2 / "summary.json").read_text())
    assert "pair/toy_gap" not in s2 and "pair/toy_gap" not in s2["columns"] and "toy_gap" not in out.stdout
    assert s2["pair/quantized_agreement"] == s["pair/quantized_agreement"]  # measuring changes nothing trained
