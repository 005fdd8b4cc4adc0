"""Issue 23, estimator side: degenerate estimators are refused (item 5), a user's shape is validated as code
(item 6), and qnet past its class says so instead of crashing (issue 21)."""

import importlib
import textwrap
import time

import pytest
import torch

from qatrun import estimators as E
from qatrun.estimators.base import NotInClassError
from qatrun.estimators.periodic import ALPHA_FLOOR, SHAPE_BUDGET_S
from qatrun.twin import resolve_twin
from qatrun.userimport import resolve, source_digest


def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write ``name.py`` into a directory on sys.path (undone after the test); returns its path."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, source: str):
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        return path

    return write


# --- item 5: an alpha below the floor ----------------------------------------------------------------------


def test_a_tanh_k_whose_alpha_underflows_is_refused_with_its_alpha():
    msg = one_line_error(E.create, "tanh", bits=2, k=200)
    assert "k=200" in msg and "alpha = 4.42e-54" in msg and f"ALPHA_FLOOR = {ALPHA_FLOOR:g}" in msg
    assert "use k below 30.8 on 2 bits" in msg
    assert E.create("tanh", bits=2, k=5.5).alpha == pytest.approx(0.6095, abs=1e-4)
    assert E.create("tanh", bits=2, k=30).alpha >= ALPHA_FLOOR  # just above the floor: still allowed
    assert "alpha = 0 " in one_line_error(E.create, "tanh", bits=2, k=3000)  # no OverflowError either


def test_every_estimator_built_on_that_k_is_refused():
    assert "alpha = 4.42e-54" in one_line_error(E.create, "pwl", bits=2, k=200)
    assert "alpha = 4.42e-54" in one_line_error(E.create, "dsq_anneal", bits=2, k=200, k_end=400, schedule="linear")
    assert "pwl: alpha = 1e-09 is below the floor" in one_line_error(E.create, "pwl", bits=2, alpha=1e-9)
    assert "alpha = 1e-09 is below the floor" in one_line_error(E.create, "custom", bits=2,
                                                                shape=lambda u: torch.full_like(u, 1e-9))


def test_the_config_k_200_is_refused_before_training(tmp_path):
    from qatrun.train import train
    from tests.conftest import make_cfg

    msg = one_line_error(train, make_cfg("estimator.k=200"), tmp_path)
    assert "alpha = 4.42e-54" in msg and not (tmp_path / "checkpoint.pt").exists()


# --- item 6: user shapes validated as code --------------------------------------------------------------------


def test_a_negative_shape_is_refused_whatever_the_twin(user_module):
    user_module("neg_shape", """
        import torch

        def shape(u):
            return 1 - 1.5 * u  # negative above u = 2/3
    """)
    msg = one_line_error(E.create, "custom", bits=2, shape="neg_shape.shape")
    assert "'neg_shape.shape' is negative at u=0.6667" in msg and ">= 0" in msg
    msg = one_line_error(E.create, "custom", bits=2, shape="neg_shape:shape")  # the colon form too
    assert "negative at u=0.6667" in msg
    # reaching zero (not below) stays what it was: outside the class, trainable with a plain STE twin
    zero = E.create("custom", bits=2, shape=lambda u: (2 * u - 1) ** 2)
    assert not zero.in_class and resolve_twin("ste", zero, True).estimator.name == "ste"


def test_a_slow_shape_is_refused_with_the_budget_and_how_to_raise_it(monkeypatch):
    def slow(u):
        time.sleep(0.2)
        return torch.ones_like(u)

    assert SHAPE_BUDGET_S == 5.0
    monkeypatch.setenv("QATRUN_SHAPE_BUDGET_S", "0.05")
    msg = one_line_error(E.create, "custom", bits=2, shape=slow)
    assert "took 0.2 s on 262144 points, more than the 0.05 s budget; make it vectorized or raise " \
           "QATRUN_SHAPE_BUDGET_S" in msg
    monkeypatch.setenv("QATRUN_SHAPE_BUDGET_S", "1")
    assert E.create("custom", bits=2, shape=slow).alpha == pytest.approx(1.0)
    monkeypatch.setenv("QATRUN_SHAPE_BUDGET_S", "1e-9")
    assert E.create("qnet", bits=2, beta=5.0).reference().in_class  # qatrun's own stand-in shapes are not timed
    monkeypatch.setenv("QATRUN_SHAPE_BUDGET_S", "soon")
    assert "QATRUN_SHAPE_BUDGET_S must be a positive number of seconds, got 'soon'" in \
        one_line_error(E.create, "custom", bits=2, shape=slow)


