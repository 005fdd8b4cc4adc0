"""Fidelity of ``lsq`` (qatrun/quantizers/lsq.py): the step gradient against LSQ's formula (Esser et al.,
ICLR 2020, eq. 3 and the gradient scale of sec. 2.2), against an MQBench-style re-implementation and
PyTorch's learnable fake-quant op, and against finite differences; step 0 equals the fixed grid.
CPU only, no training loop beyond a few SGD steps on a synthetic loss."""

import math

import pytest
import torch

from qatrun import estimators, quantizers
from qatrun.quant import Grid
from qatrun.quantizers.lsq import lsq_range, step_factor

CASES = [("he_uniform", 1), ("he_uniform", 2), ("he_uniform", 4), ("symmetric", 2), ("symmetric", 3), ("symmetric", 4)]


def weight(dtype=torch.float64, seed=0, out=6):
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.4, 1.6, out).reshape(out, 1, 1, 1)
    return ((torch.rand((out, 4, 3, 3), generator=g) * 2 - 1) * scales).to(dtype)


def run(q, w, est, up):
    """``(Q(w), dL/dw, dL/ds)`` for ``L = sum(up * Q(w))``."""
    w = w.clone().requires_grad_()
    q.step.grad = None
    y = q(w, est)
    y.backward(up)
    return y.detach(), w.grad, q.step.grad.clone()


def paper_grad(v, s, c):
    """LSQ eq. 3 as the paper writes it: ``-Q_N`` for ``v/s <= -Q_N``, ``Q_P`` for ``v/s >= Q_P``,
    ``round(v/s) - v/s`` between, with ``Q_N = Q_P = c``; on the he_uniform grid (levels at half-integer
    multiples of ``s``) ``round`` is to the nearest level, ``round(v/s + c) - c``."""
    u = v / s
    inside = torch.round(u + c) - c - u
    return torch.where(u <= -c, torch.full_like(u, -c), torch.where(u >= c, torch.full_like(u, c), inside))


@pytest.mark.parametrize("kind,bits", CASES)
@pytest.mark.parametrize("scope", ["tensor", "channel"])
@pytest.mark.parametrize("grad_scale,init", [(True, "lsq"), (False, "lsq"), (True, "fixed")])
def test_step_gradient_is_the_lsq_formula(kind, bits, scope, grad_scale, init):
    grid = Grid(kind, bits)
    q = quantizers.create("lsq", grid, weight(), scope=scope, grad_scale=grad_scale, init=init)
    w = weight() * 1.37  # with init="fixed", a third of the weights beyond the range
    c = step_factor(grid)
    assert c == (2 ** (bits - 1) - 1 if kind == "symmetric" else (2**bits - 1) / 2)  # Q_P after the mapping
    up = torch.randn(w.shape, generator=torch.Generator().manual_seed(1), dtype=w.dtype)
    _, _, gs = run(q, w, estimators.create("ste", bits=bits, grid=grid), up)
    s = q.step.detach()
    per = up * paper_grad(w, s, c)
    n = w[0].numel() if scope == "channel" else w.numel()
    want = (per.sum(dim=(1, 2, 3), keepdim=True) if scope == "channel" else per.sum())
    want = want / math.sqrt(n * c) if grad_scale else want
    assert gs.shape == s.shape and (gs - want).abs().max() < 1e-6  # the bound, absolute
    assert (gs - want).abs().max() < 1e-9 * want.abs().max() and (want != 0).all()  # relative, fp64
    assert init == "lsq" or (w.abs() > q.range(w)).any()  # the outside branch (+-Q_P) is exercised


