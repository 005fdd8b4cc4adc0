import math

import pytest
import torch

from qatrun.quant import Grid, fan_in, he_uniform_range


def test_he_uniform_range_from_shape():
    assert fan_in((64, 32, 3, 3)) == 288
    assert he_uniform_range((64, 32, 3, 3)) == pytest.approx(math.sqrt(6 / 288))
    assert he_uniform_range((10, 256)) == pytest.approx(math.sqrt(6 / 256))


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_he_uniform_levels_and_thresholds(bits):
    g, m = Grid("he_uniform", bits), 0.7
    lv = g.levels(m)
    assert len(lv) == 2**bits and lv[0] == pytest.approx(-m) and lv[-1] == pytest.approx(m)
    assert not torch.isclose(lv, torch.zeros((), dtype=lv.dtype), atol=1e-12).any()  # no level at zero
    th = g.thresholds(m)
    assert torch.allclose(th, (lv[1:] + lv[:-1]) / 2)
    assert torch.isclose(th, torch.zeros((), dtype=th.dtype), atol=1e-12).any()  # one threshold at 0


@pytest.mark.parametrize("bits", [2, 3, 8])
def test_symmetric_grid_has_zero_level(bits):
    g = Grid("symmetric", bits)
    lv = g.levels(1.3)
    assert len(lv) == 2**bits - 1
    assert torch.isclose(lv, torch.zeros((), dtype=lv.dtype), atol=1e-12).any()


def test_quantize_is_nearest_level_and_clips():
    g, m = Grid("he_uniform", 2), 0.5
    w = torch.randn(1000) * 0.6
    q = g.quantize(w, m)
    lv = g.levels(m).float()
    nearest = lv[(w.clamp(-m, m)[:, None] - lv[None]).abs().argmin(1)]
    assert torch.allclose(q, nearest)
    assert torch.allclose(g.levels(m).float()[g.level_index(w, m)], q)
    assert q.abs().max() <= m + 1e-7


def test_bin_index_and_last_bin():
    g, m = Grid("he_uniform", 2), 0.5
    d = g.delta(m)
    w = torch.tensor([-0.5, -0.5 + 0.5 * d, -0.5 + 1.2 * d, 0.5, 0.9])
    assert g.bin_index(w, m).tolist() == [0, 0, 1, 2, 2]


def test_bf16_weights_use_fp32_grid_math():
    g, m = Grid("he_uniform", 4), 0.3
    w = torch.randn(4096) * 0.2
    qb = g.quantize(w.bfloat16(), m)
    assert qb.dtype == torch.bfloat16
    # The level chosen is that of the bf16 weight rounded in fp32, not of bf16 arithmetic.
    assert torch.equal(g.level_index(w.bfloat16(), m), g.level_index(w.bfloat16().float(), m))


@pytest.mark.parametrize("bad", [0, 9, -1, 2.5, True])
def test_bits_out_of_range(bad):
    with pytest.raises(ValueError, match="bits must be an integer from 1 to 8"):
        Grid("he_uniform", bad)


def test_unknown_grid_and_symmetric_one_bit():
    with pytest.raises(ValueError, match="valid grids: he_uniform, symmetric"):
        Grid("log", 2)
    with pytest.raises(ValueError, match="needs bits >= 2"):
        Grid("symmetric", 1)


def test_symmetric_range_fixed_from_init_or_given():
    g = Grid("symmetric", 3)
    w = torch.tensor([[0.1, -0.4], [0.2, 0.3]])
    assert g.init_range(w) == pytest.approx(0.4)
    assert g.init_range(w, scale=2.0) == 2.0
    with pytest.raises(ValueError, match="positive"):
        g.init_range(w, scale=-1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_quantize_parity():
    g, m = Grid("he_uniform", 2), 0.5
    w = torch.randn(10000) * 0.4
    assert torch.equal(g.quantize(w, m), g.quantize(w.cuda(), m).cpu())
