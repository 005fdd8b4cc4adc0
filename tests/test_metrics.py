import io
import math
import random

import numpy as np
import pytest
import torch

from qatrun.metrics import ChangePointTracker, FunctionAgreement, function_metrics, pearson

# ---------------------------------------------------------------------------------------------
# function agreement
# ---------------------------------------------------------------------------------------------


def _hand_logits():
    # 6 examples, 3 classes. Predictions: a = [0, 1, 2, 2, 1, 0], b = [0, 2, 2, 1, 1, 0]
    a = torch.tensor([[5.0, 0, 0], [0, 5, 0], [0, 0, 5], [0, 0, 5], [0, 5, 0], [5, 0, 0]])
    b = torch.tensor([[4.0, 0, 0], [0, 0, 5], [0, 0, 5], [0, 5, 0], [0, 5, 0], [5, 0, 0]])
    labels = torch.tensor([0, 1, 0, 0, 0, 0])
    return a, b, labels


def test_function_metrics_hand_computed():
    a, b, labels = _hand_logits()
    m = function_metrics(a, b, labels)
    # agree on examples 0, 2, 4, 5 -> 4/6
    assert m["inference_agreement"].item() == pytest.approx(4 / 6)
    # a correct on 0, 1, 5; b correct on 0, 5
    assert m["acc_a"].item() == pytest.approx(3 / 6)
    assert m["acc_b"].item() == pytest.approx(2 / 6)
    # both wrong: 2 (a=2, b=2 same), 3 (a=2, b=1 differ), 4 (a=1, b=1 same) -> 2/3
    assert m["incorrect_inference_agreement"].item() == pytest.approx(2 / 3)
    # diffs: ex0 1 elem of 1; ex1 two elems of 5; ex3 two of 5 -> sq = 1 + 4*25 = 101, abs = 21
    assert m["logit_mse"].item() == pytest.approx(101 / 18)
    assert m["logit_mad"].item() == pytest.approx(21 / 18)
    assert "loss_a" not in m and all(v.dim() == 0 for v in m.values())


def test_incorrect_agreement_nan_when_none_wrong_in_both():
    a, b, labels = _hand_logits()
    m = function_metrics(a[:2], b[:2], labels[:2])  # ex 1: only b is wrong
    assert math.isnan(m["incorrect_inference_agreement"].item())
    assert m["inference_agreement"].item() == pytest.approx(0.5)


def test_function_agreement_batches_equal_one_shot():
    g = torch.Generator().manual_seed(0)
    n, c = 103, 7
    a = torch.randn(n, c, generator=g)
    b = a + 0.7 * torch.randn(n, c, generator=g)
    labels = torch.randint(0, c, (n,), generator=g)
    la = torch.nn.functional.cross_entropy(a, labels, reduction="none")
    lb = torch.nn.functional.cross_entropy(b, labels, reduction="none")
    one = function_metrics(a, b, labels, la, lb)
    fa = FunctionAgreement()
    for i in range(0, n, 16):
        sl = slice(i, i + 16)
        fa.update(a[sl], b[sl], labels[sl], la[sl], lb[sl])
    acc = fa.compute()
    assert set(acc) == set(one) == {
        "inference_agreement", "incorrect_inference_agreement", "logit_mse", "logit_mad",
        "acc_a", "acc_b", "loss_a", "loss_b",
    }
    for k in one:
        assert acc[k].item() == pytest.approx(one[k].item(), rel=1e-12), k
    assert acc["loss_a"].item() == pytest.approx(la.double().mean().item(), rel=1e-12)
    assert acc["acc_b"].item() == pytest.approx((b.argmax(1) == labels).double().mean().item())
    assert acc["logit_mse"].item() == pytest.approx((a.double() - b.double()).square().mean().item(), rel=1e-12)


def test_function_agreement_rejects_batch_mean_loss_and_bad_shapes():
    a, b, labels = _hand_logits()
    fa = FunctionAgreement()
    with pytest.raises(ValueError, match="per-example"):
        fa.update(a, b, labels, loss_a=torch.tensor(1.0))
    with pytest.raises(ValueError):
        fa.update(a, b[:3], labels)
    assert all(math.isnan(v.item()) for v in FunctionAgreement().compute().values())


# ---------------------------------------------------------------------------------------------
# pearson
# ---------------------------------------------------------------------------------------------


