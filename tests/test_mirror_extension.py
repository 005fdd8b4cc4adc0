"""M outside [-m, m] (``pair.mirror_extension``; docs/method.md, "Outside [-m, m]"): ``shift`` (qatrun's default)
and ``periodic`` (the authors' remap, the bin index unclamped), against closed forms and an independent
integral of alpha / g, their inverses, the old shift formula, and the key's way from the config to the summary."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from qatrun import estimators as E
from qatrun.config import ADDED, config_diff, fingerprint, with_added
from qatrun.pair import Pair, build_run, resolve_twin
from qatrun.record import Recorder
from qatrun.spec import build as build_spec
from qatrun.summary import summarize, summary_lines
from tests.conftest import make_cfg

M = 0.41
CASES = [("tanh", {"k": 5.5}), ("tanh", {"k": 18.0, "bits": 4}), ("custom", {"shape": "qatrun.shapes.sine"}),
         ("custom", {"shape": "tests.test_mirror_extension.skewed"}), ("pwl", {"alpha": 0.6})]


def skewed(u):
    """g = 1 + u on the bin: F(f) = log((1 + f) / 1.5), alpha = 1 / log 2; M moves the clipping edges."""
    return 1 + u


def create(name, params):
    params = dict(params)
    return E.create(name, bits=params.pop("bits", 2), **params)


def outside(m, reach=3.5):
    """fp64 points on [-reach m, reach m] outside [-m, m], bin edges and thresholds included."""
    w = torch.linspace(-reach * m, reach * m, 40001, dtype=torch.float64)
    return w[w.abs() > m]


# --- closed forms -----------------------------------------------------------------------------------------
def periodic_tanh_mirror(w, m, bits, k):
    """PAPER.md's closed form M = alpha (I (i - z) + (x + sinh x cosh x) / (s Delta kt^2)) with the bin index
    i = floor((w + m) / Delta) left unclamped (numpy, written from the paper, not from qatrun)."""
    delta = 2 * m / (2**bits - 1)
    kt, e = k / m, k / (2**bits - 1)
    s = 1 / np.tanh(kt * delta / 2)
    alpha = 2 * e**2 / np.tanh(e) / (e + np.sinh(e) * np.cosh(e))
    I = 2 * (e + np.sinh(e) * np.cosh(e)) / (s * delta * kt**2)
    i = np.floor((w + m) / delta)
    x = kt * (w - (-m + (i + 0.5) * delta))
    z = (2**bits - 1) // 2
    return alpha * (I * (i - z) + (x + np.sinh(x) * np.cosh(x)) / (s * delta * kt**2))


def periodic_g(u, m, bits, k):
    """PAPER.md's tanh g, ``(Delta/2) s kt sech^2(kt (u - m_i))``, with the bin index i = floor((u + m) / Delta)
    unclamped and no clipping: the g whose bins repeat beyond [-m, m] (numpy)."""
    delta = 2 * m / (2**bits - 1)
    kt = k / m
    s = 1 / np.tanh(kt * delta / 2)
    mi = -m + (np.floor((u + m) / delta) + 0.5) * delta
    return (delta / 2) * s * kt / np.cosh(kt * (u - mi)) ** 2


def integral_mirror(m, bits, k, reach=2.5, cells=2000):
    """``(w, M(w))`` on nodes spanning ``[-reach m, reach m]``: ``M(w) = c + alpha * integral_c^w du / g(u)``
    (PAPER.md) with g periodic and unclamped and ``alpha = Delta / integral_bin du / g``, both by the
    composite Simpson rule (``cells`` cells per bin), exact at the nodes returned; c the threshold
    -m + Delta / 2. Independent of qatrun's F, alpha and bin bookkeeping."""
    delta = 2 * m / (2**bits - 1)
    c = -m + delta / 2
    left, right = math.ceil((reach * m + c) / delta), math.ceil((reach * m - c) / delta)
    h = delta / cells
    u = c - left * delta + h * np.arange((left + right) * cells + 1)
    inv = 1 / periodic_g(u, m, bits, k)
    cum = np.concatenate([[0.0], np.cumsum(h / 3 * (inv[:-2:2] + 4 * inv[1:-1:2] + inv[2::2]))])  # at u[::2]
    j0, per_bin = left * cells // 2, cells // 2
    alpha = delta / (cum[j0 + per_bin] - cum[j0])
    return u[::2], c + alpha * (cum - cum[j0])


