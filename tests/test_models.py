"""The model registry: small CNN, ResNet-18/50, the quantized-layer lists, batch-norm settings."""

import pytest
import torch
import torch.nn as nn

from qatrun import estimators
from qatrun.layers import QuantConv2d, default_skip, quant_layers, quantize_model
from qatrun.models import (
    MODELS,
    build_model,
    classifier_name,
    float_names,
    model_names,
    quantized_names,
)
from qatrun.models.resnet import to_torch_momentum

N_CONVS = {"resnet18": 20, "resnet50": 53}


def test_registry_names():
    assert {"small_cnn", "resnet18", "resnet50", "torchvision", "custom"} == set(model_names()) == set(MODELS)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError) as e:
        build_model("resnet51", 10)
    for name in ("small_cnn", "resnet18", "resnet50"):
        assert name in str(e.value)
    with pytest.raises(ValueError, match="no nn.Linear classifier"):
        quantized_names(nn.Conv2d(2, 2, 1))


def test_bad_option_is_value_error():
    with pytest.raises(ValueError, match="small_cnn"):
        build_model("small_cnn", 10, bn_momentum=0.9)


def test_small_cnn_shapes_and_layers():
    model = build_model("small_cnn", 10)
    x = torch.randn(5, 1, 28, 28)
    assert model(x).shape == (5, 10)
    assert model.fc1.in_features == 64 * 7 * 7
    assert quantized_names(model) == ["conv1", "conv2"]
    assert float_names(model) == ["fc1", "fc2"]
    assert classifier_name(model) == "fc2" and default_skip(model) == ["fc2"]


def test_small_cnn_options():
    model = build_model("small_cnn", 7, (3, 32, 32), width=8, hidden=16)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(ValueError, match="divisible by 4"):
        build_model("small_cnn", 10, (1, 30, 30))


