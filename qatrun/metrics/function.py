"""The ``function`` pair metric: agreement of two runs' test-set logits and the correlation of their curves.

Also each run's own test scores (``TestScores``, which every pair evaluates whatever the metrics) and the
Pearson correlation of two curves. Pure torch (no I/O, no config); the sums stay on the device.
"""

from __future__ import annotations

import math

import torch

from qatrun.metrics.base import METRICS, Figure, PairMetric
from qatrun.metrics.common import NAN as _NAN, ratio

class FunctionAgreement:
    """Function agreement of two runs on the same test examples, accumulated over batches.

    ``update(logits_a, logits_b, labels, loss_a=None, loss_b=None)`` with ``logits_*: [N, C]``,
    ``labels: [N]`` adds running sums (on the logits' device, no host sync); ``compute()`` gives

    * ``inference_agreement``: fraction of examples with ``argmax a == argmax b``;
    * ``incorrect_inference_agreement``: among examples that BOTH runs get wrong, the fraction on
      which both predict the same (wrong) class; NaN if no example is wrong in both;
    * ``logit_mse``: mean over all ``N * C`` elements of ``(logits_a - logits_b)^2``;
    * ``logit_mad``: mean over all elements of ``|logits_a - logits_b|``;
    * ``acc_a``, ``acc_b``: each run's accuracy;
    * ``loss_a``, ``loss_b`` (only when losses were given): mean per-example loss.

    Losses must be PER-EXAMPLE (shape ``[N]``, e.g. ``cross_entropy(..., reduction="none")``),
    so the mean over the test set is exact whatever the batch sizes; a 0-dim loss is refused
    (a batch mean cannot be re-weighted without knowing the convention). Each run's loss mean is
    over the examples for which that run's loss was given.

    Predictions are ``argmax`` (ties go to the lowest class index, as in ``torch.argmax``).
    Sums are in float64 (counts in int64), so batching does not change the result beyond float64
    rounding. Empty state: every metric is NaN.
    """

    def __init__(self):
        self._s: dict[str, torch.Tensor] | None = None
        self._n = 0  # examples seen (host-side int; needs no sync: it comes from shapes)
        self._n_elem = 0
        self._n_loss = {"a": 0, "b": 0}

    def _init(self, device):
        i64 = dict(dtype=torch.int64, device=device)
        f64 = dict(dtype=torch.float64, device=device)
        self._s = {
            "agree": torch.zeros((), **i64),
            "both_wrong": torch.zeros((), **i64),
            "both_wrong_same": torch.zeros((), **i64),
            "correct_a": torch.zeros((), **i64),
            "correct_b": torch.zeros((), **i64),
            "sq": torch.zeros((), **f64),
            "abs": torch.zeros((), **f64),
            "loss_a": torch.zeros((), **f64),
            "loss_b": torch.zeros((), **f64),
        }

    @torch.no_grad()
    def update(self, logits_a, logits_b, labels, loss_a=None, loss_b=None) -> None:
        if logits_a.dim() != 2 or logits_a.shape != logits_b.shape:
            raise ValueError(
                f"logits must both be [N, C] of the same shape, got {tuple(logits_a.shape)} and {tuple(logits_b.shape)}"
            )
        n = logits_a.shape[0]
        if labels.shape != (n,):
            raise ValueError(f"labels must be [N] = [{n}], got {tuple(labels.shape)}")
        if self._s is None:
            self._init(logits_a.device)
        s = self._s
        dev = s["agree"].device
        logits_a = logits_a.detach().to(dev)
        logits_b = logits_b.detach().to(dev)
        labels = labels.to(dev)
        pa = logits_a.argmax(dim=1)
        pb = logits_b.argmax(dim=1)
        ok_a = pa == labels
        ok_b = pb == labels
        same = pa == pb
        both_wrong = ~ok_a & ~ok_b
        s["agree"] += same.sum()
        s["correct_a"] += ok_a.sum()
        s["correct_b"] += ok_b.sum()
        s["both_wrong"] += both_wrong.sum()
        s["both_wrong_same"] += (both_wrong & same).sum()
        d = logits_a.to(torch.float64) - logits_b.to(torch.float64)
        s["sq"] += d.square().sum()
        s["abs"] += d.abs().sum()
        for run, loss in (("a", loss_a), ("b", loss_b)):
            if loss is None:
                continue
            if loss.shape != (n,):
                raise ValueError(
                    f"loss_{run} must be per-example losses of shape [N] = [{n}] (reduction='none'), "
                    f"got {tuple(loss.shape)}"
                )
            s[f"loss_{run}"] += loss.detach().to(dev, torch.float64).sum()
            self._n_loss[run] += n
        self._n += n
        self._n_elem += logits_a.numel()


    def compute(self) -> dict[str, torch.Tensor]:
        if self._s is None:
            nan = torch.tensor(_NAN, dtype=torch.float64)
            return {k: nan.clone() for k in
                    ("inference_agreement", "incorrect_inference_agreement", "logit_mse", "logit_mad", "acc_a", "acc_b")}
        s, n, r = self._s, self._n, ratio
        out = {
            "inference_agreement": r(s["agree"], n),
            "incorrect_inference_agreement": r(s["both_wrong_same"], s["both_wrong"]),
            "logit_mse": r(s["sq"], self._n_elem),
            "logit_mad": r(s["abs"], self._n_elem),
            "acc_a": r(s["correct_a"], n),
            "acc_b": r(s["correct_b"], n),
        }
        for run in ("a", "b"):
            if self._n_loss[run]:
                out[f"loss_{run}"] = r(s[f"loss_{run}"], self._n_loss[run])
        return out

    def reduce(self, all_sum, device=None) -> None:
        """Sum the state over processes in place: ``all_sum(t)`` returns ``t`` summed over every rank (each
        rank evaluates its shard of the test set; the figures are then those of the whole set)."""
        if self._s is None:  # a rank with no batch: zeros, so the collective still lines up
            self._init(device or torch.device("cpu"))
        keys = sorted(self._s)
        packed = all_sum(torch.stack([self._s[k].to(torch.float64) for k in keys]))
        counts = all_sum(torch.tensor([self._n, self._n_elem, self._n_loss["a"], self._n_loss["b"]],
                                      dtype=torch.int64, device=packed.device))
        for k, v in zip(keys, packed):
            self._s[k] = v.to(self._s[k].dtype)
        self._n, self._n_elem, self._n_loss["a"], self._n_loss["b"] = (int(c) for c in counts.tolist())

    def reset(self) -> None:
        self.__init__()