def test_pearson_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = 0.3 * x + rng.normal(size=50)
    ref = np.corrcoef(x, y)[0, 1]
    assert pearson(torch.tensor(x), torch.tensor(y)) == pytest.approx(ref, abs=1e-12)
    assert pearson(list(x), list(y)) == pytest.approx(ref, abs=1e-12)
    assert pearson(torch.tensor(x, dtype=torch.float32), y) == pytest.approx(ref, abs=1e-6)
    assert pearson([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]) == pytest.approx(1.0)
    assert pearson([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)


def test_pearson_nan_cases():
    assert math.isnan(pearson([0.1, 0.1, 0.1], [1.0, 2.0, 3.0]))
    assert math.isnan(pearson([1.0, 2.0, 3.0], torch.full((3,), 0.7)))
    assert math.isnan(pearson([1.0], [2.0]))
    assert math.isnan(pearson([], []))
    with pytest.raises(ValueError):
        pearson([1.0, 2.0], [1.0, 2.0, 3.0])


# ---------------------------------------------------------------------------------------------
# change points: hand-built cases
# ---------------------------------------------------------------------------------------------


def _track(seqs_a, seqs_b, steps=None, dtype=torch.int64, device="cpu", layers=None, sparse=None):
    """seqs_*: [n_weights][n_obs] levels, observation 0 = initial; steps: the update steps."""
    A = torch.tensor(seqs_a, dtype=dtype, device=device)
    B = torch.tensor(seqs_b, dtype=dtype, device=device)
    T = A.shape[1]
    steps = list(range(T)) if steps is None else steps

    def split(col):
        if layers is None:
            return [col]
        return [p.reshape(shape) for p, shape in zip(torch.split(col, [math.prod(s) for s in layers]), layers)]

    tr = ChangePointTracker(split(A[:, 0]), split(B[:, 0]), init_step=steps[0], sparse=sparse)
    for t in range(1, T):
        tr.update(steps[t], split(A[:, t]), split(B[:, t]))
    return tr


def _seq(changes: dict[int, int], init: int, T: int) -> list[int]:
    """Level history over steps 0..T-1 from {step: new level}."""
    out, cur = [], init
    for t in range(T):
        cur = changes.get(t, cur)
        out.append(cur)
    return out


def _val(m, k):
    return m[k].item()


def test_shifted_timing_exact_error():
    # a changes at 3 and 7, b at 4 and 9: same sequence 0-1-2, error (1 + 2) / 2 = 1.5
    a = _seq({3: 1, 7: 2}, 0, 12)
    b = _seq({4: 1, 9: 2}, 0, 12)
    m = _track([a], [b]).compute()
    assert _val(m, "sequence_agreement") == 1.0
    assert _val(m, "sequence_agreement_compressed") == 1.0
    assert _val(m, "changepoint_error") == 1.5
    assert _val(m, "changepoint_error_compressed") == 1.5
    assert _val(m, "changes_a") == 2 and _val(m, "changes_b") == 2
    assert _val(m, "oscillations_a") == 0 and _val(m, "oscillating_fraction_b") == 0.0


def test_shifted_timing_with_stride():
    # observed only at steps 0, 2, 5, 8, 12: a changes seen at 5 and 8, b at 5 and 12 -> (0 + 4)/2
    steps = [0, 2, 5, 8, 12]
    a = [0, 0, 1, 2, 2]
    b = [0, 0, 1, 1, 2]
    m = _track([a], [b], steps=steps).compute()
    assert _val(m, "changepoint_error") == 2.0
    assert _val(m, "sequence_agreement") == 1.0


def test_different_sequences_and_lengths():
    T = 10
    same = _seq({2: 1}, 0, T)
    diff_level = _seq({2: 2}, 0, T)      # same length, different level
    longer = _seq({2: 1, 5: 2}, 0, T)    # one more change
    m = _track([same, same, same], [same, diff_level, longer]).compute()
    assert _val(m, "sequence_agreement") == pytest.approx(1 / 3)
    assert _val(m, "sequence_agreement_compressed") == pytest.approx(1 / 3)
    assert _val(m, "changepoint_error") == 0.0  # only weight 0 agrees, same timing
    assert _val(m, "changes_a") == 3 and _val(m, "changes_b") == 4

    # different initial levels, no changes: sequences differ
    m = _track([[1, 1, 1]], [[2, 2, 2]]).compute()
    assert _val(m, "sequence_agreement") == 0.0
    assert math.isnan(_val(m, "changepoint_error"))
    # same and no changes: agree, but no change points -> NaN error
    m = _track([[1, 1, 1]], [[1, 1, 1]]).compute()
    assert _val(m, "sequence_agreement") == 1.0 and math.isnan(_val(m, "changepoint_error"))


def test_same_levels_different_order_disagree():
    # 0-1-2-1 vs 0-2-1-1... same multiset of levels, different order
    a = [0, 1, 2, 1]
    b = [0, 2, 1, 2]
    m = _track([a], [b]).compute()
    assert _val(m, "sequence_agreement") == 0.0
    assert _val(m, "sequence_agreement_compressed") == 0.0


def test_abab_vs_ab_compressed_agree():
    a = _seq({2: 1, 4: 0, 6: 1}, 0, 10)  # 0-1-0-1
    b = _seq({3: 1}, 0, 10)              # 0-1
    m = _track([a], [b]).compute()
    assert _val(m, "sequence_agreement") == 0.0
    assert _val(m, "sequence_agreement_compressed") == 1.0
    # compressed counts: a: 0,0,1,1,0,0,1,... b: 0,0,0,1,...; |diff| = 1 at steps 2, 4, 5 -> 3 / 1
    assert _val(m, "changepoint_error_compressed") == 3.0
    assert math.isnan(_val(m, "changepoint_error"))
    assert _val(m, "oscillations_a") == 2 and _val(m, "oscillations_b") == 0
    assert _val(m, "oscillating_fraction_a") == 1.0 and _val(m, "oscillating_fraction_b") == 0.0
    assert _val(m, "changes_a") == 3 and _val(m, "changes_b") == 1


def test_aba_vs_a_compressed_agree():
    a = _seq({2: 3, 5: 0}, 0, 8)  # 0-3-0
    b = [0] * 8
    m = _track([a], [b]).compute()
    assert _val(m, "sequence_agreement") == 0.0
    assert _val(m, "sequence_agreement_compressed") == 1.0
    assert math.isnan(_val(m, "changepoint_error_compressed"))  # no compressed change points
    assert _val(m, "oscillations_a") == 1


def test_cancellations_do_not_chain():
    # 0-1-2-1-0 compresses to 0-1-0 (the 2-1 pop cannot be followed by a second pop)
    a = [0, 1, 2, 1, 0]
    b = [0, 1, 1, 1, 0]  # 0-1-0: exact sequence 0-1-0
    c = [0, 0, 0, 0, 0]  # 0
    m = _track([a, a], [b, c]).compute()
    assert _val(m, "sequence_agreement") == 0.0
    assert _val(m, "sequence_agreement_compressed") == 0.0  # 0-1-0 (a) vs 0 (b pops) and vs 0
    d = [0, 1, 2, 2, 2]  # 0-1-2
    e = [0, 1, 2, 1, 2]  # 0-1-2-1-2 -> 0-1-2 (pop then append)
    m = _track([d], [e]).compute()
    assert _val(m, "sequence_agreement_compressed") == 1.0
    assert _val(m, "oscillations_b") == 2


def test_oscillation_counts():
    seqs = [
        [0, 1, 0, 1, 0],  # 3 oscillations
        [0, 1, 2, 1, 0],  # 1 (2 -> 1)
        [0, 1, 2, 3, 3],  # 0
        [2, 2, 2, 2, 2],  # 0
    ]
    m = _track(seqs, seqs).compute()
    assert _val(m, "oscillations_a") == 4 and _val(m, "oscillations_b") == 4
    assert _val(m, "oscillating_fraction_a") == 0.5
    assert _val(m, "sequence_agreement") == 1.0
    assert _val(m, "changepoint_error") == 0.0
    assert _val(m, "changes_a") == 4 + 4 + 3


def test_layers_and_dtypes():
    # two layers of different shapes, int16 inputs: same answers as flat int64
    rng = random.Random(1)
    A = [[rng.randrange(4) for _ in range(6)] for _ in range(10)]
    Bq = [[rng.randrange(4) for _ in range(6)] for _ in range(10)]
    flat = _track(A, Bq).compute()
    lay = _track(A, Bq, dtype=torch.int16, layers=[(2, 3), (4,)]).compute()
    for k in flat:
        assert torch.equal(flat[k], lay[k]) or (flat[k].isnan() and lay[k].isnan()), k


def test_steps_must_increase():
    tr = ChangePointTracker([torch.zeros(3, dtype=torch.long)], [torch.zeros(3, dtype=torch.long)], init_step=5)
    with pytest.raises(ValueError):
        tr.update(5, [torch.zeros(3, dtype=torch.long)], [torch.zeros(3, dtype=torch.long)])
    with pytest.raises(ValueError):
        tr.update(6, [torch.zeros(2, dtype=torch.long)], [torch.zeros(3, dtype=torch.long)])


def test_hash_no_overflow_long_sequence():
    # a long oscillation-free walk: hash state must equal the exact Python polynomial hash
    from qatrun.metrics.changepoints import _BASES, _PRIMES

    rng = random.Random(3)
    levels = [rng.randrange(256)]
    for _ in range(2000):
        levels.append((levels[-1] + rng.randrange(1, 255)) % 256)
    tr = _track([levels], [levels])
    for i, (p, bse) in enumerate(zip(_PRIMES, _BASES)):
        h = 0
        for l in levels:
            h = (h * bse + l + 1) % p
        assert tr.state["a.hash"][i, 0].item() == h
    # one level different in the middle -> disagree
    other = list(levels)
    other[1000] = (other[1000] + 1) % 256 if (other[1000] + 1) % 256 not in (other[999], other[1001]) else (other[1000] + 2) % 256
    m = _track([levels], [other]).compute()
    assert _val(m, "sequence_agreement") == 0.0


# ---------------------------------------------------------------------------------------------
# change points: brute-force reference
# ---------------------------------------------------------------------------------------------


def _reference(A, B, steps):
    """Pure-Python metrics from full per-weight histories (lists of levels at each step)."""

    def analyse(hist):
        exact, change_steps, osc = [hist[0]], [], 0
        comp, can_pop, ccounts = [hist[0]], False, [0]
        for t in range(1, len(hist)):
            new = hist[t]
            if new != exact[-1]:
                if len(exact) >= 2 and new == exact[-2]:
                    osc += 1
                exact.append(new)
                change_steps.append(steps[t])
                if can_pop and len(comp) >= 2 and new == comp[-2]:
                    comp.pop()
                    can_pop = False
                else:
                    comp.append(new)
                    can_pop = True
            ccounts.append(len(comp) - 1)
        return exact, change_steps, osc, comp, ccounts

    n = len(A)
    agree = cagree = 0
    err_num = err_den = cerr_num = cerr_den = 0
    ch = {"a": 0, "b": 0}
    oscs = {"a": 0, "b": 0}
    oscw = {"a": 0, "b": 0}
    for i in range(n):
        ea, ta, oa, ca, cca = analyse(A[i])
        eb, tb, ob, cb, ccb = analyse(B[i])
        ch["a"] += len(ta)
        ch["b"] += len(tb)
        oscs["a"] += oa
        oscs["b"] += ob
        oscw["a"] += oa > 0
        oscw["b"] += ob > 0
        if ea == eb:
            agree += 1
            err_num += sum(abs(x - y) for x, y in zip(ta, tb))  # matched change points directly
            err_den += len(ta)
        if ca == cb:
            cagree += 1
            # area between the compressed counting functions (constant on [steps[t], steps[t+1]))
            cerr_num += sum(abs(cca[t] - ccb[t]) * (steps[t + 1] - steps[t]) for t in range(len(steps) - 1))
            cerr_den += len(ca) - 1
    nan = float("nan")
    mv = [i for i in range(n) if analyse(A[i])[1] or analyse(B[i])[1]]  # changed level at least once
    frac = lambda cond, over: sum(1 for i in over if cond(i)) / len(over) if over else nan
    mover = {
        "mover_fraction": len(mv) / n,
        "mover_agreement": frac(lambda i: A[i][-1] == B[i][-1], mv),
        "mover_sequence_agreement": frac(lambda i: analyse(A[i])[0] == analyse(B[i])[0], mv),
        "quantized_agreement_untrained": frac(lambda i: A[i][-1] == A[i][0], range(n)),
        "mover_agreement_untrained": frac(lambda i: A[i][-1] == A[i][0], mv),
        "sequence_agreement_untrained": frac(lambda i: not analyse(A[i])[1], range(n)),
        "mover_sequence_agreement_untrained": frac(lambda i: not analyse(A[i])[1], mv),
    }
    return mover | {
        "sequence_agreement": agree / n,
        "sequence_agreement_compressed": cagree / n,
        "changepoint_error": err_num / err_den if err_den else nan,
        "changepoint_error_compressed": cerr_num / cerr_den if cerr_den else nan,
        "changes_a": ch["a"],
        "changes_b": ch["b"],
        "oscillations_a": oscs["a"],
        "oscillations_b": oscs["b"],
        "oscillating_fraction_a": oscw["a"] / n,
        "oscillating_fraction_b": oscw["b"] / n,
    }


def _random_case(seed, n=50, T=40, n_levels=4):
    rng = random.Random(seed)

    def walk():
        h = [rng.randrange(n_levels)]
        p = rng.choice([0.05, 0.2, 0.5])
        for _ in range(T - 1):
            cur = h[-1]
            if rng.random() < p:
                if len(h) >= 2 and rng.random() < 0.5 and any(x != cur for x in h):
                    back = [x for x in h if x != cur][-1]  # oscillate back
                    cur = back
                else:
                    cur = rng.randrange(n_levels)
            h.append(cur)
        return h

    A, B = [], []
    for _ in range(n):
        a = walk()
        kind = rng.random()
        if kind < 0.4:  # same sequence, delayed timing (may cut off late changes)
            d = rng.randrange(0, 4)
            b = [a[0]] * d + a[: T - d]
        elif kind < 0.55:  # same sequence, earlier timing
            d = rng.randrange(0, 4)
            b = a[d:] + [a[-1]] * d
            b[0] = a[0]
        elif kind < 0.65:
            b = list(a)
        else:
            b = walk()
        A.append(a)
        B.append(b)
    steps = [rng.randrange(0, 3)]
    for _ in range(T - 1):
        steps.append(steps[-1] + rng.choice([1, 1, 1, 2, 5]))
    return A, B, steps


def _assert_matches(m, ref):
    assert set(m) == set(ref)
    for k, v in ref.items():
        got = m[k].item()
        if isinstance(v, float) and math.isnan(v):
            assert math.isnan(got), k
        else:
            assert got == v, (k, got, v)  # exact, not approximate


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("seed", range(8))
def test_matches_brute_force_reference(seed, sparse):
    A, B, steps = _random_case(seed)
    m = _track(A, B, steps=steps, sparse=sparse).compute()
    ref = _reference(A, B, steps)
    _assert_matches(m, ref)
    # sanity: the random cases exercise agreement, disagreement and oscillation
    if seed == 0:
        assert 0 < ref["sequence_agreement"] < ref["sequence_agreement_compressed"] < 1
        assert ref["oscillations_a"] > 0


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_brute_force_small_cases_with_tiny_level_set(sparse):
    # 2 levels: every change is an oscillation candidate
    for seed in range(5):
        A, B, steps = _random_case(100 + seed, n=30, T=25, n_levels=2)
        _assert_matches(_track(A, B, steps=steps, sparse=sparse).compute(), _reference(A, B, steps))


def test_dense_and_sparse_states_identical():
    A, B, steps = _random_case(21)
    d = _track(A, B, steps=steps, sparse=False).state_dict()
    sp = _track(A, B, steps=steps, sparse=True).state_dict()
    assert d.keys() == sp.keys()
    for k in d:
        assert torch.equal(d[k], sp[k]), k


# ---------------------------------------------------------------------------------------------
# checkpointing
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_state_dict_round_trip_mid_sequence(sparse):
    A, B, steps = _random_case(7)
    At = torch.tensor(A)
    Bt = torch.tensor(B)
    full = _track(A, B, steps=steps)
    T, half = len(steps), len(steps) // 2

    tr = ChangePointTracker([At[:, 0]], [Bt[:, 0]], init_step=steps[0], sparse=sparse)
    for t in range(1, half):
        tr.update(steps[t], [At[:, t]], [Bt[:, t]])
    buf = io.BytesIO()
    torch.save(tr.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    del tr

    # restore into a fresh tracker built from (any) init levels of the right size
    z = torch.zeros(len(A), dtype=torch.long)
    tr2 = ChangePointTracker([z], [z], sparse=sparse)
    tr2.load_state_dict(sd)
    tr3 = ChangePointTracker.from_state_dict(sd, sparse=not sparse)
    for tr_ in (tr2, tr3):
        assert tr_.last_step == steps[half - 1]
        for t in range(half, T):
            tr_.update(steps[t], [At[:, t]], [Bt[:, t]])
        got, want = tr_.compute(), full.compute()
        for k in want:
            assert torch.equal(got[k], want[k]) or (got[k].isnan() and want[k].isnan()), k
        for k, v in full.state_dict().items():
            assert torch.equal(tr_.state_dict()[k], v), k


def test_load_state_dict_rejects_wrong_size():
    z = torch.zeros(4, dtype=torch.long)
    sd = ChangePointTracker([z], [z]).state_dict()
    z5 = torch.zeros(5, dtype=torch.long)
    with pytest.raises(ValueError):
        ChangePointTracker([z5], [z5]).load_state_dict(sd)


def test_state_dtypes_are_small():
    z = torch.zeros(10, dtype=torch.long)
    tr = ChangePointTracker([z], [z])
    per_weight = 0
    for k, v in tr.state.items():
        if v.dim() == 0:
            continue
        assert v.dtype in (torch.int16, torch.int32, torch.bool) or k in ("dist", "cdist"), k
        per_weight += v.element_size() * v.numel() // 10
    assert per_weight == 94  # the README and the docstring state 94 bytes per weight


# ---------------------------------------------------------------------------------------------
# CUDA
# ---------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_reference():
    A, B, steps = _random_case(11, n=200, T=60)
    ref = _reference(A, B, steps)
    for sparse in (False, True):
        tr = _track(A, B, steps=steps, dtype=torch.int16, device="cuda", sparse=sparse)
        assert all(v.device.type == "cuda" for v in tr.state.values())
        m = tr.compute()
        assert all(v.device.type == "cuda" for v in m.values())
        _assert_matches(m, ref)
    # levels arriving from the CPU (int64) are moved to the state's device
    At, Bt = torch.tensor(A), torch.tensor(B)
    tr = ChangePointTracker([At[:, 0].cuda()], [Bt[:, 0].cuda()], init_step=steps[0])
    for t in range(1, len(steps)):
        tr.update(steps[t], [At[:, t]], [Bt[:, t]])
    _assert_matches(tr.compute(), ref)
    sd = tr.state_dict()
    assert all(v.device.type == "cpu" for v in sd.values())
    restored = ChangePointTracker.from_state_dict(sd, device="cpu")
    _assert_matches(restored.compute(), ref)
    restored_gpu = ChangePointTracker.from_state_dict(sd, device="cuda")
    assert restored_gpu.device.type == "cuda" and not restored_gpu.sparse
    _assert_matches(restored_gpu.compute(), ref)

    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 10, generator=g)
    b = a + torch.randn(300, 10, generator=g)
    y = torch.randint(0, 10, (300,), generator=g)
    cpu = function_metrics(a, b, y)
    gpu = function_metrics(a.cuda(), b.cuda(), y.cuda())
    for k in cpu:
        assert gpu[k].device.type == "cuda"
        assert gpu[k].item() == pytest.approx(cpu[k].item(), rel=1e-9, nan_ok=True), k


def test_init_rejects_bad_levels():
    ok = torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError):
        ChangePointTracker([torch.tensor([0, -1, 2])], [ok])
    with pytest.raises(ValueError):
        ChangePointTracker([ok], [torch.tensor([0, 40000, 2])])
    with pytest.raises(TypeError):
        ChangePointTracker([ok.float()], [ok])
    with pytest.raises(ValueError):
        ChangePointTracker([ok], [torch.zeros(4, dtype=torch.long)])


def test_with_grid_level_index():
    from qatrun.quant import Grid

    grid = Grid("he_uniform", 2)
    g = torch.Generator().manual_seed(0)
    shapes = [(8, 4), (6, 4, 3, 3)]
    w = [torch.randn(s, generator=g) * 0.5 for s in shapes]
    m = [grid.init_range(x) for x in w]
    lv = lambda ws: [grid.level_index(x, mi) for x, mi in zip(ws, m)]
    tr = ChangePointTracker(lv(w), lv(w))
    wa, wb = [x.clone() for x in w], [x.clone() for x in w]
    for step in range(1, 30):
        for xa, xb in zip(wa, wb):
            d = 0.05 * torch.randn(xa.shape, generator=g)
            xa += d
            xb += d + 1e-3 * torch.randn(xa.shape, generator=g)
        tr.update(step, lv(wa), lv(wb))
    out = tr.compute()
    n = sum(math.prod(s) for s in shapes)
    assert tr.numel == n
    assert 0.5 < out["sequence_agreement"].item() <= out["sequence_agreement_compressed"].item() <= 1.0
    assert out["changes_a"].item() > 0