def mqbench_style(x, scale, zp, qmin, qmax, grad_factor):
    """LSQ written by autograd in the style of MQBench's learnable fake-quantizer (read, not copied): the step's
    gradient scaled by a detach trick, the rounding passed straight through by another. The clip comes first,
    as in LSQ eq. 1 (``round(clip(v/s, -Q_N, Q_P))``): MQBench's Python path clamps the rounded value, and
    torch.clamp passes no gradient at its bounds, so its weights rounding to an end level get none."""
    scale = (scale - scale * grad_factor).detach() + scale * grad_factor
    u = torch.clamp(x / scale + zp, qmin, qmax)
    u = (u.round() - u).detach() + u
    return (u - zp) * scale


def band(w, s, c):
    """Weights with ``Q_P <= |v/s| < Q_P + 1/2``. PyTorch's op clamps the *rounded* value, so there it passes ``dv^/ds = round(v/s) - v/s`` (and ``dv^/dv = 1``) where LSQ eq. 3 says ``+-Q_P``
    (and the clipped STE 0). Outside this half-step band the three agree; in it the difference is exactly that."""
    u = (w / s).abs()
    return (u >= c) & (u < c + 0.5)


def public_vs_ours(ref_grad_s, gs, w, s, c, up, gscale, dims):
    """``ref - ours`` for the step gradient, with the band's predicted difference taken out."""
    u = w / s
    predicted = (up * torch.where(band(w, s, c), torch.round(u + c) - c - u - torch.sign(u) * c, torch.zeros_like(u)))
    predicted = predicted.sum(dim=dims) * gscale if dims else predicted.sum() * gscale
    return ref_grad_s.reshape(-1) - gs.reshape(-1) - predicted.reshape(-1)


@pytest.mark.parametrize("kind,bits", CASES)
@pytest.mark.parametrize("scope", ["tensor", "channel"])
def test_step_gradient_equals_an_mqbench_style_implementation(kind, bits, scope):
    grid = Grid(kind, bits)
    q = quantizers.create("lsq", grid, weight(), scope=scope, init="fixed")
    w = weight() * 1.37  # a third of the weights beyond the range
    c, n = step_factor(grid), grid.n_levels
    up = torch.randn(w.shape, generator=torch.Generator().manual_seed(2), dtype=w.dtype)
    y, gw, gs = run(q, w, estimators.create("ste", bits=bits, grid=grid), up)
    x, s = w.clone().requires_grad_(), q.step.detach().clone().requires_grad_()
    # Mapping: symmetric = zero point 0 on [-Q_P, Q_P]; he_uniform = zero point c (half-integer) on [0, n - 1].
    zp, qmin, qmax = (0.0, -c, c) if kind == "symmetric" else (c, 0, n - 1)
    ref = mqbench_style(x, s, zp, qmin, qmax, q.gscale)
    ref.backward(up)
    assert (y - ref.detach()).abs().max() < 1e-12
    assert (gw - x.grad).abs().max() < 1e-12 and (x.grad == 0).any()  # clipped weights: no gradient
    assert (gs.reshape(-1) - s.grad.reshape(-1)).abs().max() < 1e-10


