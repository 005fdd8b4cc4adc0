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


# The two reduced sequences, by their definitions (plain Python, on exact sequences: no level repeated twice
# in a row).


def _rewrite_squares(seq, rng=None):
    """The authors' rule as stated: rewrite an x-y-x-y to x-y until none is left; at the leftmost one,
    or with ``rng`` at a random one (the result must not depend on the choice)."""
    s = list(seq)
    while True:
        hits = [i for i in range(len(s) - 3) if s[i] == s[i + 2] and s[i + 1] == s[i + 3]]
        if not hits:
            return s
        i = rng.choice(hits) if rng is not None else hits[0]
        del s[i + 2 : i + 4]


def _compress_stream(seq):
    """The streaming form the tracker implements: drop S[-1] instead of appending c when S + c ends x-y-x-y."""
    s = [seq[0]]
    for c in seq[1:]:
        if len(s) >= 3 and s[-1] == s[-3] and c == s[-2]:
            s.pop()
        else:
            s.append(c)
    return s


def _backtrack(seq):
    """qatrun's earlier rule: a return to the level left at the last appended change pops it; no chaining."""
    s, can_pop = [seq[0]], False
    for c in seq[1:]:
        if can_pop and len(s) >= 2 and c == s[-2]:
            s.pop()
            can_pop = False
        else:
            s.append(c)
            can_pop = True
    return s


def test_shifted_timing_exact_error():
    # a changes at 3 and 7, b at 4 and 9: same sequence 0-1-2, error (1 + 2) / 2 = 1.5
    a = _seq({3: 1, 7: 2}, 0, 12)
    b = _seq({4: 1, 9: 2}, 0, 12)
    m = _track([a], [b]).compute()
    assert _val(m, "sequence_agreement") == 1.0
    assert _val(m, "sequence_agreement_compressed") == 1.0
    assert _val(m, "sequence_agreement_backtrack") == 1.0
    assert _val(m, "changepoint_error") == 1.5
    assert _val(m, "changepoint_error_compressed") == 1.5
    assert _val(m, "changepoint_error_backtrack") == 1.5
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
    assert _val(m, "sequence_agreement_backtrack") == pytest.approx(1 / 3)
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
    # 0-1-2-1 vs 0-2-1-2: same multiset of levels, different order (backtrack: 0-1-2 vs 0-2-1)
    a = [0, 1, 2, 1]
    b = [0, 2, 1, 2]
    m = _track([a], [b]).compute()
    assert _val(m, "sequence_agreement") == 0.0
    assert _val(m, "sequence_agreement_compressed") == 0.0
    assert _val(m, "sequence_agreement_backtrack") == 0.0


def test_abab_vs_ab_compressed_agree():
    a = _seq({2: 1, 4: 0, 6: 1}, 0, 10)  # 0-1-0-1
    b = _seq({3: 1}, 0, 10)              # 0-1
    m = _track([a], [b]).compute()
    assert _val(m, "sequence_agreement") == 0.0
    assert _val(m, "sequence_agreement_compressed") == 1.0  # 0-1-0-1 -> 0-1
    assert _val(m, "sequence_agreement_backtrack") == 1.0  # 0-1-0 pops to 0, then 0-1
    # compressed counts: a: 0,0,1,1,2,2,1,... (0-1, 0-1-0, drop) b: 0,0,0,1,...; |diff| = 1 at steps
    # 2, 4, 5 -> 3 / 1; backtrack counts: a: 0,0,1,1,0,0,1,...: |diff| = 1 at steps 2, 4, 5 as well
    assert _val(m, "changepoint_error_compressed") == 3.0
    assert _val(m, "changepoint_error_backtrack") == 3.0
    assert math.isnan(_val(m, "changepoint_error"))
    assert _val(m, "oscillations_a") == 2 and _val(m, "oscillations_b") == 0
    assert _val(m, "oscillating_fraction_a") == 1.0 and _val(m, "oscillating_fraction_b") == 0.0
    assert _val(m, "changes_a") == 3 and _val(m, "changes_b") == 1


