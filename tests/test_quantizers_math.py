"""Fidelity of the quantizers' range math (qatrun/quantizers): per-channel grids, tensor/channel, dynamic,
per-channel M, state, bad input. LSQ is in test_quantizers_lsq.py, activations in test_quantizers_act.py.
CPU only, no training."""

import math

import pytest
import torch

from qatrun import estimators, quantizers
from qatrun.estimators import warp as warp_tensor
from qatrun.quant import Grid
from qatrun.quantizers import ranges
from qatrun.quantizers.dynamic import dynamic_range

GRIDS = [("he_uniform", 1), ("he_uniform", 2), ("he_uniform", 4), ("symmetric", 2), ("symmetric", 3), ("symmetric", 8)]


def weight(out=6, seed=0, shape=(5, 3, 3), dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.3, 1.7, out).reshape(out, *([1] * len(shape)))
    return (torch.rand((out, *shape), generator=g) * 2 - 1).mul(scales).to(dtype)


def channel_m(w):
    return ranges.channel_max_abs(w)


@pytest.mark.parametrize("kind,bits", GRIDS)
def test_grid_ops_broadcast_a_per_channel_range(kind, bits):
    # Every elementwise Grid op with an (out,1,1,1) fp32 range equals, channel by channel, the op with
    # that channel's range as a Python float: the per-channel grid is exactly the per-tensor math.
    grid, w = Grid(kind, bits), weight(seed=bits) * 1.2  # some weights beyond their channel's range
    m = channel_m(weight(seed=bits))
    for op in ("position", "quantize", "level_index", "bin_index"):
        got = getattr(grid, op)(w, m)
        ref = torch.stack([getattr(grid, op)(w[c], float(m[c])) for c in range(w.shape[0])])
        assert torch.equal(got, ref), op
    q = grid.quantize(w, m)
    for c in range(w.shape[0]):  # each channel on its own grid, both ends reached
        lv = grid.levels(float(m[c])).float()
        assert (q[c].reshape(-1, 1) - lv).abs().min(1).values.max() < 1e-6
        assert abs(q[c].max() - lv[-1]) < 1e-6 and abs(q[c].min() - lv[0]) < 1e-6


@pytest.mark.parametrize("kind,bits", GRIDS)
def test_per_channel_thresholds_levels_and_bounds(kind, bits):
    grid, w = Grid(kind, bits), weight()
    m = channel_m(w)
    th, lv = ranges.thresholds(grid, m), ranges.levels(grid, m)
    assert th.shape == (w.shape[0], grid.n_bins) and lv.shape == (w.shape[0], grid.n_levels)
    for c in range(w.shape[0]):
        assert torch.equal(th[c], grid.thresholds(float(m[c])))
        assert lv[c, 0] == pytest.approx(-float(m[c])) and lv[c, -1] == pytest.approx(float(m[c]))
    lo, hi = ranges.level_bounds(grid, m, torch.float32)
    j = torch.arange(grid.n_levels).expand(w.shape[0], -1)
    mm = m.reshape(-1, 1)
    # lo[c, j] is the first fp32 value at level j of channel c, its predecessor is at level j - 1.
    assert torch.equal(grid.level_index(lo[:, 1:], mm), j[:, 1:])
    assert torch.equal(grid.level_index(torch.nextafter(lo[:, 1:], torch.tensor(-math.inf)), mm), j[:, 1:] - 1)
    assert torch.equal(grid.level_index(hi[:, :-1], mm), j[:, :-1])
    for c in range(w.shape[0]):  # every channel at once == the per-tensor bisection on that channel's range
        one_lo, one_hi = grid.level_bounds(float(m[c]), torch.float32)
        assert torch.equal(lo[c], one_lo) and torch.equal(hi[c], one_hi)


def test_same_level_per_channel_holds_each_channel_level():
    grid, w = Grid("he_uniform", 2), weight()
    m = channel_m(w)
    out = w + torch.randn(w.shape, generator=torch.Generator().manual_seed(1)) * 0.3
    assert not torch.equal(grid.quantize(out, m), grid.quantize(w, m))  # the noise moved levels
    held = ranges.same_level(grid, out, w, m)
    assert torch.equal(grid.quantize(held, m), grid.quantize(w, m))
    keep = grid.level_index(out, m) == grid.level_index(w, m)
    assert torch.equal(held[keep], out[keep])  # values already on their level untouched