@pytest.mark.parametrize("bits,k", [(2, 5.5), (2, 2.5), (4, 18.0), (1, 2.0)])
def test_periodic_tanh_matches_the_unclamped_closed_form(bits, k):
    est = E.create("tanh", bits=bits, k=k)
    w = torch.linspace(-3 * M, 3 * M, 60001, dtype=torch.float64)
    np.testing.assert_allclose(est.mirror64(w, M, "periodic").numpy(), periodic_tanh_mirror(w.numpy(), M, bits, k),
                               atol=1e-12, rtol=0)


@pytest.mark.parametrize("bits,k", [(2, 5.5), (4, 18.0), (1, 2.0)])
def test_periodic_tanh_is_the_integral_of_alpha_over_g(bits, k):
    """The definition, by quadrature of the periodic g from a threshold to 2.5 m either side."""
    est = E.create("tanh", bits=bits, k=k)
    w, ref = integral_mirror(M, bits, k)
    w, ref = torch.from_numpy(w[::7]), torch.from_numpy(ref[::7])
    assert (w.abs() > M).float().mean() > 0.4  # most nodes lie outside the range
    torch.testing.assert_close(est.mirror64(w, M, "periodic"), ref, atol=1e-10 * M, rtol=0)
    # the shift extension is not that integral: beyond the range it is off by a visible amount
    assert (est.mirror64(w, M, "shift") - ref).abs().max() > 1e-3 * M


def test_periodic_skewed_shape_closed_form():
    """g = 1 + f: ``M = -m + Delta (i + 1/2 + log2((1 + f) / 1.5))`` with i unclamped, also where M(m) != m."""
    est = E.create("custom", bits=2, shape=skewed)
    d = est.grid.delta(M)
    w = torch.linspace(-3 * M, 3 * M, 30001, dtype=torch.float64)
    i = torch.floor((w + M) / d)
    f = (w + M) / d - i
    ref = -M + d * (i + 0.5 + torch.log2((1 + f) / 1.5))
    torch.testing.assert_close(est.mirror64(w, M, "periodic"), ref, atol=1e-6 * d, rtol=0)
    torch.testing.assert_close(est.inverse64(ref, M, "periodic"), w, atol=1e-6 * d, rtol=0)


# --- properties of both extensions -----------------------------------------------------------------------
@pytest.mark.parametrize("name,params", CASES)
def test_equal_inside_and_different_outside(name, params):
    est = create(name, params)
    w = torch.linspace(-M, M, 20001, dtype=torch.float64)
    assert torch.equal(est.mirror64(w, M, "shift"), est.mirror64(w, M, "periodic"))  # bit for bit
    y = est.mirror64(w, M)
    assert torch.equal(est.inverse64(y, M, "shift"), est.inverse64(y, M, "periodic"))
    out = outside(M)
    diff = (est.mirror64(out, M, "shift") - est.mirror64(out, M, "periodic")).abs().max()
    assert diff == 0 if est.is_identity else diff > 1e-3 * M  # the STE family's M is the identity either way


@pytest.mark.parametrize("name,params", CASES)
@pytest.mark.parametrize("extension", E.EXTENSIONS)
def test_inverse_of_mirror_is_the_identity_outside_the_range(name, params, extension):
    est = create(name, params)
    w = outside(M)
    y = est.mirror64(w, M, extension)
    assert (y[1:] > y[:-1]).all()  # monotone (strictly: invertible)
    torch.testing.assert_close(est.inverse64(y, M, extension), w, atol=1e-12, rtol=0)
    assert torch.equal(est.grid.level_index(y, M), est.grid.level_index(w, M))  # Q(M(w)) == Q(w)


@pytest.mark.parametrize("name,params", CASES[:4])
def test_periodic_continues_bin_by_bin(name, params):
    """M(w + k Delta) = M(w) + k Delta for the periodic extension, from inside the range to far outside."""
    est = create(name, params)
    d = est.grid.delta(M)
    w = torch.linspace(-M, -M + d, 1001, dtype=torch.float64)  # the first bin
    for k in (-3, -1, 1, est.grid.n_bins, est.grid.n_bins + 2):
        torch.testing.assert_close(est.mirror64(w + k * d, M, "periodic"), est.mirror64(w, M, "periodic") + k * d,
                                   atol=1e-13, rtol=0)