def test_aba_vs_a_agree_only_under_backtrack():
    a = _seq({2: 3, 5: 0}, 0, 8)  # 0-3-0
    b = [0] * 8
    m = _track([a], [b]).compute()
    assert _val(m, "sequence_agreement") == 0.0
    assert _val(m, "sequence_agreement_compressed") == 0.0  # the authors' rule keeps a-b-a
    assert math.isnan(_val(m, "changepoint_error_compressed"))  # no agreeing weight
    assert _val(m, "sequence_agreement_backtrack") == 1.0  # a return undoes the change: 0-3-0 -> 0
    assert math.isnan(_val(m, "changepoint_error_backtrack"))  # agrees, but no change points left
    assert _val(m, "oscillations_a") == 1


def test_backtrack_undos_do_not_chain():
    # backtrack: 0-1-2-1-0 -> 0-1-0 (the 2-1 pop cannot be followed by a second pop)
    a = [0, 1, 2, 1, 0]
    b = [0, 1, 1, 1, 0]  # 0-1-0: backtrack 0
    c = [0, 0, 0, 0, 0]  # 0
    m = _track([a, a], [b, c]).compute()
    assert _val(m, "sequence_agreement") == 0.0
    assert _val(m, "sequence_agreement_backtrack") == 0.0  # 0-1-0 (a) vs 0 (b pops) and vs 0
    assert _val(m, "sequence_agreement_compressed") == 0.0  # no x-y-x-y: 0-1-2-1-0 vs 0-1-0 and vs 0
    d = [0, 1, 2, 2, 2]  # 0-1-2
    e = [0, 1, 2, 1, 2]  # 0-1-2-1-2 -> 0-1-2 (backtrack: pop then append; compressed: 1-2-1-2 -> 1-2)
    m = _track([d], [e]).compute()
    assert _val(m, "sequence_agreement_backtrack") == 1.0
    assert _val(m, "sequence_agreement_compressed") == 1.0
    assert _val(m, "oscillations_b") == 2


# (exact sequence of run a, of run b, agree under the authors' rule, agree under backtrack); one level per
# step. Letters: a=0, b=1, c=2.
_RULE_CASES = [
    ([0, 1, 0, 1], [0, 1], True, True),                    # a-b-a-b vs a-b
    ([0, 1, 0], [0], False, True),                         # a-b-a stays; backtrack pops it to a
    ([0, 1, 0, 1, 0, 1], [0, 1], True, True),              # two rewrites: a-b-a-b-a-b -> a-b-a-b -> a-b
    ([0, 1, 0, 1, 0], [0, 1, 0], True, True),              # a-b-a-b-a -> a-b-a (backtrack: both a)
    ([0, 1, 0, 1, 0], [0], False, True),
    ([0, 1, 0, 1, 2, 1, 2], [0, 1, 2], True, True),        # the rewrites overlap (one pass leaves a-b-c-b-c)
    ([0, 1, 0, 2, 0, 2], [0, 2], False, True),             # a-c-a-c -> a-c leaves a-b-a-c; backtrack: a-c
    ([0, 1, 0, 2, 0, 2], [0, 1, 0, 2], True, True),
    ([0, 1, 2, 0, 1, 2], [0, 1, 2], False, False),         # a period-3 cycle: nothing to collapse
    ([2, 0, 1, 0, 1, 2, 0, 2], [2, 0, 1, 2, 0, 2], True, True),  # a drop, then appends (c-a-b-c-a-c)
    ([0, 1, 2, 1, 0, 1], [0, 1, 2, 1, 0, 1], True, True),  # identical
    ([0, 1, 2, 1, 2, 1, 0], [0, 1, 2, 1, 0], True, True),  # b-c-b-c-b -> b-c-b (backtrack: a-b-a both)
    ([0, 1, 2, 1], [0, 1], False, True),                   # a-b-c-b stays; backtrack pops c
]