@pytest.mark.parametrize("kind,bits", [("symmetric", 2), ("symmetric", 4), ("he_uniform", 2), ("he_uniform", 3)])
@pytest.mark.parametrize("scope", ["tensor", "channel"])
def test_step_gradient_equals_pytorchs_learnable_fake_quant(kind, bits, scope):
    # torch._fake_quantize_learnable_per_{tensor,channel}_affine: the op MQBench's LearnableFakeQuantize
    # calls (fp32 only). he_uniform has a half-integer zero point, which the op rounds, so the input is
    # shifted by m = c * s instead (same levels; the shift's own gradient c cancels -c: see lsq.py).
    grid = Grid(kind, bits)
    q = quantizers.create("lsq", grid, weight(torch.float32), scope=scope, init="fixed")
    w = weight(torch.float32) * 1.37
    c, n = step_factor(grid), grid.n_levels
    up = torch.randn(w.shape, generator=torch.Generator().manual_seed(3))
    y, _, gs = run(q, w, estimators.create("ste", bits=bits, grid=grid), up)
    s = q.step.detach().reshape(-1).clone().requires_grad_()
    shift = 0.0 if kind == "symmetric" else c
    qmin, qmax = (-int(c), int(c)) if kind == "symmetric" else (0, n - 1)
    sb = s.reshape(-1, 1, 1, 1) if scope == "channel" else s
    scaled = (sb - sb * q.gscale).detach() + sb * q.gscale  # the shift's gradient scaled as the op scales its own
    x = w + shift * scaled
    if scope == "channel":
        ref = torch._fake_quantize_learnable_per_channel_affine(x, s, torch.zeros_like(s), 0, qmin, qmax, q.gscale)
    else:
        ref = torch._fake_quantize_learnable_per_tensor_affine(x, s, torch.zeros_like(s), qmin, qmax, q.gscale)
    ref = ref - shift * scaled
    ref.backward(up)
    assert (y - ref.detach()).abs().max() < 1e-6
    st = q.step.detach()
    diff = public_vs_ours(s.grad, gs, w, st, c, up, q.gscale, (1, 2, 3) if scope == "channel" else None)
    assert diff.abs().max() < 1e-6 * gs.abs().max().clamp_min(1), diff
    assert band(w, st, c).any()  # the half-step band is exercised


def losses(q, grid, w, up, s_values):
    """``(true, surrogate)`` losses ``sum(up * Q)`` at steps ``s'``: the true quantizer, and the straight-through
    surrogate that freezes ``round`` at the current step (``Q~(s') = Delta' (r + p(s') - p(s)) - m'``)."""
    m0 = q.range(w)
    p0 = grid.position(w, m0)
    out = []
    for s in s_values:
        m = lsq_range(s, q.step_ref, q.m_ref, q.c, w)
        true = grid.quantize(w, m)
        sur = grid.delta(m) * (torch.round(p0) + grid.position(w, m) - p0) - m
        out.append(((up * true).sum(dim=(1, 2, 3)), (up * sur).sum(dim=(1, 2, 3))))
    return out


@pytest.mark.parametrize("kind,bits", CASES)
@pytest.mark.parametrize("scope", ["tensor", "channel"])
def test_step_gradient_finite_differences_fp64(kind, bits, scope):
    """LSQ's step gradient is the derivative of the *straight-through surrogate* (rounding frozen, passed
    through), not of the true quantizer: inside the range the true ``dQ/ds`` is ``Q / s`` (``round`` is
    locally constant), LSQ's is ``(Q - w) / s``. So: autograd == FD(surrogate), and autograd == FD(true)
    minus the straight-through term ``w / s`` inside the range (beyond it both are ``+-c``)."""
    grid = Grid(kind, bits)
    q = quantizers.create("lsq", grid, weight(), scope=scope, grad_scale=False, init="fixed")
    w = weight() * 1.37
    up = torch.randn(w.shape, generator=torch.Generator().manual_seed(4), dtype=w.dtype)
    _, _, gs = run(q, w, estimators.create("ste", bits=bits, grid=grid), up)
    s, h = q.step.detach(), 1e-9
    (tp, sp), (tm, sm) = losses(q, grid, w, up, [s + h, s - h])
    m = q.range(w)
    assert torch.equal(grid.level_index(w, lsq_range(s + h, q.step_ref, q.m_ref, q.c, w)), grid.level_index(w, m))
    assert torch.equal(grid.level_index(w, lsq_range(s - h, q.step_ref, q.m_ref, q.c, w)), grid.level_index(w, m))
    fd_sur, fd_true = (sp - sm) / (2 * h), (tp - tm) / (2 * h)
    inside = w.abs() < m
    st_term = (up * torch.where(inside, w / (m / q.c), torch.zeros_like(w))).sum(dim=(1, 2, 3))
    if scope == "tensor":
        fd_sur, fd_true, st_term = fd_sur.sum(), fd_true.sum(), st_term.sum()
    assert (gs.reshape(-1) - fd_sur.reshape(-1)).abs().max() < 1e-5
    assert (gs.reshape(-1) - (fd_true - st_term).reshape(-1)).abs().max() < 1e-5
    assert st_term.abs().min() > 1e-2  # the two derivatives really differ


