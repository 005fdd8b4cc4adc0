"""Exactness of every map that lands in a weight dtype (arXiv 2405.05171; docs/method.md, "The twin"):
``Q(M(w)) == Q(w)`` and ``Q(M_B^{-1}(M_A(w))) == Q(w)`` bit for bit, on dense combs of representable
values (nextafter steps) around every rounding threshold and around every place where the dtype's
own rounding flips the level, over many fan-ins and bit widths; and the pair's step-0 invariants for
every combination of the registry's estimators that has a mirror map."""

import math

import pytest
import torch

from qatrun import estimators as E
from qatrun.pair import Pair, build_run, resolve_twin


def asymmetric(u):
    """Not symmetric on its bin: M moves the clipping edges."""
    return 0.3 + 1.4 * u


# Test parameters for every registered estimator; a newly registered one must be added here.
ZOO = {
    "ste": [{}],
    "pwl": [{"alpha": 0.6}],
    "tanh": [{"k": 5.5}, {"k": 2.5}],
    "custom": [{"shape": "qatrun.shapes.cosine"}, {"shape": asymmetric}],
    "qnet": [{"beta": 5.0}],
    "dsq_anneal": [{"k": 5.5, "k_end": 22.0, "schedule": "geometric"}],
    "approxsign": [{}],
    "ewgs": [{"delta": 0.2}],
}
FAN_INS = [1, 2, 3, 5, 9, 27, 72, 100, 288, 576, 999, 1152, 1600, 2304, 4608, 12345]
TIE = (2, 1152, -8.60318927e-09)  # bits, fan_in, w: (w + m) / Delta lands on x.5 in fp32


def zoo(bits):
    out = []
    for name, variants in ZOO.items():
        for p in variants:
            if name == "approxsign" and bits != 1:
                continue
            out.append(E.create(name, bits=bits, **p))
    return out


def mapped_zoo(bits):
    """Every estimator with a mirror map: in the class, or near it through its ``reference()``."""
    out = []
    for est in zoo(bits):
        try:
            out.append((est, est.reference()))
        except E.NotInClassError:
            pass
    return out


def comb(grid, m, dtype, steps=40):
    """``steps`` representable values either side of every threshold, every level-flip point of
    ``dtype`` and both clipping edges (plus the ends of the bins)."""
    lo, hi = grid.level_bounds(m, dtype)
    anchors = torch.cat([grid.thresholds(m).to(dtype), lo[1:], hi[:-1], torch.tensor([-m, m]).to(dtype),
                         grid.levels(m).to(dtype)])
    up, down, out = anchors.clone(), anchors.clone(), [anchors]
    for _ in range(steps):
        up, down = torch.nextafter(up, up + 1), torch.nextafter(down, down - 1)
        out += [up, down]
    return torch.cat(out).sort().values


def test_every_registered_estimator_is_covered():
    assert set(ZOO) == set(E.names())


def test_the_reported_tie_is_fixed():
    bits, fan_in, w = TIE
    est, m = E.create("tanh", bits=bits), math.sqrt(6 / fan_in)
    w = torch.tensor([w], dtype=torch.float32)
    naive = est.mirror64(w.double(), m).float()  # M(w) rounded to fp32 ...
    assert est.grid.position(naive, m).item() == 1.5 and est.grid.level_index(naive, m).item() == 2  # ... ties up
    assert est.grid.level_index(est.mirror(w, m), m).item() == est.grid.level_index(w, m).item() == 1


def test_level_bounds_are_exact():
    """Each level owns [lo, hi]: lo and hi are at the level, their outer neighbours are not."""
    for bits in (1, 2, 5, 8):
        est = E.create("ste", bits=bits)
        for fan_in in (9, 1152, 4608):
            m = math.sqrt(6 / fan_in)
            lo, hi = est.grid.level_bounds(m, torch.float32)
            j = torch.arange(est.grid.n_levels)
            assert torch.equal(est.grid.level_index(lo[1:], m), j[1:])
            assert torch.equal(est.grid.level_index(hi[:-1], m), j[:-1])
            assert torch.equal(est.grid.level_index(torch.nextafter(lo[1:], lo[1:] - 1), m), j[:-1])
            assert torch.equal(est.grid.level_index(torch.nextafter(hi[:-1], hi[:-1] + 1), m), j[1:])