@pytest.mark.parametrize("kind,bits", [("he_uniform", 2), ("he_uniform", 4), ("symmetric", 3)])
@pytest.mark.parametrize("extension", ["shift", "periodic"])
def test_per_channel_mirror_fixes_thresholds_and_levels(kind, bits, extension):
    grid = Grid(kind, bits)
    tanh = estimators.create("tanh", bits=bits, grid=grid, k=4.0)
    w0 = weight()
    m = channel_m(w0)
    th = ranges.thresholds(grid, m)  # (out, n - 1)
    # Weights at each channel's thresholds and one fp32 step either side, plus values beyond the range.
    at = th.to(torch.float32)
    near = torch.cat([at, torch.nextafter(at, torch.tensor(math.inf)), torch.nextafter(at, torch.tensor(-math.inf))], 1)
    w = torch.cat([near, w0.reshape(w0.shape[0], -1) * 1.3], 1).reshape(w0.shape[0], -1, 1, 1)
    mapped = ranges.warp(w, m, tanh, None, extension)
    assert torch.equal(grid.quantize(mapped, m), grid.quantize(w, m))  # Q(M(w)) == Q(w), bit for bit
    inner = w.abs() < 0.9 * m
    inner[:, : near.shape[1]] = False  # thresholds stay put; look at the weights between them
    assert (mapped != w)[inner].float().mean() > 0.9  # M is not the identity
    m64 = m.double()
    fixed = tanh.mirror64(th.unsqueeze(-1).unsqueeze(-1), m64, extension).reshape(th.shape)
    assert (fixed - th).abs().max() < 1e-12  # each channel's thresholds fixed
    other = estimators.create("tanh", bits=bits, grid=grid, k=1.0)
    back = ranges.warp(w, m, tanh, other, extension)  # M_B^{-1}(M_A(w)), A != B
    assert torch.equal(grid.quantize(back, m), grid.quantize(w, m))
    for c in range(w.shape[0]):  # channel c is the per-tensor warp on its own range
        assert torch.equal(mapped[c], warp_tensor(w[c], float(m[c]), tanh, None, extension))


@pytest.mark.parametrize("kind,bits", GRIDS)
def test_channel_at_one_range_equals_tensor_bit_for_bit(kind, bits):
    grid = Grid(kind, bits)
    est = estimators.create("tanh" if bits in (1, 2, 4) else "ste", bits=bits, grid=grid)
    w = weight()
    top = w.abs().amax()
    w = (w / w.abs().amax(dim=(1, 2, 3), keepdim=True) * top).clamp(-top, top)
    flat = w.reshape(w.shape[0], -1)
    flat[torch.arange(w.shape[0]), flat.abs().argmax(1)] = top  # every channel's max-abs is top exactly
    m = float(w.abs().amax())
    tq = quantizers.create("tensor", grid, w, scale=m if kind == "he_uniform" else None)
    cq = quantizers.create("channel", grid, w)
    assert tq.range() == m and torch.equal(cq.range(), torch.full((w.shape[0], 1, 1, 1), m))
    up = torch.randn(w.shape, generator=torch.Generator().manual_seed(3))
    outs = []
    for q in (tq, cq):
        wl = w.clone().requires_grad_()
        y = q(wl, est)
        y.backward(up)
        outs.append((y.detach(), wl.grad))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert outs[0][0].unique().numel() >= min(grid.n_levels, 100) and outs[0][1].abs().sum() > 0


@pytest.mark.parametrize("kind,bits", [("he_uniform", 2), ("symmetric", 4)])
def test_tensor_runs_the_fixed_range_layer_arithmetic(kind, bits):
    class QuantizeWeight(torch.autograd.Function):  # the fixed-range layer's arithmetic, written out as a reference
        @staticmethod
        def forward(ctx, w, m, est):
            ctx.save_for_backward(w)
            ctx.m, ctx.est = m, est
            return est.grid.quantize(w, m)

        @staticmethod
        def backward(ctx, upstream):
            (w,) = ctx.saved_tensors
            return ctx.est.grad(w, ctx.m, upstream) * upstream, None, None

    grid, w = Grid(kind, bits), weight()
    est = estimators.create("tanh", bits=bits, grid=grid, k=3.0)
    q = quantizers.create("tensor", grid, w)
    up = torch.randn(w.shape, generator=torch.Generator().manual_seed(4))
    a, b = w.clone().requires_grad_(), w.clone().requires_grad_()
    ya, yb = q(a, est), QuantizeWeight.apply(b, grid.init_range(w), est)
    ya.backward(up)
    yb.backward(up)
    assert torch.equal(ya, yb) and torch.equal(a.grad, b.grad) and ya.stride() == w.stride()
    assert not torch.equal(ya, w) and ya.unique().numel() >= grid.n_levels - 2


def test_tensor_is_the_fixed_grid_and_restores_its_float():
    grid, w = Grid("he_uniform", 2), weight()
    q = quantizers.create("tensor", grid, w)
    assert q.range() == grid.init_range(w) and isinstance(q.range(), float)
    fresh = quantizers.create("tensor", grid, w, scale=0.123)
    fresh.load_state_dict(q.state_dict())
    assert fresh.range() == q.range()  # the float, exactly (fp64 buffer)