def old_mirror64(est, w64, m):
    """The shift extension as qatrun computed it before ``pair.mirror_extension`` (verbatim)."""
    i, f = est._bin_coords(w64, m)
    inner = -m + est.grid.delta(m) * (i + 0.5 + est.alpha * est.antiderivative(f))
    return inner + (w64 - w64.clamp(-m, m))


def old_inverse64(est, y64, m, bisect=8, newton=12):
    ends = old_mirror64(est, torch.tensor([-m, m], dtype=torch.float64), m)
    yc = torch.minimum(torch.maximum(y64, ends[0]), ends[1])
    delta, alpha = est.grid.delta(m), est.alpha
    F0 = float(est.antiderivative(torch.zeros(1, dtype=torch.float64))[0])
    u = (yc + m) / delta
    i = torch.floor(u - 0.5 - alpha * F0).clamp_(0, est.grid.n_bins - 1)
    target = (u - i - 0.5) / alpha
    lo, hi = torch.zeros_like(u), torch.ones_like(u)
    for _ in range(bisect):
        mid = (lo + hi) / 2
        below = est.antiderivative(mid) < target
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    f = (lo + hi) / 2
    for _ in range(newton):
        r = est.antiderivative(f) - target
        lo, hi = torch.where(r < 0, f, lo), torch.where(r < 0, hi, f)
        step = f - r * est.shape(f).to(torch.float64)
        f = torch.minimum(torch.maximum(step, lo), hi)
    return -m + delta * (i + f) + (y64 - yc)


@pytest.mark.parametrize("name,params", [c for c in CASES if c[0] != "pwl"])
def test_shift_is_unchanged_from_before(name, params):
    est, tanh = create(name, params), E.create("tanh", bits=2, k=2.5)
    w = torch.linspace(-3 * M, 3 * M, 30001, dtype=torch.float64)
    assert torch.equal(est.mirror64(w, M), old_mirror64(est, w, M))
    assert torch.equal(est.mirror64(w, M, "shift"), old_mirror64(est, w, M))
    y = old_mirror64(est, w, M)
    assert torch.equal(est.inverse64(y, M), old_inverse64(est, y, M))
    w32 = w.float()
    old_warp = est.grid.same_level(old_inverse64(tanh, old_mirror64(est, w32.double(), M), M).float(), w32, M)
    assert torch.equal(E.warp(w32, M, est, tanh), old_warp)


def test_bad_extension_is_refused_with_the_valid_values():
    est = E.create("tanh", bits=2)
    for call in (lambda: est.mirror64(torch.zeros(2, dtype=torch.float64), M, "periodc"),
                 lambda: est.inverse64(torch.zeros(2, dtype=torch.float64), M, "wrap"),
                 lambda: E.create("ste", bits=2).mirror(torch.zeros(2), M, "Shift")):
        with pytest.raises(ValueError, match="unknown mirror extension .*valid: shift, periodic"):
            call()
    with pytest.raises(ValueError, match=r"unknown pair.mirror_extension 'periodc'; did you mean periodic\? "
                                         "valid: shift, periodic"):
        resolve_twin("auto", est, True, extension="periodc")
    with pytest.raises(ValueError, match=r"unknown pair.mirror_extension 'clamp'; valid: shift, periodic"):
        build_spec(make_cfg("pair.mirror_extension=clamp"))


# --- the twin: init, clip, alignment ---------------------------------------------------------------------
def test_twin_init_and_alignment_map_use_the_extension():
    """Weights that start outside [-m, m] (no He init): the twin's init M(w0) follows the chosen extension."""
    A = E.create("tanh", bits=2)
    w = torch.tensor([[-1.7, -1.2, -0.3, 0.0, 0.4, 1.1, 1.35, 2.9]]) * M
    shift, periodic = (resolve_twin("full", A, True, extension=x) for x in E.EXTENSIONS)
    assert (shift.extension, periodic.extension) == ("shift", "periodic")
    assert torch.equal(shift.to_twin(w, M), A.mirror(w, M))
    assert torch.equal(periodic.to_twin(w, M), A.mirror(w, M, "periodic"))
    inside = w.abs() <= M
    assert torch.equal(shift.to_twin(w, M)[inside], periodic.to_twin(w, M)[inside])
    assert not torch.equal(shift.to_twin(w, M), periodic.to_twin(w, M))
    unwarped = resolve_twin("ste", A, True, extension="periodic")  # a no-warp control still reports through M

    class Layer:
        weight, m = w, M

    from qatrun.twin import alignment_map
    assert torch.equal(alignment_map(A, unwarped)(Layer), A.mirror(w, M, "periodic"))


