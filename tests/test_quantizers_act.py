"""Fidelity of the activation quantizers (qatrun/quantizers/act*.py): the grid, calibration, PACT's clip
gradient (Choi et al. 2018, eq. 3-4) against finite differences, a pluggable estimator, a small network's
logits at 8 bits, bad input. CPU only, no training."""

import pytest
import torch
import torch.nn as nn

from qatrun import quantizers
from qatrun.quantizers.act import ActQuantize, act_delta, act_quantize, ste_clipped


def data(signed, n=(64, 40), seed=0, dtype=torch.float32):
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2
    return x if signed else x.relu()


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("signed", [False, True])
def test_grid_levels(bits, signed):
    x, a = torch.linspace(-3, 3, 20001), torch.tensor(2.0)
    x = x if signed else x.relu()
    q = act_quantize(x, a, bits, signed)
    n = 2**bits if not signed else (2 if bits == 1 else 2**bits - 1)
    assert q.unique().numel() == n  # every level reached, no others
    d = act_delta(a, bits, signed)
    k = q / d if not (signed and bits == 1) else q / d - 0.5
    assert (k - k.round()).abs().max() < 1e-4 and q.max() == pytest.approx(2.0) and q.min() == (-2.0 if signed else 0)
    if signed and bits > 1:
        assert act_quantize(torch.zeros(3), a, bits, signed).eq(0).all()  # zero is a level, exactly
    assert ((q - x.clamp(-2 if signed else 0, 2)).abs() <= d / 2 + 1e-6).all()


@pytest.mark.parametrize("name", ["fixed", "pact"])
def test_calibration_picks_sign_and_range_then_stays(name):
    for signed in (False, True):
        aq = quantizers.create_activation(name, bits=4, percentile=99.0)
        x = data(signed)
        aq(x)
        a = x.abs().reshape(-1).kthvalue(int(0.99 * x.numel()) + (0.99 * x.numel() % 1 > 0)).values
        assert bool(aq.signed) is signed and torch.equal(aq.clip().detach(), a)
        y2 = aq(x * 10)  # a later batch: the range does not move
        assert torch.equal(aq.clip().detach(), a) and y2.abs().max() <= a + 1e-6
        fresh = quantizers.create_activation(name, bits=4, percentile=99.0)
        fresh.load_state_dict(aq.state_dict())
        assert torch.equal(fresh(x * 3), aq(x * 3))  # loaded: no recalibration on a different batch


def test_pact_given_init_alpha_is_kept():
    aq = quantizers.create_activation("pact", bits=3, init_alpha=1.25)
    aq(data(False))
    assert aq.alpha.item() == 1.25 and not bool(aq.signed)


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_pact_gradients_finite_differences_fp64(signed, bits):
    """PACT's ``dy_q/dalpha`` is the derivative of the clip ``y = clip(x, lo, alpha)`` (the rounding passed
    straight through, eq. 3), not of the quantized ``y_q`` (whose true derivative inside is ``y_q / alpha``):
    compare it with finite differences of the clip; ``dy_q/dx`` with the clip's own (eq. 4)."""
    x = data(signed, dtype=torch.float64).requires_grad_()
    up = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    alpha = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    ActQuantize.apply(x, alpha, bits, signed, ste_clipped, True).backward(up)
    lo = -1 if signed else 0

    def clip_loss(a, xx=x.detach()):
        return (up * torch.maximum(torch.minimum(xx, a), torch.as_tensor(lo * a))).sum()

    h = 1e-6
    fd_alpha = (clip_loss(alpha.detach() + h) - clip_loss(alpha.detach() - h)) / (2 * h)
    assert abs(alpha.grad - fd_alpha) < 1e-8
    paper = up[x >= 1.7].sum() - (up[x < -1.7].sum() if signed else 0)
    assert abs(alpha.grad - paper) < 1e-12 and abs(paper) > 1e-2
    xd = x.detach()
    fd_x = (torch.maximum(torch.minimum(xd + h, alpha.detach()), torch.as_tensor(lo * 1.7))
            - torch.maximum(torch.minimum(xd - h, alpha.detach()), torch.as_tensor(lo * 1.7))) / (2 * h)
    away = ((xd - 1.7).abs() > 1e-3) & ((xd - lo * 1.7).abs() > 1e-3)  # the clip's kinks (and ReLU's zeros)
    assert (x.grad[away] - fd_x[away] * up[away]).abs().max() < 1e-8
    assert (x.grad == 0).any() and (x.grad != 0).any()


def test_fixed_range_gets_no_gradient_and_estimator_is_pluggable():
    x = data(True).requires_grad_()
    aq = quantizers.create_activation("fixed", bits=4)
    aq(x).sum().backward()
    assert torch.equal(x.grad, ste_clipped(x.detach(), -aq.arange, aq.arange))
    assert not any(p.requires_grad for p in aq.parameters())

    def half(xx, lo, hi):  # another activation estimator: half the clipped STE
        return 0.5 * ste_clipped(xx, lo, hi)

    x.grad = None
    other = quantizers.create_activation("fixed", bits=4, estimator=half)
    other(x).sum().backward()
    assert torch.equal(x.grad, 0.5 * ste_clipped(x.detach(), -other.arange, other.arange))


@pytest.mark.parametrize("name", ["fixed", "pact"])
def test_eight_bits_wide_range_moves_logits_less_than_a_step(name):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 10))
    x = torch.randn(256, 20, generator=torch.Generator().manual_seed(2))
    aq = quantizers.create_activation(name, bits=8)  # percentile 100: the whole first batch in range
    with torch.no_grad():
        ref = net(x)
        h = net[1](net[0](x))
        hq = aq(h)
        out = net[2](hq)
    step = float(act_delta(aq.clip().detach(), 8, False))
    change = (out - ref).abs().max().item()
    assert not bool(aq.signed) and 0 < change < step  # quantized, by less than one step
    bound = step / 2 * net[2].weight.abs().sum(1).max().item()
    assert change <= bound and (hq - h).abs().max() <= step / 2 + 1e-7


@pytest.mark.parametrize("build,match", [
    (lambda: quantizers.create_activation("fixed", bits=0), r"bits must be an integer from 1 to 8, got 0"),
    (lambda: quantizers.create_activation("pact", bits=9), r"bits must be an integer from 1 to 8, got 9"),
    (lambda: quantizers.create_activation("fixed", bits=True), r"bits must be an integer from 1 to 8"),
    (lambda: quantizers.create_activation("fixed", bits=4, percentile=0), r"\(0, 100\].* got 0"),
    (lambda: quantizers.create_activation("fixed", bits=4, percentile=150), r"\(0, 100\].* got 150"),
    (lambda: quantizers.create_activation("pact", bits=4, init_alpha=-1.0), r"init_alpha must be a positive.* -1"),
    (lambda: quantizers.create_activation("pact", bits=4, init_alpha=0), r"init_alpha must be a positive.* 0"),
    (lambda: quantizers.create_activation("fixed", bits=4, estimator="tanh"), r"unknown activation estimator 'tanh'"),
    (lambda: quantizers.create_activation("fixed", bits=4)(torch.zeros(4, 4)), r"percentile of \|x\|.* is 0"),
    (lambda: quantizers.create_activation("lsq", bits=4), r"unknown activation quantizer 'lsq'; valid activation quantizers: fixed, pact"),
])
def test_bad_input_is_one_line_value_error(build, match):
    with pytest.raises(ValueError, match=match) as exc:
        build()
    assert "\n" not in str(exc.value)