def test_channel_percentile_is_nearest_rank():
    w = weight()
    q = quantizers.create("channel", Grid("symmetric", 4), w, percentile=50.0)
    a = w.abs().reshape(w.shape[0], -1).sort(dim=1).values
    k = math.ceil(0.5 * a.shape[1]) - 1
    assert torch.equal(q.range().reshape(-1), a[:, k])
    assert torch.equal(quantizers.create("channel", Grid("symmetric", 4), w).range().reshape(-1), a[:, -1])


@pytest.mark.parametrize("stat", ["max_abs", "absmean"])
@pytest.mark.parametrize("scope", ["tensor", "channel"])
def test_dynamic_range_follows_weights_without_gradient(stat, scope):
    grid = Grid("symmetric", 3)
    est = estimators.create("pwl", bits=3, grid=grid, alpha=0.5)
    w = weight().requires_grad_()
    q = quantizers.create("dynamic", grid, w, stat=stat, scope=scope)
    a = w.detach().abs().reshape(w.shape[0], -1) if scope == "channel" else w.detach().abs().reshape(1, -1)
    ref = a.amax(1) if stat == "max_abs" else a.mean(1)
    assert torch.allclose(q.range(w).reshape(-1), ref, rtol=1e-6, atol=0)
    up = torch.randn(w.shape, generator=torch.Generator().manual_seed(2))
    q(w, est).backward(up)
    m = q.range(w)
    assert torch.equal(w.grad, est.grad(w.detach(), m, up) * up)  # no term through m
    with torch.no_grad():
        w.mul_(2)
    assert torch.allclose(q.range(w).reshape(-1), 2 * ref, rtol=1e-6) and torch.equal(q.qrange, q.range(w))


def test_dynamic_absmean_is_bitnet_ternary():
    # BitNet b1.58 (Ma et al. 2024, eq. 1-3): W~ = RoundClip(W / gamma, -1, 1) * gamma, gamma = mean|W|.
    w = weight(dtype=torch.float64)
    gamma = w.abs().mean()
    bitnet = torch.round(torch.clamp(w / gamma, -1, 1)) * gamma
    m = dynamic_range(w, "absmean", per_channel=False)
    ours = Grid("symmetric", 2).quantize(w, m)
    assert (ours - bitnet).abs().max() < 1e-12 and ours.unique().numel() == 3


def test_facts_and_discovery():
    assert set(quantizers.names()) == {"tensor", "channel", "lsq", "dynamic"}
    assert set(quantizers.activation_names()) == {"fixed", "pact"}
    f = {n: quantizers.facts(n) for n in quantizers.names() + quantizers.activation_names()}
    assert [n for n in f if f[n]["in_theorem"]] == ["channel", "tensor", "fixed", "pact"]
    assert [n for n in f if f[n]["is_learned"]] == ["lsq", "pact"]
    assert [n for n in f if f[n]["is_fixed"]] == ["channel", "tensor", "fixed"]


@pytest.mark.parametrize("build,match", [
    (lambda w: quantizers.create("channel", Grid("symmetric", 2), w, percentile=0), r"percentile .*\(0, 100\].* got 0"),
    (lambda w: quantizers.create("channel", Grid("symmetric", 2), w, percentile=100.5), r"\(0, 100\].* got 100.5"),
    (lambda w: quantizers.create("channel", Grid("symmetric", 2), w, percentile=float("nan")), r"\(0, 100\]"),
    (lambda w: quantizers.create("channel", Grid("symmetric", 2), w.index_fill(0, torch.tensor([3]), 0.0)),
     r"output channel 3: all its weights are zero"),
    (lambda w: quantizers.create("lsq", Grid("symmetric", 2), w, init=-1.0), r"initial step must be a positive.* -1"),
    (lambda w: quantizers.create("lsq", Grid("symmetric", 2), w, init=0), r"initial step must be a positive.* 0"),
    (lambda w: quantizers.create("lsq", Grid("he_uniform", 2), w.index_fill(0, torch.tensor([2]), 0.0), scope="channel"),
     r"output channel 2 has all-zero weights"),
    (lambda w: quantizers.create("dynamic", Grid("symmetric", 2), w, stat="absmax"), r"valid: max_abs, absmean"),
    (lambda w: quantizers.create("lsq", Grid("symmetric", 2), w, scope="layer"), r"valid: tensor, channel"),
    (lambda w: quantizers.create("lsq", Grid("symmetric", 2), w, step=1), r"quantizer 'lsq'.*takes"),
    (lambda w: quantizers.create("lsqq", Grid("symmetric", 2), w), r"unknown quantizer 'lsqq'; valid"),
])
def test_bad_input_is_one_line_value_error(build, match):
    with pytest.raises(ValueError, match=match) as exc:
        build(weight())
    assert "\n" not in str(exc.value)
