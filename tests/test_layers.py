import copy

import pytest
import torch
import torch.nn as nn

from qatrun import estimators as E
from qatrun.layers import QuantConv2d, QuantLinear, quant_layers, quantize_model, set_estimator


def net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 8), nn.ReLU(), nn.Linear(8, 3)
    )


@pytest.mark.parametrize("name", ["tanh", "ste", "pwl", "custom"])
def test_backward_is_g_times_upstream_exactly(name):
    params = {"shape": lambda u: 1 + 0.5 * torch.cos(2 * torch.pi * u)} if name == "custom" else {}
    est = E.create(name, bits=2, **params)
    model = net()
    layers = dict(quantize_model(model, est))
    conv = layers["0"]
    x = torch.randn(5, 1, 6, 6)
    # Capture the upstream gradient reaching Q(w) through a hook on the quantized weight.
    captured = {}
    wq = conv.quantized_weight()
    wq.register_hook(lambda g: captured.setdefault("up", g))
    out = conv._conv_forward(x, wq, conv.bias)
    out.pow(2).sum().backward()
    expected = est.grad(conv.weight.detach(), conv.m) * captured["up"]
    assert torch.equal(conv.weight.grad, expected)
    assert torch.equal(wq.detach(), est.grid.quantize(conv.weight.detach(), conv.m))


def test_ewgs_backward_uses_upstream_sign():
    est = E.create("ewgs", bits=2, delta=0.5)
    lin = dict(quantize_model(nn.Sequential(nn.Linear(6, 4), nn.Linear(4, 2)), est))["0"]
    x = torch.randn(3, 6)
    wq = lin.quantized_weight()
    cap = {}
    wq.register_hook(lambda g: cap.setdefault("up", g))
    (x @ wq.t()).sin().sum().backward()
    assert torch.equal(lin.weight.grad, est.grad(lin.weight.detach(), lin.m, cap["up"]) * cap["up"])


def test_forward_equals_float_layer_on_quantized_weights():
    est = E.create("tanh", bits=2)
    ref = net()
    model = copy.deepcopy(ref)
    quantize_model(model, est)
    x = torch.randn(4, 1, 6, 6)
    with torch.no_grad():
        for (_, q), (_, f) in zip(quant_layers(model), [("0", ref[0]), ("3", ref[3])]):
            f.weight.copy_(est.grid.quantize(q.weight, q.m))
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)


def test_quantize_model_skips_classifier_and_keeps_biases():
    model = net()
    before = copy.deepcopy(model.state_dict())
    layers = quantize_model(model, E.create("tanh", bits=2))
    assert [n for n, _ in layers] == ["0", "3"]
    assert isinstance(model[0], QuantConv2d) and isinstance(model[3], QuantLinear)
    assert type(model[5]) is nn.Linear  # classifier left float
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), k  # nothing re-drawn without reinit
    assert set(after) - set(before) == {"0.wq.qrange", "3.wq.qrange"}  # each layer's range, in its quantizer


def test_quantize_model_explicit_skip_and_reinit():
    model = net()
    bias0 = model[0].bias.detach().clone()
    layers = quantize_model(model, E.create("ste", bits=2), skip=["3", "5"], reinit=True,
                            generator=torch.Generator().manual_seed(0))
    assert [n for n, _ in layers] == ["0"]
    m = layers[0][1].m
    assert m == pytest.approx((6 / 9) ** 0.5)
    assert model[0].weight.abs().max() <= m and model[0].weight.abs().max() > 0.8 * m
    assert torch.equal(model[0].bias, bias0)  # biases untouched
    assert type(model[3]) is nn.Linear
    with pytest.raises(ValueError, match="not modules of the model"):
        quantize_model(net(), E.create("ste", bits=2), skip=["nope"])


def test_symmetric_grid_scale_fixed_at_creation():
    model = net()
    est = E.create("ste", bits=3, grid="symmetric")
    layers = dict(quantize_model(model, est))
    m0 = layers["0"].m
    assert m0 == pytest.approx(float(model[0].weight.detach().abs().max()))
    with torch.no_grad():
        model[0].weight.mul_(3)
    assert layers["0"].m == m0  # no scale moves during training


def test_set_estimator_for_twin():
    model = net()
    quantize_model(model, E.create("tanh", bits=2))
    set_estimator(model, E.create("ste", bits=2))
    assert all(l.estimator.name == "ste" for _, l in quant_layers(model))
    with pytest.raises(ValueError, match="grid differs"):
        set_estimator(model, E.create("ste", bits=4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_layer_parity():
    """Under precision=fp32's meaning on CUDA (qatrun.device: IEEE fp32, no TF32 in cuDNN convolutions;
    TF32 misses this tolerance on every seed)."""
    from qatrun.device import restore_fp32_precision, set_fp32_precision

    before = set_fp32_precision()
    try:
        model = net()
        quantize_model(model, E.create("tanh", bits=2))
        x = torch.randn(4, 1, 6, 6)
        cuda = copy.deepcopy(model).cuda()
        model(x).sum().backward()
        cuda(x.cuda()).sum().backward()
        torch.testing.assert_close(cuda[0].weight.grad.cpu(), model[0].weight.grad, rtol=1e-4, atol=1e-5)
    finally:
        restore_fp32_precision(before)
