"""Defects that would only show on a GPU (issue 19), caught on the CPU: CUDA-only attribute typos,
graph breaks in the compiled quantized step, what fp32 means on CUDA, RNG restore on fewer GPUs,
the custom map's table copied once per device, the range buffer on the weight's device."""

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from qatrun import checkpoint
from qatrun import estimators as E
from qatrun.device import fp32_precision, restore_fp32_precision, set_fp32_precision
from qatrun.layers import quant_layers, quantize_model
from qatrun.models import build_model
from qatrun.pair import resolve_twin

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("qatrun", "scripts", "tests")


# ----------------------------------------------------------------------------------------------
# 1. Every torch.cuda.X / torch.backends.X the code names exists in the installed torch
# ----------------------------------------------------------------------------------------------


def _chain(node) -> list[str] | None:
    """``torch.cuda.a.b`` as ["torch", "cuda", "a", "b"]; None when not a plain name chain."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def torch_device_chains(source: str) -> set[tuple[str, ...]]:
    """The longest ``torch.cuda...`` / ``torch.backends...`` attribute chains in ``source``."""
    tree = ast.parse(source)
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in inner:
            parts = _chain(node)
            if parts and parts[0] == "torch" and len(parts) > 2 and parts[1] in ("cuda", "backends"):
                out.add(tuple(parts))
    return out


def _missing(parts: tuple[str, ...]) -> str | None:
    """The first name of the chain that does not resolve (None: it all does)."""
    obj = torch
    for i, name in enumerate(parts[1:], 1):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            return ".".join(parts[: i + 1])
        except Exception:  # a property whose getter refuses in this state (e.g. the legacy TF32 flags): it exists
            return None
    return None


def test_chain_scanner_finds_a_typo():
    src = "import torch\nx = torch.cuda.memoryallocated(d)\ny = torch.cuda.Event(enable_timing=True).record()\n"
    chains = torch_device_chains(src)
    assert chains == {("torch", "cuda", "memoryallocated"), ("torch", "cuda", "Event")}
    assert _missing(("torch", "cuda", "memoryallocated")) == "torch.cuda.memoryallocated"
    assert _missing(("torch", "cuda", "Event")) is None


def test_every_torch_cuda_and_backends_attribute_exists():
    """A typo in a CUDA-only line (``torch.cuda.memoryallocated``) runs nowhere on a CPU machine; this CUDA
    build of torch has every torch.cuda attribute even without a GPU, so the names can be checked here."""
    assert hasattr(torch.cuda, "max_memory_allocated")  # the CUDA build: the check below means something
    seen, missing = 0, []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            for parts in torch_device_chains(path.read_text()):
                seen += 1
                bad = _missing(parts)
                if bad:
                    missing.append(f"{path.relative_to(ROOT)}: {bad}")
    assert seen > 10  # the scan reaches the CUDA lines (bench memory, timing, the fp32 setting)
    assert not missing, "attributes that do not exist in torch " + torch.__version__ + ":\n" + "\n".join(missing)


# ----------------------------------------------------------------------------------------------
# 2. The compiled quantized step is one graph for every estimator and twin
# ----------------------------------------------------------------------------------------------

PARAMS = {"custom": dict(shape="qatrun.shapes.cosine", resolution=4096), "qnet": dict(beta=5.0),
          "dsq_anneal": dict(k=None, k_end=22.0, schedule="geometric")}


def _estimator(name):
    return E.create(name, bits=1 if name == "approxsign" else 2, **PARAMS.get(name, {}))


def _twins():
    """The twins the pair builds (pair.resolve_twin, SGD: warped), clipped ones included."""
    sine = E.create("custom", bits=2, shape="qatrun.shapes.sine", resolution=4096)
    cosine = E.create("custom", bits=2, shape="qatrun.shapes.cosine", resolution=4096)
    return {
        "twin:ste_of_tanh": resolve_twin("full", _estimator("tanh"), True).estimator,
        "twin:clipped_ste_of_sine": resolve_twin("full", sine, True).estimator,
        "twin:clipped_custom_of_sine": resolve_twin("full", sine, True, twin_estimator=cosine).estimator,
    }


def _cases():
    return {**{n: None for n in E.names()}, **{n: None for n in _twins()}}


@pytest.mark.slow  # 2-5 s per estimator
@pytest.mark.parametrize("name", list(_cases()))
def test_compiled_quantized_step_has_no_graph_break(name):
    """What ``pair.compile_step`` compiles (the quantized model's forward, whose autograd.Function backward
    dynamo traces with it): one graph, no break, for every registered estimator and the warped twins.
    A host sync in ``g`` (``torch.isfinite(...).all()`` in the custom shape) split it at every layer."""
    est = _twins()[name] if name.startswith("twin:") else _estimator(name)
    if name.startswith("twin:clipped"):
        assert est.clip != (-1.0, 1.0)  # the clipped path (alpha between [-m, m] and the clip) is exercised
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10)
    quantize_model(model, est)
    est.bind_progress(torch.zeros(()))  # as the pair does for an annealed estimator
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))

    torch._dynamo.reset()
    explained = torch._dynamo.explain(lambda a, b: F.cross_entropy(model(a), b))(x, y)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), \
        [str(r.reason)[:200] for r in explained.break_reasons]

    # The backward traces too (aot_eager: dynamo + AOT autograd, no codegen), with eager's gradients.
    F.cross_entropy(model(x), y).backward()
    eager = [layer.weight.grad.clone() for _, layer in quant_layers(model)]
    model.zero_grad(set_to_none=True)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    F.cross_entropy(compiled(x), y).backward()
    for g0, (_, layer) in zip(eager, quant_layers(model)):
        torch.testing.assert_close(layer.weight.grad, g0)
    torch._dynamo.reset()


def test_custom_shape_validated_once_not_in_the_backward():
    calls = []

    def shape(u):
        calls.append(u.numel())
        return 1 + 0.5 * torch.cos(2 * torch.pi * u)

    est = E.create("custom", bits=2, shape=shape, resolution=64)
    assert calls == [64]  # construction: the table's nodes
    g = est.grad(torch.linspace(-0.5, 0.5, 11), 0.5)
    assert calls == [64, 11] and torch.isfinite(g).all()
    with pytest.raises(ValueError, match="NaN or Inf"):  # a bad shape is still refused, at construction
        E.create("custom", bits=2, shape=lambda u: u / 0 * 0, resolution=64)


def test_clipped_twin_alpha_fixed_at_construction(monkeypatch):
    sine = E.create("custom", bits=2, shape="qatrun.shapes.sine", resolution=4096)
    twin = resolve_twin("full", sine, True).estimator
    w = torch.linspace(-0.6, 0.6, 101)
    before = twin.grad(w, 0.5)
    outside = (w.abs() > 0.5) & (w >= twin.clip[0] * 0.5) & (w <= twin.clip[1] * 0.5)
    assert outside.any() and torch.equal(before[outside], torch.full_like(before[outside], twin.alpha))

    def no_alpha(self):
        raise AssertionError("alpha recomputed in the backward")

    monkeypatch.setattr(type(twin), "alpha", property(no_alpha))
    assert torch.equal(twin.grad(w, 0.5), before)


# ----------------------------------------------------------------------------------------------
# 3. precision=fp32 on CUDA means IEEE fp32
# ----------------------------------------------------------------------------------------------


def test_set_fp32_precision_turns_tf32_off_and_restores():
    before = set_fp32_precision()
    try:
        assert fp32_precision() == {"conv": "ieee", "matmul": "ieee"}
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        set_fp32_precision("tf32")
        assert fp32_precision() == {"conv": "tf32", "matmul": "tf32"}
        with pytest.raises(ValueError, match="ieee, tf32"):
            set_fp32_precision("fp16")
    finally:
        restore_fp32_precision(before)
    assert torch.backends.cudnn.conv.fp32_precision == before["conv"]
    assert torch.backends.cuda.matmul.fp32_precision == before["matmul"]


# ----------------------------------------------------------------------------------------------
# 7. A resume on fewer GPUs restores the RNG states of the GPUs that exist
# ----------------------------------------------------------------------------------------------


def test_restore_rng_on_fewer_gpus(monkeypatch):
    restored = {}

    def fake_set(state, device=0):
        if device >= 2:  # what the real one does for a device this machine lacks
            raise IndexError(f"device {device} of 2")
        restored[device] = state.clone()

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_rng_state", fake_set)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", fake_set)
    saved = [torch.full((16,), i, dtype=torch.uint8) for i in range(4)]  # a checkpoint from a 4-GPU machine
    cpu = torch.get_rng_state()
    checkpoint.restore_rng({"rng": {"cpu": cpu, "cuda": saved}})
    assert sorted(restored) == [0, 1]
    assert all(torch.equal(restored[i], saved[i]) for i in (0, 1))
    assert torch.equal(torch.get_rng_state(), cpu)


# ----------------------------------------------------------------------------------------------
# 9. The custom map's fp64 table goes to a device once
# ----------------------------------------------------------------------------------------------


def test_custom_table_copied_once_per_device(monkeypatch):
    est = E.create("custom", bits=2, shape="qatrun.shapes.cosine", resolution=4096)
    n = 4096 + 1
    copies = []
    real_to = torch.Tensor.to

    def counting_to(self, *args, **kwargs):
        out = real_to(self, *args, **kwargs)
        if self.numel() == n and out.device != self.device:
            copies.append(out.device)
        return out

    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    f_meta = torch.empty(1000, device="meta")
    outs = [est.antiderivative(f_meta) for _ in range(3)]
    assert copies == [torch.device("meta")]  # one copy, then the cached table
    assert all(o.device.type == "meta" and o.shape == (1000,) for o in outs)
    assert est.table(torch.device("meta")) is est.table(torch.device("meta"))
    f = torch.rand(1000, dtype=torch.float64)
    a, b = est.antiderivative(f), est.antiderivative(f)
    assert torch.equal(a, b) and copies == [torch.device("meta")]  # the CPU table is the original: no copy
    w = torch.linspace(-0.5, 0.5, 1001)
    assert torch.equal(E.warp(w, 0.5, est, None), E.warp(w, 0.5, est, None))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_custom_table_cached():
    est = E.create("custom", bits=2, shape="qatrun.shapes.cosine")
    f = torch.rand(10000, dtype=torch.float64)
    ptrs = {est.table(f.cuda().device).data_ptr() for _ in range(3)}
    assert len(ptrs) == 1
    torch.testing.assert_close(est.antiderivative(f.cuda()).cpu(), est.antiderivative(f), rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------
# 11. The range buffer is created on the weight's device
# ----------------------------------------------------------------------------------------------


def test_qrange_buffer_on_the_weights_device():
    with torch.device("meta"):
        model = build_model("small_cnn", num_classes=10)
    layers = quantize_model(model, E.create("tanh", bits=2))
    assert layers and all(layer.weight.device.type == "meta" for _, layer in layers)
    assert {layer.wq.qrange.device.type for _, layer in layers} == {"meta"}
    cpu = build_model("small_cnn", num_classes=10)
    quantize_model(cpu, E.create("tanh", bits=2))
    assert all(float(layer.wq.qrange) == layer.m for _, layer in quant_layers(cpu))  # fp64: the float exactly


# ----------------------------------------------------------------------------------------------
# The compiled quantized step against the compiled float step: no layout copy of its own
# ----------------------------------------------------------------------------------------------


def _activation_copies(model, x, y) -> set:
    """Shapes of the 4-d tensors ``aten::copy_`` copies in one compiled (inductor) step of ``model``."""
    from torch.profiler import ProfilerActivity, profile

    step = torch.compile(model)
    for _ in range(2):  # compile, then a warm step
        F.cross_entropy(step(x), y).backward()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        F.cross_entropy(step(x), y).backward()
    return {tuple(e.input_shapes[0]) for e in prof.key_averages(group_by_input_shape=True)
            if e.key == "aten::copy_" and e.input_shapes and len(e.input_shapes[0]) == 4 and e.input_shapes[0][0] == 8}


@pytest.mark.slow
def test_compiled_quantized_step_copies_no_more_than_the_float_step(monkeypatch):
    """torch.compile (inductor) chose its own layout for the computed Q(w), which the float weight (a graph
    input) never gets: on the CPU the MNIST CNN's first conv (one input channel) then copied its activation
    gradient in every backward. Q(w) keeps the weight's strides, so the quantized step copies what the float
    step copies."""
    monkeypatch.setenv("KINETO_LOG_LEVEL", "5")
    torch._dynamo.reset()
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    torch.manual_seed(0)
    plain = build_model("small_cnn", num_classes=10)
    torch.manual_seed(0)
    quant = build_model("small_cnn", num_classes=10)
    quantize_model(quant, E.create("tanh", bits=2), skip=["fc1", "fc2"])  # the convolutions, as the runs do
    float_copies = _activation_copies(plain, x, y)
    quant_copies = _activation_copies(quant, x, y)
    torch._dynamo.reset()
    assert quant_copies <= float_copies, f"copies of the quantized step only: {quant_copies - float_copies}"


def _compiled_vs_eager(device: str, precision: str) -> tuple[float, float]:
    """One training step of the quantized small CNN in channels_last, eager then ``torch.compile``d, same
    weights and batch: the largest relative error of the logits and of any parameter's gradient."""
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10)
    quantize_model(model, _estimator("tanh"))
    model = model.to(device).to(memory_format=torch.channels_last)
    x = torch.randn(32, 1, 28, 28, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (32,), device=device)

    def step(m):
        m.zero_grad(set_to_none=True)
        with torch.autocast(device, torch.bfloat16, enabled=precision == "bf16"):
            logits = m(x).float()
        F.cross_entropy(logits, y).backward()
        return logits.detach(), [p.grad.detach().clone() for p in model.parameters()]

    def rel(a, b):
        return float((a - b).norm() / b.norm().clamp_min(1e-12))

    torch._dynamo.reset()
    logits, grads = step(model)
    logits_c, grads_c = step(torch.compile(model))
    return rel(logits_c, logits), max(rel(gc, g) for gc, g in zip(grads_c, grads))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision,tol", [("fp32", 1e-3), ("bf16", 3e-2)])
def test_cuda_compiled_channels_last_step_matches_eager(precision, tol):
    """compile=true with channels_last on the GPU: Inductor may lay the computed weight Q(w) out its own
    way, and the weight quantizer (``qatrun.quantizers.base.weight_forward``) pins it to the float weight's strides (``qatrun/layers.py``); the compiled
    step's logits and every gradient equal the eager step's (IEEE fp32: TF32 off, as in training)."""
    prev = set_fp32_precision()
    try:
        logit_err, grad_err = _compiled_vs_eager("cuda", precision)
    finally:
        restore_fp32_precision(prev)
    assert logit_err < tol and grad_err < tol, (logit_err, grad_err)


def test_determinism_is_switched_off_again_for_the_next_job():
    """A sweep's jobs share one process: after a deterministic=true job, a deterministic=false one runs
    without torch's deterministic mode (on CUDA it kept it, with torch's own adaptive pooling, whose
    backward raises there)."""
    from qatrun.train import set_determinism

    try:
        set_determinism(True)
        assert torch.are_deterministic_algorithms_enabled()
        set_determinism(False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