def function_metrics(logits_a, logits_b, labels, loss_a=None, loss_b=None) -> dict[str, torch.Tensor]:
    """One-shot :class:`FunctionAgreement` on full ``[N, C]`` logits; same keys, 0-dim tensors."""
    fa = FunctionAgreement()
    fa.update(logits_a, logits_b, labels, loss_a, loss_b)
    return fa.compute()




# Fewer points than this and a correlation of two curves says nothing (two or three points of a
# falling loss correlate at ~1.0 whatever the runs do).
MIN_CURVE_POINTS = 5


def pearson(x, y, min_points: int = 2) -> float:
    """Pearson correlation of two equal-length 1-D curves (tensors, arrays or lists of floats).

    Computed in float64 on the host. NaN if there are fewer than ``min_points`` (at least 2) points or either curve is
    exactly constant; NaN also propagates from NaN entries. Clamped to [-1, 1].
    """
    x = torch.as_tensor(x).detach().to("cpu", torch.float64).reshape(-1)
    y = torch.as_tensor(y).detach().to("cpu", torch.float64).reshape(-1)
    if x.numel() != y.numel():
        raise ValueError(f"pearson: curves differ in length ({x.numel()} vs {y.numel()})")
    if x.numel() < max(2, min_points) or bool((x == x[0]).all()) or bool((y == y[0]).all()):
        return _NAN
    xc = x - x.mean()
    yc = y - y.mean()
    den = math.sqrt(float(xc.square().sum()) * float(yc.square().sum()))
    if not den > 0:  # 0 (underflow) or NaN
        return _NAN
    r = float((xc * yc).sum()) / den
    return max(-1.0, min(1.0, r)) if math.isfinite(r) else _NAN


class TestScores:
    """Each run's accuracy and mean per-example loss over a test set: int64 counts and float64 sums on the
    device, the same arithmetic as ``FunctionAgreement``'s ``acc_*`` and ``loss_*``."""

    def __init__(self, runs: int, device):
        self.correct = [torch.zeros((), dtype=torch.int64, device=device) for _ in range(runs)]
        self.loss = [torch.zeros((), dtype=torch.float64, device=device) for _ in range(runs)]
        self.n = 0

    @torch.no_grad()
    def update(self, logits: list, labels, losses: list) -> None:
        for i, (lg, ls) in enumerate(zip(logits, losses)):
            self.correct[i] += (lg.argmax(dim=1) == labels).sum()
            self.loss[i] += ls.detach().to(torch.float64).sum()
        self.n += labels.shape[0]

    def reduce(self, all_sum) -> None:
        """Sum over torchrun ranks in place (each evaluated its shard of the test set)."""
        dev = self.correct[0].device
        packed = all_sum(torch.stack([*self.correct, *self.loss]).to(torch.float64))
        k = len(self.correct)
        self.correct = [v.to(torch.int64) for v in packed[:k]]
        self.loss = list(packed[k:])
        self.n = int(all_sum(torch.tensor([self.n], dtype=torch.int64, device=dev)).item())

    def compute(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(accuracies, mean losses), one 0-dim tensor per run."""
        return [ratio(c, self.n) for c in self.correct], [ratio(l, self.n) for l in self.loss]


@METRICS.register("function")
class FunctionFigures(PairMetric):
    """Inference agreement and logit distances at every evaluation; the correlation of the two runs' loss
    and accuracy curves at the end (``MIN_CURVE_POINTS`` points at least)."""

    every_rank = True  # its evaluation all-reduces over torchrun ranks, so every rank must hold it
    figures = (
        Figure("pair/inference_agreement", None, True, column=("Inference agreement", "frac", 100), order=130),
        Figure("pair/logit_mse", None, True, column=("Logit MSE", "err", 110), order=140),
        Figure("pair/corr_train_loss", column=("Corr. train loss", "frac", 120), order=300),
        Figure("pair/corr_test_acc", column=("Corr. test acc.", "frac", 130), order=301),
    )
    CURVES = (("loss", "train_loss"), ("test_loss", "test_loss"), ("test_acc", "test_acc"))

    def __init__(self, view):
        super().__init__(view)
        self.agg = FunctionAgreement()

    def eval_batch(self, logits_a, logits_b, labels, loss_a, loss_b) -> None:
        self.agg.update(logits_a, logits_b, labels)

    def eval_compute(self, all_sum=None) -> dict[str, torch.Tensor]:
        agg, self.agg = self.agg, FunctionAgreement()
        if all_sum is not None:
            agg.reduce(all_sum, self.view.device)
        r = agg.compute()
        return {f"pair/{k}": r[k] for k in ("inference_agreement", "incorrect_inference_agreement", "logit_mse",
                                            "logit_mad")}

    def final(self, history: dict) -> dict[str, float]:
        return {f"pair/corr_{name}": pearson(history[f"est/{curve}"], history[f"twin/{curve}"],
                                             min_points=MIN_CURVE_POINTS) for curve, name in self.CURVES}