def test_twin_clip_gap_keeps_m_prime_g_alpha_under_either_extension():
    """A = sine (M_A(m) = 10/9 m) against B = tanh (M_B(m) = m): the mapped edge lands outside B's range, so the
    extension decides B's clip and its g there; both keep ``M_B' g_B = alpha_B`` in the gap."""
    A, B = E.create("custom", bits=2, shape="qatrun.shapes.sine"), E.create("tanh", bits=2, k=2.5)
    for extension in E.EXTENSIONS:
        spec = resolve_twin("full", A, True, twin_estimator=B, extension=extension)
        lo, hi = spec.estimator.clip
        assert (lo, hi) == pytest.approx(E.edges(A, B, extension), abs=1e-15) and hi > 1
        torch.testing.assert_close(B.mirror64(torch.tensor([hi], dtype=torch.float64), 1.0, extension),
                                   A.mirror64(torch.tensor([1.0], dtype=torch.float64), 1.0), atol=1e-12, rtol=0)
        w = torch.linspace(1.0 + 1e-3, hi - 1e-3, 101, dtype=torch.float64) * M
        h = 1e-7
        dM = (B.mirror64(w + h, M, extension) - B.mirror64(w - h, M, extension)) / (2 * h)
        torch.testing.assert_close(dM * spec.estimator.grad(w, M), torch.full_like(w, B.alpha), rtol=1e-6, atol=0)
    shift, periodic = (E.edges(A, B, x)[1] for x in E.EXTENSIONS)
    assert shift != pytest.approx(periodic, abs=1e-6)


def test_step0_invariant_holds_for_weights_outside_the_range():
    """Weights pushed outside [-m, m] before the twin is built: quantized agreement 1 and alignment 0 at step 0
    with either extension (the init and the alignment go through the same map)."""
    A = E.create("custom", bits=2, shape="qatrun.shapes.sine")
    for extension in E.EXTENSIONS:
        model = build_run("small_cnn", 10, A, seed=0)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 4:
                    p.mul_(2.5)  # about 60% of the conv weights now lie outside [-m, m]
        spec = resolve_twin("full", A, True, extension=extension)
        pair = Pair(model, A, spec, optimizer="sgd", lr=0.01, steps=10, warmup_frac=0.1, metrics=("weights",),
                    optimizer_options={"momentum": 0.9, "nesterov": False, "weight_decay": 0.0})
        figs = pair.figures()
        assert figs["pair/quantized_agreement"].item() == 1.0 and figs["pair/alignment_distance"].item() == 0.0


# --- the config key, the summary, fingerprints ------------------------------------------------------------
def test_the_key_reaches_the_spec_the_summary_and_the_printed_line():
    for extension in E.EXTENSIONS:
        spec = build_spec(make_cfg(f"pair.mirror_extension={extension}"))
        assert spec.twin.extension == extension
        A = spec.estimator
        pair = Pair(build_run("small_cnn", 10, A, seed=0), A, spec.twin, optimizer="sgd", lr=0.01, steps=10,
                    warmup_frac=0.1, metrics=("weights",),
                    optimizer_options={"momentum": 0.9, "nesterov": False, "weight_decay": 0.0})
        summary = summarize(pair, spec, 0, {}, Recorder().history)
        assert summary["mirror_extension"] == extension
        first = summary_lines(summary)[0]
        assert first.endswith("sgd lr 0.01; M periodic outside [-m, m]") == (extension == "periodic"), first


def test_the_default_is_shift_and_added_says_so():
    composed = OmegaConf.to_container(make_cfg(), resolve=True)  # the defaults as composed (group options too)
    for key, value in ADDED.items():
        node = composed
        for part in key.split("."):
            node = node[part]
        assert node == value, key
    assert make_cfg().pair.mirror_extension == "shift"