def test_a_syntax_error_is_one_line_with_file_and_line(user_module):
    path = user_module("syntax_shape", """
        import torch

        def shape(u)
            return torch.ones_like(u)
    """)
    msg = one_line_error(E.create, "custom", bits=2, shape="syntax_shape.shape")
    assert msg.startswith(f"estimator.shape=syntax_shape.shape: {path}:4: syntax error")


def test_an_import_time_error_is_one_line_with_file_and_line(user_module):
    path = user_module("raising_shape", """
        import torch

        def helper():
            return {}["table"]

        TABLE = helper()

        def shape(u):
            return torch.ones_like(u)
    """)
    msg = one_line_error(E.create, "custom", bits=2, shape="raising_shape.shape")
    assert msg.startswith(f"estimator.shape=raising_shape.shape: {path}:5: importing 'raising_shape' raised KeyError")
    path = user_module("missing_import_shape", """
        import torch
        from torch import no_such_name
    """)
    msg = one_line_error(E.create, "custom", bits=2, shape="missing_import_shape.shape")
    assert f"{path}:3: cannot import module 'missing_import_shape'" in msg and "no_such_name" in msg
    msg = one_line_error(E.create, "custom", bits=2, shape="no_such_shape_module.shape")  # missing module: no frame
    assert msg == ("estimator.shape=no_such_shape_module.shape: cannot import module 'no_such_shape_module' "
                   "(No module named 'no_such_shape_module')")


def test_a_shape_raising_when_called_names_its_line(user_module):
    path = user_module("call_error_shape", """
        import torch

        def shape(u):
            return u[u.numel()]
    """)
    msg = one_line_error(E.create, "custom", bits=2, shape="call_error_shape.shape")
    assert msg.startswith(f"custom: {path}:5: shape 'call_error_shape.shape' raised IndexError")


def test_source_digest_follows_the_file(user_module):
    source = "import torch\n\ndef shape(u):\n    return 1 + 0.5 * torch.cos(2 * torch.pi * u)\n"
    path = user_module("digest_shape", source)
    fn = resolve("digest_shape.shape", "estimator.shape")
    before = source_digest(fn)
    assert len(before) == 16 and int(before, 16) >= 0
    assert source_digest("digest_shape.shape") == source_digest("digest_shape:shape") == before
    path.write_text(source.replace("0.5", "0.4"))
    assert source_digest(fn) != before  # the file changed under the imported function
    path.write_text(source)
    assert source_digest(fn) == before
    assert source_digest(len) is None and source_digest(torch.cos) is None  # builtins: nothing to read

    class Shape:
        def __call__(self, u):
            return torch.ones_like(u)

    assert source_digest(Shape()) == source_digest(test_source_digest_follows_the_file)  # this test file


# --- issue 21: qnet past its class ------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [1, 2])
def test_qnet_with_a_large_beta_is_outside_the_class_not_a_crash(bits):
    est = E.create("qnet", bits=bits, beta=40)
    with pytest.raises(NotInClassError, match="outside the paper's class.*beta=40"):
        est.alpha
    with pytest.raises(ValueError, match="pair.twin=ste") as info:
        resolve_twin("auto", est, "warp")
    assert not isinstance(info.value, NotInClassError)  # the pair's own message, naming the remedy once
    assert resolve_twin("ste", est, "warp").estimator.name == "ste"  # the plain STE twin still pairs with it
    assert E.create("qnet", bits=1, beta=5).in_class and 0 < E.create("qnet", bits=1, beta=5).alpha < 1
