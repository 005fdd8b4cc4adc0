"""ImageNet ImageFolder loaders on a tiny generated tree, their errors, and SyntheticImages."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from qatrun.data.imagenet import DatasetError, ShardSampler, build_imagenet_loaders
from qatrun.data.synthetic import SyntheticImages

CLASSES = ["n01440764", "n01443537", "n01484850"]


def _write_images(folder, n, rng, ext=".JPEG"):
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        h, w = (40, 50) if i % 2 == 0 else (50, 40)
        arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        Image.fromarray(arr).save(os.path.join(folder, f"img_{i}{ext}"), format="JPEG" if ext == ".JPEG" else "PNG")


def make_tree(root, classes=CLASSES, n=4, val_classes=None):
    rng = np.random.default_rng(0)
    for c in classes:
        _write_images(os.path.join(root, "train", c), n, rng)
    os.makedirs(os.path.join(root, "val"), exist_ok=True)
    for c in classes if val_classes is None else val_classes:
        _write_images(os.path.join(root, "val", c), n, rng, ext=".png")
    return root


def loaders(root, **kw):
    args = dict(batch_size=2, workers=0, image_size=32, resize=36, pin_memory=False)
    args.update(kw)
    return build_imagenet_loaders(root, **args)


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "imagenet")


def test_loaders_shapes_and_classes(tree):
    train, val, num_classes = loaders(tree)
    assert num_classes == 3
    assert train.dataset.classes == CLASSES == val.dataset.classes
    assert len(train.dataset) == 12 and len(val.dataset) == 12
    assert len(train) == 6 and len(val) == 6
    x, y = next(iter(train))
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and set(y.tolist()) <= {0, 1, 2}
    xv, yv = next(iter(val))
    assert xv.shape == (2, 3, 32, 32)
    assert yv.tolist() == [0, 0]  # val is in order
    assert train.drop_last and not val.drop_last


def test_val_deterministic(tree):
    _, val, _ = loaders(tree)
    a = torch.cat([x for x, _ in val])
    b = torch.cat([x for x, _ in val])
    assert torch.equal(a, b)
    # normalized: roughly zero-centred random images
    assert a.abs().max() < 3.0


def test_train_order_reproducible(tree):
    order = lambda loader: [i for batch in loader.batch_sampler for i in batch]  # noqa: E731
    a, _, _ = loaders(tree, seed=3)
    b, _, _ = loaders(tree, seed=3)
    c, _, _ = loaders(tree, seed=4)
    oa, ob, oc = order(a), order(b), order(c)  # each call draws the next epoch's order
    assert oa == ob and oa != oc
    assert sorted(oa) == list(range(12))
    assert order(a) == order(b) != oa  # the next epoch: reshuffled, still reproducible
    assert [y.tolist() for _, y in a] == [y.tolist() for _, y in b]


def test_odd_train_size_drops_last(tmp_path):
    root = make_tree(tmp_path / "r", n=3)  # 9 train samples, batch 2 -> 4 batches
    train, val, _ = loaders(root)
    assert len(train) == 4 and sum(len(y) for _, y in val) == 9


def test_subsets_cover_classes(tree):
    train, val, n = loaders(tree, train_subset=6, val_subset=3)
    assert n == 3 and len(train.dataset) == 6 and len(val.dataset) == 3
    assert sorted(y for _, y in (val.dataset[i] for i in range(3))) == [0, 1, 2]
    assert train.dataset.classes == CLASSES


def test_distributed_samplers(tree):
    train0, val0, _ = loaders(tree, distributed=True, num_replicas=2, rank=0, seed=1)
    train1, val1, _ = loaders(tree, distributed=True, num_replicas=2, rank=1, seed=1)
    i0 = list(iter(train0.sampler))
    i1 = list(iter(train1.sampler))
    assert len(i0) == len(i1) == 6 and not set(i0) & set(i1)
    assert isinstance(val0.sampler, ShardSampler)
    v0, v1 = list(iter(val0.sampler)), list(iter(val1.sampler))
    assert sorted(v0 + v1) == list(range(12))
    train0.sampler.set_epoch(1)
    assert list(iter(train0.sampler)) != i0


def test_error_missing_root(tmp_path):
    with pytest.raises(DatasetError, match="does not exist.*root/train/<class>/\\*.JPEG"):
        loaders(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no dataset.root given"):
        loaders("")


def test_error_root_is_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(DatasetError, match="not a directory"):
        loaders(f)


@pytest.mark.parametrize("split", ["train", "val"])
def test_error_missing_split(tmp_path, split):
    root = make_tree(tmp_path / "r")
    os.rename(root / split, root / f"{split}_old")
    with pytest.raises(DatasetError, match=f"no {split}/ folder.*{split}_old.*expected layout"):
        loaders(root)


def test_error_no_class_folders(tmp_path):
    root = make_tree(tmp_path / "r", val_classes=[])
    with pytest.raises(DatasetError, match="val split .* has no class folders.*expected layout"):
        loaders(root)


def test_error_flat_val_gets_hint(tmp_path):
    root = make_tree(tmp_path / "r", val_classes=[])
    _write_images(root / "val", 3, np.random.default_rng(1))
    with pytest.raises(DatasetError, match="holds 3 images directly.*class"):
        loaders(root)


def test_error_empty_class_folder(tmp_path):
    root = make_tree(tmp_path / "r")
    empty = root / "train" / "n09999999"
    os.makedirs(root / "val" / "n09999999")
    os.makedirs(empty)
    (empty / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match="train split.*n09999999.*expected layout"):
        loaders(root)


def test_error_class_mismatch(tmp_path):
    root = make_tree(tmp_path / "r", val_classes=CLASSES[:2] + ["n07777777"])
    with pytest.raises(DatasetError) as e:
        loaders(root)
    msg = str(e.value)
    assert "class lists differ" in msg and CLASSES[2] in msg and "n07777777" in msg
    assert "expected layout" in msg


def test_error_fewer_samples_than_batch(tree):
    with pytest.raises(DatasetError, match="fewer than one batch"):
        loaders(tree, batch_size=13)


def test_dataset_error_is_value_error():
    assert issubclass(DatasetError, ValueError)


# ---- SyntheticImages ------------------------------------------------------------------------


def test_synthetic_shapes_and_determinism():
    a = SyntheticImages(num_classes=10, image_size=16, channels=3, length=64, device="cpu", seed=5)
    b = SyntheticImages(num_classes=10, image_size=16, channels=3, length=64, device="cpu", seed=5)
    c = SyntheticImages(num_classes=10, image_size=16, channels=3, length=64, device="cpu", seed=6)
    x, y = a.get_batch(3, 8)
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32 and x.device.type == "cpu"
    assert y.shape == (8,) and y.dtype == torch.int64 and 0 <= y.min() and y.max() < 10
    xb, yb = b.get_batch(3, 8)
    assert torch.equal(x, xb) and torch.equal(y, yb)
    assert not torch.equal(x, c.get_batch(3, 8)[0])
    assert not torch.equal(x, a.get_batch(4, 8)[0])
    # the epoch wraps: 64 // 8 = 8 batches
    assert a.num_batches(8) == 8
    assert torch.equal(x, a.get_batch(3 + 8, 8)[0])
    assert abs(float(x.mean())) < 0.2 and 0.8 < float(x.std()) < 1.2


def test_synthetic_iterable_and_signal():
    ds = SyntheticImages(4, 8, channels=1, length=10, seed=0, batch_size=3, signal=5.0)
    batches = list(ds)
    assert len(ds) == 3 and len(batches) == 3
    assert all(x.shape == (3, 1, 8, 8) for x, _ in batches)
    x, y = ds.get_batch(0)
    torch.testing.assert_close(x, batches[0][0])
    # with a strong signal the class pattern dominates: nearest pattern recovers the label
    dist = ((x[:, None] - 5.0 * ds.patterns[None]) ** 2).flatten(2).sum(-1)
    assert torch.equal(dist.argmin(1), y)


def test_synthetic_errors():
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticImages(0, 8)
    ds = SyntheticImages(2, 8, length=4)
    with pytest.raises(ValueError, match="batch_size"):
        ds.get_batch(0)
    with pytest.raises(ValueError, match="exceeds length"):
        ds.get_batch(0, 5)
