"""Estimators against closed forms (PAPER.md) and finite differences."""

import math

import numpy as np
import pytest
import torch

from qatrun import estimators as E

REFERENCE_ALPHA = [(2, 5.5, 0.609523), (2, 6.5, 0.454376), (4, 18.0, 0.878354), (1, 2.0, 0.530428)]


def paper_tanh_g(w, m, bits, k):
    """PAPER.md's form, written independently in numpy: (Delta/2) s kt sech^2(kt (w - m_i))."""
    delta = 2 * m / (2**bits - 1)
    kt = k / m
    s = 1 / np.tanh(kt * delta / 2)
    i = np.clip(np.floor((w + m) / delta), 0, 2**bits - 2)
    mi = -m + (i + 0.5) * delta
    g = (delta / 2) * s * kt / np.cosh(kt * (w - mi)) ** 2
    return np.where(np.abs(w) <= m, g, 0.0)


def paper_tanh_mirror(w, m, bits, k):
    """PAPER.md: M = alpha (I (i - z) + (x + sinh x cosh x) / (s Delta kt^2))."""
    delta = 2 * m / (2**bits - 1)
    kt, e = k / m, k / (2**bits - 1)
    s = 1 / np.tanh(kt * delta / 2)
    alpha = 2 * e**2 / np.tanh(e) / (e + np.sinh(e) * np.cosh(e))
    I = 2 * (e + np.sinh(e) * np.cosh(e)) / (s * delta * kt**2)
    i = np.clip(np.floor((w + m) / delta), 0, 2**bits - 2)
    x = kt * (w - (-m + (i + 0.5) * delta))
    z = (2**bits - 1) // 2
    return alpha * (I * (i - z) + (x + np.sinh(x) * np.cosh(x)) / (s * delta * kt**2))


@pytest.mark.parametrize("bits,k,ref", REFERENCE_ALPHA)
def test_tanh_alpha_reference_values(bits, k, ref):
    assert E.create("tanh", bits=bits, k=k).alpha == pytest.approx(ref, abs=1e-5)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_tanh_default_k_is_authors(bits):
    assert E.create("tanh", bits=bits).k == {1: 2.0, 2: 5.5, 4: 18.0}[bits]