def _agree_one(seq_a, seq_b):
    T = max(len(seq_a), len(seq_b))
    pad = lambda s: s + [s[-1]] * (T - len(s))
    m = _track([pad(seq_a)], [pad(seq_b)]).compute()
    return _val(m, "sequence_agreement_compressed") == 1.0, _val(m, "sequence_agreement_backtrack") == 1.0


@pytest.mark.parametrize("case", range(len(_RULE_CASES)))
def test_compressed_and_backtrack_hand_cases(case):
    a, b, compressed, backtrack = _RULE_CASES[case]
    assert (_rewrite_squares(a) == _rewrite_squares(b)) == compressed  # the definition
    assert (_backtrack(a) == _backtrack(b)) == backtrack
    assert _agree_one(a, b) == (compressed, backtrack)
    assert _agree_one(b, a) == (compressed, backtrack)


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
    from qatrun.metrics.seqhash import _BASES, _PRIMES

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
    """Pure-Python metrics from full per-weight histories (lists of levels at each step). The compressed
    sequence is the authors' rewriting of the exact one (``_rewrite_squares``, not its streaming form), the
    backtrack one ``_backtrack``; each rule's counting function is the length of its reduced prefix minus 1."""

    def analyse(hist):
        exact, change_steps, osc = [hist[0]], [], 0
        counts = {"compressed": [0], "backtrack": [0]}
        for t in range(1, len(hist)):
            new = hist[t]
            if new != exact[-1]:
                if len(exact) >= 2 and new == exact[-2]:
                    osc += 1
                exact.append(new)
                change_steps.append(steps[t])
            counts["compressed"].append(len(_rewrite_squares(exact)) - 1)
            counts["backtrack"].append(len(_backtrack(exact)) - 1)
        reduced = {"compressed": _rewrite_squares(exact), "backtrack": _backtrack(exact)}
        return exact, change_steps, osc, reduced, counts

    n = len(A)
    ra, rb = [analyse(h) for h in A], [analyse(h) for h in B]
    agree = err_num = err_den = 0
    rules = ("compressed", "backtrack")
    ragree, rerr_num, rerr_den = dict.fromkeys(rules, 0), dict.fromkeys(rules, 0), dict.fromkeys(rules, 0)
    ch = {"a": 0, "b": 0}
    oscs = {"a": 0, "b": 0}
    oscw = {"a": 0, "b": 0}
    for (ea, ta, oa, ca, cca), (eb, tb, ob, cb, ccb) in zip(ra, rb):
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
        for r in rules:
            if ca[r] == cb[r]:
                ragree[r] += 1
                # area between the rule's counting functions (constant on [steps[t], steps[t+1]))
                rerr_num[r] += sum(abs(cca[r][t] - ccb[r][t]) * (steps[t + 1] - steps[t])
                                   for t in range(len(steps) - 1))
                rerr_den[r] += len(ca[r]) - 1
    nan = float("nan")
    mv = [i for i in range(n) if ra[i][1] or rb[i][1]]  # changed level at least once
    frac = lambda cond, over: sum(1 for i in over if cond(i)) / len(over) if over else nan
    mover = {
        "mover_fraction": len(mv) / n,
        "mover_agreement": frac(lambda i: A[i][-1] == B[i][-1], mv),
        "mover_sequence_agreement": frac(lambda i: ra[i][0] == rb[i][0], mv),
        "quantized_agreement_untrained": frac(lambda i: A[i][-1] == A[i][0], range(n)),
        "mover_agreement_untrained": frac(lambda i: A[i][-1] == A[i][0], mv),
        "sequence_agreement_untrained": frac(lambda i: not ra[i][1], range(n)),
        "mover_sequence_agreement_untrained": frac(lambda i: not ra[i][1], mv),
    }
    out = mover | {
        "sequence_agreement": agree / n,
        "changepoint_error": err_num / err_den if err_den else nan,
        "changes_a": ch["a"],
        "changes_b": ch["b"],
        "oscillations_a": oscs["a"],
        "oscillations_b": oscs["b"],
        "oscillating_fraction_a": oscw["a"] / n,
        "oscillating_fraction_b": oscw["b"] / n,
    }
    for r in rules:
        out[f"sequence_agreement_{r}"] = ragree[r] / n
        out[f"changepoint_error_{r}"] = rerr_num[r] / rerr_den[r] if rerr_den[r] else nan
    return out


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
    # sanity: the random cases exercise agreement, disagreement and oscillation, and the rules differ
    if seed == 0:
        assert 0 < ref["sequence_agreement"] < ref["sequence_agreement_compressed"] < 1
        assert 0 < ref["sequence_agreement"] < ref["sequence_agreement_backtrack"] < 1
        assert ref["oscillations_a"] > 0
    if seed == 1:
        assert ref["sequence_agreement_compressed"] != ref["sequence_agreement_backtrack"]  # 0.46 vs 0.48


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_brute_force_small_cases_with_tiny_level_set(sparse):
    # 2 levels: every change is an oscillation candidate
    for seed in range(5):
        A, B, steps = _random_case(100 + seed, n=30, T=25, n_levels=2)
        _assert_matches(_track(A, B, steps=steps, sparse=sparse).compute(), _reference(A, B, steps))