def test_older_configs_keep_their_fingerprint_and_resume():
    """A config saved before the key existed computed with shift: same fingerprint, no resume diff."""
    from omegaconf import OmegaConf

    now = OmegaConf.to_container(make_cfg(), resolve=True)
    old = {**now, "pair": {k: v for k, v in now["pair"].items() if k != "mirror_extension"}}
    periodic = {**now, "pair": {**now["pair"], "mirror_extension": "periodic"}}
    assert fingerprint(now) == fingerprint(old) != fingerprint(periodic)
    assert config_diff(old, now) == [] and config_diff(now, old) == []
    assert config_diff(old, periodic) == ["pair.mirror_extension"]
    assert with_added(old)["pair"]["mirror_extension"] == "shift" and "mirror_extension" not in old["pair"]
    assert with_added(periodic) == periodic


@pytest.mark.slow
def test_a_training_run_records_its_extension(tmp_path):
    from qatrun.train import train

    runs = {x: train(make_cfg("optimizer.lr=0.005", "trainer.changepoints=false", f"pair.mirror_extension={x}"),
                     tmp_path / x) for x in E.EXTENSIONS}
    for x, s in runs.items():
        assert s["mirror_extension"] == x and s["config"]["pair"]["mirror_extension"] == x
    assert runs["shift"]["fingerprint"] != runs["periodic"]["fingerprint"]
    # the He-uniform init starts inside [-m, m], where the two maps agree: both pairs start identical
    assert runs["shift"]["pair/quantized_agreement"] == pytest.approx(runs["periodic"]["pair/quantized_agreement"],
                                                                      abs=0.01)


def test_the_command_line_refuses_a_typo_in_one_line():
    from qatrun import preflight

    with pytest.raises(preflight.UserError, match=r"unknown key pair.mirror_extenson; did you mean "
                                                  r"pair.mirror_extension\?"):
        preflight.check_command(["pair.mirror_extenson=periodic", "device=cpu"], False)
    with pytest.raises(preflight.UserError, match=r"^unknown pair.mirror_extension 'periodc'; did you mean periodic\? "
                                                  r"valid: shift, periodic$"):
        preflight.check_command(["pair.mirror_extension=periodc", "device=cpu"], False)


def test_a_checkpoint_from_before_the_key_resumes_with_shift(tmp_path):
    """A run saved without ``pair.mirror_extension`` continues as the shift run it was; asking for periodic on
    that resume is refused as a change of the math."""
    from omegaconf import OmegaConf

    from qatrun import checkpoint as ckpt
    from qatrun import preflight

    now = OmegaConf.to_container(make_cfg(), resolve=True)
    now.pop("resume")
    old = {**now, "pair": {k: v for k, v in now["pair"].items() if k != "mirror_extension"}}
    ckpt.save(tmp_path, 5, old, {"pair": {}, "history": {}})
    run_dir, cfg = preflight.resume([f"resume={tmp_path}"])
    assert run_dir == tmp_path and cfg.pair.mirror_extension == "shift"
    assert ckpt.load_for_resume(tmp_path, now) is not None  # the train loop's own check agrees
    with pytest.raises(preflight.UserError, match=r"differs from the saved one in pair.mirror_extension \(saved "
                                                  r"shift, given periodic\)"):
        preflight.resume([f"resume={tmp_path}", "pair.mirror_extension=periodic"])


def test_an_added_group_is_filled_whole_only_where_the_saved_config_lacks_it():
    """A saved config without a quantizer group computed with the tensor default; one with another option keeps
    exactly its own keys (a resume of an lsq run once got the tensor option's scale and was refused)."""
    lsq = {"name": "lsq", "scope": "channel", "init": "lsq", "grad_scale": True}
    assert with_added({"quantizer": dict(lsq)})["quantizer"] == lsq
    assert with_added({})["quantizer"] == {"name": "tensor", "scale": None}
    saved = {"quantizer": {"name": "tensor", "scale": None}, "seed": 0}
    assert config_diff({"seed": 0}, saved) == [] and fingerprint({"seed": 0}) == fingerprint(saved)
    assert config_diff({"seed": 0}, {"quantizer": dict(lsq), "seed": 0}) == ["quantizer.grad_scale", "quantizer.init",
                                                                            "quantizer.name", "quantizer.scope"]


def test_a_figure_not_defined_prints_so_not_none():
    lines = summary_lines({"pair/alignment_error": None, "pair/mover_agreement": 0.5,
                           "config": {"trainer": {"metrics": "all"}}})
    (line,) = [x for x in lines if "pair/alignment_error " in x]
    assert line.split()[-2:] == ["not", "defined"] and "None" not in "\n".join(lines)