@pytest.mark.parametrize("bits,k", [(2, 5.5), (4, 18.0), (1, 2.0), (3, 4.0)])
def test_tanh_g_matches_closed_form(bits, k):
    est, m = E.create("tanh", bits=bits, k=k), 0.37
    w = torch.linspace(-0.45, 0.45, 20001, dtype=torch.float64)
    ref = paper_tanh_g(w.numpy(), m, bits, k)
    np.testing.assert_allclose(est.grad(w, m).numpy(), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bits,k", [(2, 5.5), (4, 18.0), (1, 2.0)])
def test_tanh_mean_over_bin_is_one(bits, k):
    est, m = E.create("tanh", bits=bits, k=k), 0.5
    d = est.grid.delta(m)
    n = 200000
    w = -m + (torch.arange(n, dtype=torch.float64) + 0.5) / n * d  # bin 0, midpoint rule
    assert est.grad(w, m).mean().item() == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize("bits,k", [(2, 5.5), (2, 6.5), (4, 18.0), (1, 2.0)])
def test_tanh_mirror_closed_form_and_invariants(bits, k):
    est, m = E.create("tanh", bits=bits, k=k), 0.41
    g = est.grid
    w = torch.linspace(-m, m, 50001, dtype=torch.float64)
    M = est.mirror(w, m)
    np.testing.assert_allclose(M.numpy(), paper_tanh_mirror(w.numpy(), m, bits, k), atol=1e-12)
    th = g.thresholds(m)
    assert torch.allclose(est.mirror(th, m), th, atol=1e-14, rtol=0)  # thresholds fixed
    assert torch.equal(g.level_index(M, m), g.level_index(w, m))  # Q(M(w)) == Q(w)
    assert (M[1:] >= M[:-1]).all()  # monotone
    ends = est.mirror(torch.tensor([-m, m], dtype=torch.float64), m)
    assert ends.tolist() == pytest.approx([-m, m], abs=1e-14)


@pytest.mark.parametrize("bits,k", [(2, 5.5), (4, 18.0)])
def test_tanh_mirror_derivative_times_g_is_alpha(bits, k):
    est, m = E.create("tanh", bits=bits, k=k), 0.5
    d = est.grid.delta(m)
    # Points away from bin edges (M is C^1 anyway for tanh, but keep the FD stencil in one bin).
    i = torch.randint(0, est.grid.n_bins, (500,), generator=torch.Generator().manual_seed(0)).double()
    f = torch.rand(500, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.9 + 0.05
    w = -m + (i + f) * d
    h = 1e-6
    dM = (est.mirror(w + h, m) - est.mirror(w - h, m)) / (2 * h)
    torch.testing.assert_close(dM * est.grad(w, m), torch.full_like(w, est.alpha), rtol=1e-7, atol=0)


def test_ste_and_pwl():
    ste, m = E.create("ste", bits=2), 0.5
    w = torch.tensor([-0.7, -0.5, 0.0, 0.3, 0.5, 0.6])
    assert ste.grad(w, m).tolist() == [0, 1, 1, 1, 1, 0]
    assert ste.alpha == 1.0 and torch.equal(ste.mirror(w, m), w)
    pwl = E.create("pwl", bits=2, k=5.5)
    assert pwl.alpha == pytest.approx(0.609523, abs=1e-6)
    assert pwl.grad(w, m).tolist() == pytest.approx([0] + [pwl.alpha] * 4 + [0])
    assert torch.equal(pwl.mirror(w, m), w)
    assert E.create("pwl", bits=2, alpha=0.25).alpha == 0.25


def cosine_shape(u):
    return 1 + 0.5 * torch.cos(2 * torch.pi * u)


def skewed_shape(u):
    """g = 1 + u on the bin: 1/g integrates to log(1 + u) (not symmetric about the threshold)."""
    return 1 + u


def test_custom_closed_form_alpha_and_mirror():
    # Harmonic mean of 1 + a cos(2 pi u) over a period is sqrt(1 - a^2).
    est, m = E.create("custom", bits=2, shape=cosine_shape), 0.5
    assert est.alpha == pytest.approx(math.sqrt(1 - 0.25), rel=1e-8)
    # skewed: J = log 2, alpha = 1 / log 2, F(f) = log((1 + f) / 1.5)
    sk = E.create("custom", bits=2, shape=skewed_shape)
    assert sk.alpha == pytest.approx(1 / math.log(2), rel=1e-8)
    d = sk.grid.delta(m)
    w = torch.linspace(-m, m, 30001, dtype=torch.float64)
    i = torch.clamp(torch.floor((w + m) / d), max=2)
    f = (w + m) / d - i
    ref = -m + d * (i + 0.5 + torch.log((1 + f) / 1.5) / math.log(2))
    torch.testing.assert_close(sk.mirror(w, m), ref, atol=1e-6 * d, rtol=0)


@pytest.mark.parametrize("shape", [cosine_shape, skewed_shape])
def test_custom_accuracy_contract(shape):
    est, m = E.create("custom", bits=3, shape=shape), 0.5
    d = est.grid.delta(m)
    th = est.grid.thresholds(m)
    assert (est.mirror(th, m) - th).abs().max() <= 1e-6 * d
    g = torch.Generator().manual_seed(0)
    i = torch.randint(0, est.grid.n_bins, (300,), generator=g).double()
    f = torch.rand(300, generator=g, dtype=torch.float64) * 0.9 + 0.05  # away from bin edges
    w = -m + (i + f) * d
    h = 1e-4 * d
    dM = (est.mirror(w + h, m) - est.mirror(w - h, m)) / (2 * h)
    rel = (dM * est.grad(w, m) / est.alpha - 1).abs().max()
    assert rel < 1e-4
    w2 = torch.linspace(-m, m, 10001, dtype=torch.float64)
    assert torch.equal(est.grid.level_index(est.mirror(w2, m), m), est.grid.level_index(w2, m))


def test_custom_from_dotted_path():
    est = E.create("custom", bits=2, shape="tests.test_estimators.cosine_shape")
    assert est.alpha == pytest.approx(math.sqrt(0.75), rel=1e-8)


def zero_shape(u):
    return (2 * u - 1) ** 2


def test_zero_shape_is_out_of_class():
    est = E.create("custom", bits=2, shape=zero_shape)
    assert not est.in_class
    with pytest.raises(ValueError, match="outside the paper's class.*reaches zero"):
        est.alpha
    with pytest.raises(ValueError, match="mirror map"):
        est.mirror(torch.zeros(3), 0.5)
    # Training with it still works: g is defined.
    assert est.grad(torch.tensor([0.0]), 0.5).shape == (1,)


def test_ewgs():
    est, m = E.create("ewgs", bits=2, delta=0.2), 0.5
    assert not est.in_class
    w = torch.tensor([-0.3, 0.1, 0.2, 0.7])
    up = torch.tensor([1.0, -1.0, 1.0, 1.0])
    q = est.grid.quantize(w, m)
    ref = 1 + 0.2 * torch.sign(up) * (w - q) / est.grid.delta(m)
    ref[3] = 0.0  # clipped
    torch.testing.assert_close(est.grad(w, m, up), ref)
    with pytest.raises(ValueError, match="depends on the incoming gradient"):
        est.alpha


def test_unknown_estimator_lists_valid_names():
    with pytest.raises(ValueError, match="valid estimators: approxsign, custom, dsq_anneal, ewgs, pwl, qnet, ste, tanh"):
        E.create("dsq", bits=2)


@pytest.mark.parametrize("bits", [0, 9])
def test_bits_out_of_range(bits):
    with pytest.raises(ValueError, match="bits must be an integer from 1 to 8"):
        E.create("tanh", bits=bits, k=3.0)


@pytest.mark.parametrize("k", [0, -1.0, float("nan")])
def test_nonpositive_k(k):
    with pytest.raises(ValueError, match="positive"):
        E.create("tanh", bits=2, k=k)


def test_tanh_needs_k_for_unknown_bits():
    with pytest.raises(ValueError, match="no default sharpness k for 3 bits"):
        E.create("tanh", bits=3)


def test_custom_bad_paths_and_bad_returns():
    with pytest.raises(ValueError, match="cannot import module"):
        E.create("custom", bits=2, shape="no_such_pkg.fn")
    with pytest.raises(ValueError, match="does not name a callable"):
        E.create("custom", bits=2, shape="math.no_such_fn")
    with pytest.raises(ValueError, match="tensor shaped like its input"):
        E.create("custom", bits=2, shape=lambda u: 1.0)
    with pytest.raises(ValueError, match="tensor shaped like its input"):
        E.create("custom", bits=2, shape=lambda u: u[:3])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_parity():
    for est in (E.create("tanh", bits=2), E.create("custom", bits=2, shape=cosine_shape)):
        w = torch.randn(10000, dtype=torch.float64) * 0.4
        torch.testing.assert_close(est.grad(w.cuda(), 0.5).cpu(), est.grad(w, 0.5))
        torch.testing.assert_close(est.mirror(w.cuda(), 0.5).cpu(), est.mirror(w, 0.5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mirror_keeps_level_exactly_in_weight_dtype(dtype):
    """Weights within an ulp of a threshold: M(w) rounded to the weight dtype must not cross it."""
    est, m = E.create("tanh", bits=4), 0.3
    th = est.grid.thresholds(m).to(dtype)
    w = torch.cat([th + k * torch.finfo(dtype).eps * th.abs().clamp(min=1e-3) for k in range(-3, 4)]
                  + [torch.empty(100000).uniform_(-m, m).to(dtype)])
    assert torch.equal(est.grid.level_index(est.mirror(w, m), m), est.grid.level_index(w, m))