def test_small_cnn_quantize_and_backward():
    model = build_model("small_cnn", 10)
    est = estimators.create("tanh", bits=2)
    layers = quantize_model(model, est, skip=float_names(model), reinit=True)
    assert [n for n, _ in layers] == ["conv1", "conv2"]
    assert type(model.fc1) is nn.Linear and type(model.fc2) is nn.Linear
    model(torch.randn(3, 1, 28, 28)).sum().backward()
    for _, layer in layers:
        assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_quantize_convs_only(name):
    torch.manual_seed(0)
    model = build_model(name, 10)
    q_names = quantized_names(model)
    n_conv = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert n_conv == N_CONVS[name] == len(q_names)
    assert float_names(model) == ["fc"] and classifier_name(model) == "fc"

    est = estimators.create("tanh", bits=2)
    layers = quantize_model(model, est, skip=float_names(model), reinit=True)
    assert [n for n, _ in layers] == q_names
    assert len(quant_layers(model)) == N_CONVS[name]
    assert all(isinstance(layer, QuantConv2d) for _, layer in layers)
    assert type(model.fc) is nn.Linear and model.fc.out_features == 10

    model.train()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 10)
    out.square().mean().backward()
    for _, layer in layers:
        assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()
    assert torch.isfinite(model.fc.weight.grad).all()
    # some quantized weight actually got a nonzero gradient through g(w)
    assert any(layer.weight.grad.abs().sum() > 0 for _, layer in layers)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_batchnorm_settings(name):
    model = build_model(name, 10, bn_momentum=0.9)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == N_CONVS[name]  # one BN per conv in torchvision's ResNets
    assert all(bn.eps == 1e-5 and bn.momentum == pytest.approx(0.1) for bn in bns)
    model = build_model(name, 10, bn_momentum=0.99)
    assert all(m.momentum == pytest.approx(0.01) for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_bn_momentum_convention():
    # Flax: running = 0.9 * running + 0.1 * batch == PyTorch momentum 0.1
    bn = build_model("resnet18", 10, bn_momentum=0.9).bn1
    x = torch.randn(4, 64, 3, 3) + 2.0
    bn.train()
    bn(x)
    expected = 0.9 * torch.zeros(64) + 0.1 * x.mean(dim=(0, 2, 3))
    torch.testing.assert_close(bn.running_mean, expected)
    for bad in (1.0, -0.1, 1.5, True):
        with pytest.raises(ValueError, match="Flax"):
            to_torch_momentum(bad)
    with pytest.raises(ValueError):
        build_model("resnet50", 10, bn_momentum=1.0)


def test_zero_init_residual():
    model = build_model("resnet18", 10, zero_init_residual=True)
    assert all((b.bn2.weight == 0).all() for b in (model.layer1[0], model.layer4[1]))
    model = build_model("resnet50", 10, zero_init_residual=True)
    assert (model.layer2[0].bn3.weight == 0).all()


# deterministic=true on CUDA: adaptive average pooling swapped for ops with a deterministic backward
@pytest.mark.parametrize("shape,out", [((4, 8, 7, 7), 1), ((4, 8, 14, 14), (7, 7)), ((2, 3, 12, 9), (4, 3)),
                                       ((2, 3, 10, 10), 3), ((2, 3, 6, 10), (None, 5))])
@pytest.mark.parametrize("channels_last", [False, True])
def test_deterministic_pooling_equals_adaptive_avg_pool(shape, out, channels_last):
    from qatrun.models.deterministic import DeterministicAdaptiveAvgPool2d

    x = torch.randn(*shape, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref, got = torch.nn.AdaptiveAvgPool2d(out)(a), DeterministicAdaptiveAvgPool2d(out)(b)
    assert got.shape == ref.shape and torch.allclose(got, ref, rtol=0, atol=1e-12)
    w = torch.randn_like(ref)
    (ref * w).sum().backward()
    (got * w).sum().backward()
    assert torch.allclose(b.grad, a.grad, rtol=0, atol=1e-12)


def test_deterministic_pooling_swaps_resnet_pool_only_for_deterministic_cuda_runs():
    from qatrun.models.deterministic import DeterministicAdaptiveAvgPool2d, deterministic_pooling
    from qatrun.spec import build as build_spec
    from qatrun.train import pair_from_spec
    from tests.conftest import make_cfg

    torch.manual_seed(0)
    model = build_model("resnet18", 10, input_shape=(3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    before = model(x)
    assert deterministic_pooling(model) == ["avgpool"] and isinstance(model.avgpool, DeterministicAdaptiveAvgPool2d)
    assert torch.allclose(model(x), before, rtol=0, atol=1e-5)
    assert deterministic_pooling(model) == []  # nothing left to swap
    # A CPU run, deterministic or not, keeps torch's layer: its numbers stay those of every earlier CPU run.
    cfg = make_cfg("model=resnet18", "dataset=synthetic", "dataset.image_size=32", "dataset.num_classes=10",
                   "device=cpu", "deterministic=true", tiny=False)
    pair = pair_from_spec(build_spec(cfg), torch.device("cpu"), 2)
    assert all(type(m.avgpool) is torch.nn.AdaptiveAvgPool2d for m in pair.models)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_deterministic_resnet_run_trains_and_repeats(tmp_path):
    """A deterministic ResNet-18 run on the GPU takes its steps (torch alone refuses the pool's backward)
    and gives the same summary twice."""
    from qatrun.train import train
    from tests.conftest import make_cfg

    args = ("model=resnet18", "dataset=synthetic", "dataset.image_size=32", "dataset.num_classes=10",
            "dataset.batch_size=32", "dataset.eval_batch_size=32", "dataset.length=256", "dataset.test_length=64",
            "device=cuda", "deterministic=true", "trainer.max_steps=4", "trainer.log_every=2", "trainer.eval_every=4",
            "trainer.progress=false")
    try:
        a = train(make_cfg(*args, tiny=False), tmp_path / "a")
        train(make_cfg(*args, tiny=False), tmp_path / "b")
    finally:
        torch.use_deterministic_algorithms(False)
    assert a["steps"] == 4 and (tmp_path / "a" / "summary.json").read_bytes() == (tmp_path / "b" / "summary.json").read_bytes()