def _random_exact(rng, n_levels, length):
    """A random exact sequence (no level twice in a row), biased towards returns to the level before."""
    s = [rng.randrange(n_levels)]
    while len(s) < length:
        c = s[-2] if len(s) >= 2 and rng.random() < 0.5 else rng.randrange(n_levels)
        if c != s[-1]:
            s.append(c)
    return s


def test_streaming_compressed_equals_rewriting_to_fixed_point():
    rng = random.Random(5)
    for _ in range(3000):
        s = _random_exact(rng, rng.choice([2, 3, 4]), rng.randrange(1, 30))
        reduced = _rewrite_squares(s)
        assert _compress_stream(s) == reduced, s
        assert _rewrite_squares(s, rng) == reduced, s  # any order of rewrites: the same fixed point
        assert _rewrite_squares(reduced) == reduced  # no x-y-x-y left
        # the streaming form never drops twice in a row, so it needs no level before S[-3]
        st, last_drop = [s[0]], False
        for c in s[1:]:
            drop = len(st) >= 3 and st[-1] == st[-3] and c == st[-2]
            assert not (drop and last_drop), s
            st = st[:-1] if drop else st + [c]
            last_drop = drop


def test_backtrack_never_separates_what_compressed_joins():
    # Backtrack is unchanged by an x-y-x-y -> x-y rewrite, so equal compressed sequences have equal
    # backtrack ones: sequence_agreement <= _compressed <= _backtrack, weight by weight.
    rng = random.Random(6)
    for _ in range(3000):
        s = _random_exact(rng, rng.choice([2, 3, 4]), rng.randrange(1, 30))
        assert _backtrack(s) == _backtrack(_rewrite_squares(s)), s


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_tracker_hashes_are_those_of_the_reduced_sequences(sparse):
    # state, not just figures: each rule's count and both hashes equal the polynomial hash of the reduced
    # sequence (so a drop or a pop really undoes the hash of the last element)
    from qatrun.metrics.seqhash import _BASES, _PRIMES

    rng = random.Random(8)
    seqs = [_random_exact(rng, rng.choice([2, 3, 5]), rng.randrange(1, 25)) for _ in range(300)]
    T = max(map(len, seqs))
    hist = [s + [s[-1]] * (T - len(s)) for s in seqs]
    st = _track(hist, hist, sparse=sparse).state
    for i, s in enumerate(seqs):
        for rule, count, hsh in (("compressed", "ccount", "chash"), ("backtrack", "bcount", "bhash")):
            red = _rewrite_squares(s) if rule == "compressed" else _backtrack(s)
            assert st[f"a.{count}"][i].item() == len(red) - 1, (rule, s)
            for j, (prime, base) in enumerate(zip(_PRIMES, _BASES)):
                h = 0
                for level in red:
                    h = (h * base + level + 1) % prime
                assert st[f"a.{hsh}"][j, i].item() == h, (rule, s)


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


