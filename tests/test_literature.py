"""The literature estimators (qnet, approxsign, dsq_anneal): g against independent numpy forms and finite
differences of the soft functions they differentiate; class membership and the twin each gets."""

import math

import numpy as np
import pytest
import torch

from qatrun import estimators as E
from qatrun.pair import resolve_twin
from tests.test_estimators import paper_tanh_g


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def qnet_soft(w, m, bits, beta):
    """Quantization Networks' soft quantizer on qatrun's grid: -m + Delta * sum_j sigmoid(beta (w - c_j) / Delta)."""
    n = 2**bits - 1
    delta = 2 * m / n
    c = -m + (np.arange(n) + 0.5) * delta
    return -m + delta * sigmoid(beta * (w[:, None] - c[None, :]) / delta).sum(1)


@pytest.mark.parametrize("bits,beta", [(1, 5.0), (2, 5.0), (4, 3.0), (2, 1.0)])
def test_qnet_g_is_the_derivative_of_the_sigmoid_sum(bits, beta):
    est, m = E.create("qnet", bits=bits, beta=beta), 0.37
    w = np.linspace(-m * 0.999, m * 0.999, 4001)
    h = 1e-6 * m
    fd = (qnet_soft(w + h, m, bits, beta) - qnet_soft(w - h, m, bits, beta)) / (2 * h)
    np.testing.assert_allclose(est.grad(torch.from_numpy(w), m).numpy(), fd, rtol=1e-6, atol=1e-9)
    assert est.grad(torch.tensor([-1.01 * m, 1.01 * m], dtype=torch.float64), m).tolist() == [0.0, 0.0]


def test_qnet_class_and_twin():
    one, two = E.create("qnet", bits=1, beta=5.0), E.create("qnet", bits=2, beta=5.0)
    assert one.in_class and one.reference() is one  # one bin: trivially periodic
    assert not two.in_class and "edge bins" in two.why_not_in_class
    with pytest.raises(E.NotInClassError):
        two.alpha
    # The twin's map is the middle bin's: alpha is the harmonic mean of g over bin 1, by quadrature.
    m, n = 0.5, 200000
    d = two.grid.delta(m)
    w = -m + d * (1 + (np.arange(n) + 0.5) / n)
    g = two.grad(torch.from_numpy(w), m).numpy()
    assert two.reference().alpha == pytest.approx(1 / np.mean(1 / g), rel=1e-7)
    # The edge bin differs from the middle one (what the pair measures): g at the outer level is lower.
    assert two.grad(torch.tensor([-m]), m).item() < 0.9 * two.grad(torch.tensor([-m + d]), m).item()
    spec = resolve_twin("auto", two, optimizer_warps=True)
    assert spec.init == "mirror" and spec.lr_factor == pytest.approx(two.reference().alpha)


def approx_sign(x):
    """Bi-Real Net's ApproxSign, as printed in the paper."""
    return np.where(x < -1, -1.0, np.where(x < 0, 2 * x + x**2, np.where(x < 1, 2 * x - x**2, 1.0)))


def test_approxsign_g_is_the_derivative_of_approx_sign():
    est, m = E.create("approxsign", bits=1), 0.3
    w = np.linspace(-1.2 * m, 1.2 * m, 2401)
    w = w[np.abs(np.abs(w) - m) > 1e-3]  # away from the kinks at +-m
    h = 1e-7
    fd = m * (approx_sign((w + h) / m) - approx_sign((w - h) / m)) / (2 * h)
    np.testing.assert_allclose(est.grad(torch.from_numpy(w), m).numpy(), fd, rtol=1e-6, atol=1e-6)
    assert est.grad(torch.tensor([-m, m]), m).tolist() == [0.0, 0.0]  # vanishes at the clipping edges


def test_approxsign_is_outside_and_one_bit_only():
    est = E.create("approxsign", bits=1)
    assert not est.in_class and "vanishes at the clipping edges" in est.why_not_in_class
    with pytest.raises(ValueError, match="outside the paper's class"):
        resolve_twin("auto", est, optimizer_warps=True)
    assert resolve_twin("ste", est, optimizer_warps=True).estimator.name == "ste"
    with pytest.raises(ValueError, match="1-bit .*use bits=1, got 2"):
        E.create("approxsign", bits=2)


@pytest.mark.parametrize("schedule", ["geometric", "linear"])
def test_dsq_anneal_follows_its_schedule(schedule):
    est, m = E.create("dsq_anneal", bits=2, k=5.5, k_end=22.0, schedule=schedule), 0.37
    w = torch.linspace(-0.45, 0.45, 2001, dtype=torch.float64)
    np.testing.assert_allclose(est.grad(w, m).numpy(), paper_tanh_g(w.numpy(), m, 2, 5.5), rtol=1e-9)  # unbound: t=0
    progress = torch.zeros(())
    est.bind_progress(progress)
    for t in (0.0, 0.25, 0.7):
        progress.fill_(t)
        k = 5.5 * 4**t if schedule == "geometric" else 5.5 + 16.5 * t
        np.testing.assert_allclose(est.grad(w, m).numpy(), paper_tanh_g(w.numpy(), m, 2, k), rtol=1e-6, atol=1e-12)  # t in fp32


def test_dsq_anneal_is_outside_and_warps_with_its_initial_k():
    est = E.create("dsq_anneal", bits=2, k=None, k_end=22.0, schedule="geometric")
    assert not est.in_class and est.needs_progress and est.k == 5.5
    spec = resolve_twin("auto", est, optimizer_warps=True)
    assert spec.source.k == 5.5 and spec.lr_factor == pytest.approx(0.609523, abs=1e-6)
    with pytest.raises(ValueError, match="schedule"):
        E.create("dsq_anneal", bits=2, k=None, k_end=22.0, schedule="cosine")


def test_the_pair_tells_the_annealed_estimator_the_progress():
    from qatrun.pair import Pair, build_run

    est = E.create("dsq_anneal", bits=2, k=None, k_end=22.0, schedule="geometric")
    model = build_run("small_cnn", 10, est, seed=0)
    pair = Pair(model, est, resolve_twin("auto", est, True), optimizer="sgd", lr=0.01, steps=4, warmup_frac=0.0,
                optimizer_options={"momentum": 0.0, "nesterov": False, "weight_decay": 0.0}, metrics=("weights",))
    x, y = torch.randn(2, 1, 28, 28), torch.tensor([1, 2])
    for step in range(3):
        pair.step(step, x, y)
        assert est.progress.item() == pytest.approx(step / 4)
    assert math.isfinite(pair.mean_losses()[0])