@pytest.mark.slow
@pytest.mark.parametrize("bits", range(1, 9))
def test_mirror_exact_on_dense_combs(bits):
    checked, fan_ins = 0, FAN_INS if bits <= 6 else FAN_INS[::3]  # 7-8 bits: 6 fan-ins (the combs are long)
    for est, ref in mapped_zoo(bits):
        for fan_in in fan_ins:
            m = math.sqrt(6 / fan_in)
            w = comb(est.grid, m, torch.float32)
            M = ref.mirror(w, m)
            assert torch.equal(est.grid.level_index(M, m), est.grid.level_index(w, m)), (est, fan_in)
            assert bool((M[1:] >= M[:-1]).all()), (est, fan_in)  # still monotone
            checked += w.numel()
    assert checked >= len(fan_ins) * 4 * (2**bits - 1) * 81


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_mirror_exact_in_other_dtypes(dtype):
    for bits in (1, 2, 4):
        for est, ref in mapped_zoo(bits):
            for fan_in in (9, 288, 1152):
                m = math.sqrt(6 / fan_in)
                w = comb(est.grid, m, dtype, steps=10)
                assert torch.equal(est.grid.level_index(ref.mirror(w, m), m), est.grid.level_index(w, m))


@pytest.mark.slow
@pytest.mark.parametrize("bits", [1, 2, 4])
def test_warp_exact_for_every_pair(bits):
    """``Q(M_B^{-1}(M_A(w))) == Q(w)`` for every A, B with a mirror map; ``M_B(M_B^{-1}(y)) = y`` in fp64."""
    zoo_ = mapped_zoo(bits)
    for _, A in zoo_:
        for _, B in zoo_:
            for fan_in in (1, 9, 288, 1152, 4608):
                m = math.sqrt(6 / fan_in)
                w = comb(A.grid, m, torch.float32, steps=12)
                x = E.warp(w, m, A, B)
                assert torch.equal(A.grid.level_index(x, m), A.grid.level_index(w, m)), (A, B, fan_in)
                assert bool((x[1:] >= x[:-1]).all())
                y = A.mirror64(w.double(), m)
                assert (B.mirror64(B.inverse64(y, m), m) - y).abs().max() <= 1e-12 * m, (A, B)
            if A is B:  # M_A^{-1}(M_A(w)) = w up to one rounding
                w = torch.empty(20000).uniform_(-0.3, 0.3, generator=torch.Generator().manual_seed(bits))
                assert (E.warp(w, 0.3, A, A) - w).abs().max() <= 2 * torch.finfo(torch.float32).eps * 0.3


def test_inverse_matches_the_closed_form():
    """tanh: M is known in closed form; M^{-1} of it gives back w (fp64)."""
    est, m = E.create("tanh", bits=2, k=5.5), 0.41
    w = torch.linspace(-1.2 * m, 1.2 * m, 20001, dtype=torch.float64)
    torch.testing.assert_close(est.inverse64(est.mirror64(w, m), m), w, atol=1e-13, rtol=0)


def tiny_pair(A, twin, mode="full", seed=0, model=None):
    model = build_run("small_cnn", 10, A, seed) if model is None else model
    spec = resolve_twin(mode, A, optimizer_warps=True, twin_estimator=twin)
    return Pair(model, A, spec, optimizer="sgd", lr=0.01, steps=10, warmup_frac=0.1, metrics=("weights",),
                optimizer_options={"momentum": 0.9, "nesterov": False, "weight_decay": 0.0})


@pytest.mark.slow
@pytest.mark.parametrize("bits", [1, 2, 4])
def test_step0_invariants_for_every_pair(bits):
    """Quantized agreement exactly 1 and alignment distance exactly 0 at step 0, for every A-B pair of the
    registry with a mirror map (the small CNN: fan-ins 9 and 288; warp_init has the same init as full)."""
    zoo_ = mapped_zoo(bits)
    for A, _ in zoo_:
        model = build_run("small_cnn", 10, A, seed=bits)
        for B, _ in zoo_:
            if B.needs_progress:
                continue  # an annealed twin: the same map as its reference, covered by that one
            figs = tiny_pair(A, B, model=model).figures()
            assert figs["pair/quantized_agreement"].item() == 1.0, (A, B)
            assert figs["pair/alignment_distance"].item() == 0.0, (A, B)