def test_load_state_dict_rejects_a_state_from_before_the_authors_rule():
    z = torch.zeros(4, dtype=torch.long)
    sd = ChangePointTracker([z], [z]).state_dict()
    sd["a.chash_before"] = sd["b.chash_before"] = sd["a.chash"]  # what marks the old backtrack-as-compressed state
    with pytest.raises(ValueError, match="before the compressed rule"):
        ChangePointTracker([z], [z]).load_state_dict(sd)


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
        assert v.dtype in (torch.int16, torch.int32, torch.bool) or k in ("dist", "bdist", "cdist"), k
        per_weight += v.element_size() * v.numel() // 10
    assert per_weight == 118  # docs/metrics.md and the docstring state 118 bytes per weight


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
    assert out["sequence_agreement_compressed"].item() <= out["sequence_agreement_backtrack"].item() <= 1.0
    assert out["changes_a"].item() > 0


# ---------------------------------------------------------------------------------------------
# summaries written before the authors' compressed rule (issue #21)
# ---------------------------------------------------------------------------------------------


def test_upgrade_summary_moves_old_compressed_figures_to_backtrack():
    from qatrun.metrics.names import upgrade_summary

    old = {"steps": 100, "pair/sequence_agreement": 0.99, "pair/sequence_agreement_compressed": 0.995,
           "pair/changepoint_error": 0.8, "pair/changepoint_error_compressed": 1.9,
           "pair/sequence_agreement_compressed_untrained": 0.9, "pair/sequence_agreement_untrained": 0.95,
           "history": {"step": [0]}}
    frozen = dict(old)
    new = upgrade_summary(old)
    assert old == frozen  # a copy
    assert new == {"steps": 100, "pair/sequence_agreement": 0.99, "pair/sequence_agreement_backtrack": 0.995,
                   "pair/changepoint_error": 0.8, "pair/changepoint_error_backtrack": 1.9,
                   "pair/sequence_agreement_backtrack_untrained": 0.9, "pair/sequence_agreement_untrained": 0.95,
                   "history": {"step": [0]}}
    assert list(new)[2] == "pair/sequence_agreement_backtrack"  # in place: key order kept
    # already upgraded, or written by today's tracker: unchanged; and upgrading twice changes nothing
    assert upgrade_summary(new) == new
    today = {"pair/sequence_agreement_compressed": 0.97, "pair/sequence_agreement_backtrack": 0.98,
             "pair/changepoint_error_compressed": 1.0, "pair/changepoint_error_backtrack": 2.0}
    assert upgrade_summary(today) == today
    assert upgrade_summary({"steps": 5, "estimator": "ste"}) == {"steps": 5, "estimator": "ste"}  # no tracker


def test_upgrade_summary_on_a_committed_summary():
    import json
    from pathlib import Path

    from qatrun.metrics.names import upgrade_summary

    root = Path(__file__).resolve().parents[1] / "results" / "mnist" / "runs"
    s = None
    for path in sorted(root.glob("**/summary.json")):  # the first written before issue #21
        try:
            s = json.loads(path.read_text())
        except ValueError:  # being written by a run in progress
            continue
        if "pair/sequence_agreement_backtrack" not in s:
            break
    else:
        pytest.skip("no summary written before issue #21")
    assert "pair/sequence_agreement_compressed" in s and "pair/changepoint_error_compressed" in s
    u = upgrade_summary(s)
    assert u["pair/sequence_agreement_backtrack"] == s["pair/sequence_agreement_compressed"]
    assert u["pair/changepoint_error_backtrack"] == s["pair/changepoint_error_compressed"]
    assert not any("_compressed" in k for k in u)
    rest = lambda d, part: {k: v for k, v in d.items() if part not in k}
    assert rest(u, "_backtrack") == rest(s, "_compressed")