def train(q, w0, est, lr_step, steps=5):
    """A few SGD steps on ``sum(up_t * Q(w))``: ``(Q at every step, final w, step grads)``."""
    w = torch.nn.Parameter(w0.clone())
    params = [{"params": [w], "lr": 0.05}] + ([{"params": [q.step], "lr": lr_step}] if q.is_learned else [])
    opt = torch.optim.SGD(params, lr=0.05)
    gen, qs, grads = torch.Generator().manual_seed(5), [], []
    for _ in range(steps):
        opt.zero_grad()
        y = q(w, est)
        y.backward(torch.randn(w.shape, generator=gen, dtype=w.dtype))
        qs.append(y.detach())
        grads.append(q.step.grad.clone() if q.is_learned else None)
        opt.step()
    return qs, w.detach(), grads


@pytest.mark.parametrize("kind,bits", [("he_uniform", 2), ("he_uniform", 4), ("symmetric", 3)])
@pytest.mark.parametrize("scope,fixed", [("tensor", "tensor"), ("channel", "channel")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lsq_with_zero_step_lr_is_its_fixed_grid(kind, bits, scope, fixed, dtype):
    grid = Grid(kind, bits)
    est = estimators.create("tanh", bits=bits, grid=grid, k=4.0)
    w0 = weight(dtype) * 0.5
    ref_q, ref_w, _ = train(quantizers.create(fixed, grid, w0), w0, est, 0.0)
    lsq = quantizers.create("lsq", grid, w0, scope=scope, init="fixed")
    got_q, got_w, grads = train(lsq, w0, est, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(ref_q, got_q)) and torch.equal(ref_w, got_w)
    assert all(g.abs().min() > 0 for g in grads)  # the step got a gradient; only its lr kept it still
    moved_q, _, _ = train(quantizers.create("lsq", grid, w0, scope=scope, init="fixed"), w0, est, 0.5)
    assert not torch.equal(moved_q[-1], ref_q[-1])  # with a learning rate the grid moves


@pytest.mark.parametrize("scope", ["tensor", "channel"])
def test_weight_gradient_is_g_in_the_current_grid(scope):
    grid = Grid("he_uniform", 2)
    est = estimators.create("tanh", bits=2, grid=grid)
    w = weight(torch.float32)
    q = quantizers.create("lsq", grid, w, scope=scope)
    with torch.no_grad():
        q.step.mul_(0.7)  # a step the optimizer moved
    up = torch.randn(w.shape, generator=torch.Generator().manual_seed(6))
    y, gw, _ = run(q, w, est, up)
    m = q.range(w)
    assert torch.equal(y, grid.quantize(w, m)) and torch.equal(gw, est.grad(w, m, up) * up)
    assert not torch.equal(gw, est.grad(w, q.m_ref, up) * up)  # not the initial grid's g


@pytest.mark.parametrize("scope", ["tensor", "channel"])
def test_lsq_init_and_state(scope):
    grid = Grid("symmetric", 3)
    w = weight(torch.float32)
    q = quantizers.create("lsq", grid, w, scope=scope)
    a = w.abs().reshape(w.shape[0], -1) if scope == "channel" else w.abs().reshape(1, -1)
    assert torch.allclose(q.step.detach().reshape(-1), 2 * a.mean(1) / math.sqrt(3), rtol=1e-6, atol=0)  # LSQ init
    with torch.no_grad():
        q.step.add_(0.01)
    fresh = quantizers.create("lsq", grid, w * 2, scope=scope, init=0.5)
    assert not torch.equal(fresh.range(w), q.range(w))
    fresh.load_state_dict(q.state_dict())
    assert torch.equal(fresh.range(w), q.range(w))
    assert quantizers.create("lsq", grid, w, init=0.25).step.item() == 0.25
