"""Issue 19, items 5, 6, 8 and 10, on the CPU: sharded evaluation, a NaN watch every rank agrees on, one
dynamo reset per job, and the step-0 check counted in integers."""

import torch

from qatrun import dist
from qatrun.metrics import FunctionAgreement
from qatrun.spec import build as build_spec
from qatrun.train import pair_from_spec, train
from tests.conftest import make_cfg


def test_each_rank_evaluates_its_shard_and_the_sums_give_the_whole_set(monkeypatch):
    from qatrun.data import build_data

    opts = dict(batch_size=8, eval_batch_size=4, num_classes=3, image_size=4, channels=1, length=16,
                test_length=16, signal=1.0)
    whole = list(build_data("synthetic", "cpu", 0, 1, 0, **opts).test_batches())
    shards = [list(build_data("synthetic", "cpu", 0, 2, r, **opts).test_batches()) for r in (0, 1)]
    assert sum(len(s) for s in shards) == len(whole) == 4  # every batch once, none twice
    assert torch.equal(torch.cat([y for s in shards for _, y in s]).sort().values,
                       torch.cat([y for _, y in whole]).sort().values)
    # the all-reduced sums of the two shards are the figures of the whole set
    g = torch.Generator().manual_seed(0)
    logits = [(torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)) for _ in whole]
    one = FunctionAgreement()
    for (a, b), (_, y) in zip(logits, whole):
        one.update(a, b, y, torch.rand(4, generator=g), torch.rand(4, generator=g))
    parts = [FunctionAgreement(), FunctionAgreement()]
    g = torch.Generator().manual_seed(0)
    logits = [(torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)) for _ in whole]
    for i, ((a, b), (_, y)) in enumerate(zip(logits, whole)):
        parts[i % 2].update(a, b, y, torch.rand(4, generator=g), torch.rand(4, generator=g))
    other = parts[1]
    parts[0].reduce(lambda t: t + (torch.stack([other._s[k].double() for k in sorted(other._s)]) if t.dtype ==
                                   torch.float64 else torch.tensor([other._n, other._n_elem, other._n_loss["a"],
                                                                    other._n_loss["b"]])))
    want, got = one.compute(), parts[0].compute()
    assert want.keys() == got.keys()
    for k in want:
        assert torch.allclose(want[k].double(), got[k].double(), rtol=1e-12, equal_nan=True), k


def test_the_nan_watch_is_decided_over_every_rank(monkeypatch):
    cfg = make_cfg()
    pair = pair_from_spec(build_spec(cfg), torch.device("cpu"), steps=10)
    assert pair.first_nonfinite() is None
    # another rank saw the twin's loss turn NaN at step 3: this rank must stop too
    monkeypatch.setattr(dist, "min_", lambda t: torch.minimum(t, torch.tensor([t[0], 3])))
    assert pair.first_nonfinite() == ("twin", 3)


def test_dynamo_is_reset_once_per_job_not_per_pair(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: calls.append(1))
    cfg = make_cfg("compile=true")
    spec = build_spec(cfg)
    for _ in range(2):  # the benchmark builds several compiled pairs: none may throw the others' caches away
        pair_from_spec(spec, torch.device("cpu"), steps=10)
    assert calls == []
    monkeypatch.setattr("qatrun.train.pair_from_spec", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("stop")))
    try:
        train(cfg, tmp_path)
    except RuntimeError:
        pass
    assert calls == [1]


def test_the_step0_check_counts_integers(monkeypatch, tmp_path):
    """On CUDA a / b can run as a * (1/b) in fp32 and miss 1.0 by an ulp; the check reads the mismatch count."""
    from qatrun.metrics.weights import WeightComparer
    from qatrun.train import TrainingError

    real = WeightComparer.compute

    def off_by_an_ulp(self, mismatches=0):
        out = real(self)
        out["pair/quantized_agreement"] = torch.tensor(1.0 - 2.0**-24)
        out["pair/quantized_mismatches"] = out["pair/quantized_mismatches"] + mismatches
        return out

    monkeypatch.setattr(WeightComparer, "compute", off_by_an_ulp)
    s = train(make_cfg("trainer.max_steps=2", "trainer.log_every=1"), tmp_path / "a")
    assert s["steps"] == 2
    monkeypatch.setattr(WeightComparer, "compute", lambda self: off_by_an_ulp(self, 1))
    try:
        train(make_cfg("trainer.max_steps=2"), tmp_path / "b")
        raise AssertionError("a mismatch at step 0 must stop the run")
    except TrainingError as exc:
        assert "step-0 invariant broken" in str(exc)
