"""``dataset.decode=device``: the workers read bytes, the device decodes and augments (run here with
``device=cpu``): the same crops as PIL from the same parameters, odd files handled, batches a
function of (seed, step), and both paths train every model; the loader bench. CUDA checks skip."""

import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from qatrun.data import describe
from qatrun.data.devicedecode import IMAGENET_MEAN, IMAGENET_STD, crop_params, step_uniforms, train_params
from qatrun.data.encoded import device_decodable, jpeg_frame
from qatrun.data.imagenet import ImageNetData, decode_path, train_transform, val_transform

CUDA = torch.cuda.is_available()
# Pixel tolerance against PIL, in levels of 255: libjpeg-turbo decodes identically through PIL and
# torchvision on the CPU; the antialiased bilinear resizes of PIL and torch round differently by at
# most one level. nvJPEG (CUDA) may differ by a few levels more.
MAX_LEVELS, MEAN_LEVELS = 2, 0.5
SIZES = [(60, 80), (80, 60), (50, 50), (45, 90), (90, 40), (70, 64)]


def _photo(rng, h, w) -> Image.Image:
    small = rng.integers(0, 256, (max(h // 8, 2), max(w // 8, 2), 3), dtype=np.uint8)
    grain = rng.normal(0, 10, (h, w, 3))
    base = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), dtype=np.float64)
    return Image.fromarray((base + grain).clip(0, 255).astype(np.uint8))


def make_tree(root, n=6, classes=("a", "b", "c"), odd=False):
    """root/{train,val}/<class>/*.JPEG of varied sizes; ``odd`` adds a PNG, a greyscale, a CMYK and a
    progressive JPEG, a truncated JPEG and a file of junk to the train split (returns those paths)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("val", 2)):
        for c in classes:
            os.makedirs(root / split / c, exist_ok=True)
            for i in range(count):
                _photo(rng, *SIZES[i % len(SIZES)]).save(root / split / c / f"{i}.JPEG", quality=90)
    if not odd:
        return {}
    img, d = _photo(rng, 64, 72), root / "train" / "a"
    img.save(d / "png.png")
    img.convert("L").save(d / "grey.JPEG")
    img.convert("CMYK").save(d / "cmyk.JPEG")
    img.save(d / "prog.JPEG", progressive=True)
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    (d / "truncated.JPEG").write_bytes(buf.getvalue()[:300])
    (d / "junk.JPEG").write_bytes(b"not an image at all" * 10)
    return {"truncated": str(d / "truncated.JPEG"), "junk": str(d / "junk.JPEG")}


def data(root, decode="device", batch=4, workers=0, world=1, rank=0, seed=3, **kw):
    args = dict(root=root, device="cpu", batch_size=batch, eval_batch_size=5, workers=workers, image_size=32,
                resize=36, train_subset=None, test_subset=None, seed=seed, world=world, rank=rank, decode=decode)
    return ImageNetData(**{**args, **kw})


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    make_tree(root)
    return root


def _levels(x):
    """Normalised float batch -> pixel levels of 255 (undo Normalize and ToTensor)."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x * std + mean) * 255


def _pil_reference(path, top, left, h, w, flip, size=32):
    """Today's PIL transforms (ToTensor + Normalize) with the crop and flip given, not drawn."""
    img = Image.open(path).convert("RGB")
    img = TF.resized_crop(img, top, left, h, w, [size, size])
    img = TF.hflip(img) if flip else img
    return TF.normalize(TF.to_tensor(img), IMAGENET_MEAN, IMAGENET_STD)


def test_jpeg_header_decides_which_files_the_device_decodes(tmp_path):
    paths = make_tree(tmp_path, n=1, classes=("a",), odd=True)
    d = tmp_path / "train" / "a"
    read = lambda name: (d / name).read_bytes()  # noqa: E731
    assert jpeg_frame(read("0.JPEG"))[1:] == (8, 60, 80, 3)  # precision, height, width, components
    assert device_decodable(read("0.JPEG"))
    for name in ("png.png", "grey.JPEG", "cmyk.JPEG", "prog.JPEG", "junk.JPEG"):
        assert not device_decodable(read(name)), name
    assert jpeg_frame(read("grey.JPEG"))[4] == 1 and jpeg_frame(read("cmyk.JPEG"))[4] == 4
    assert jpeg_frame(read("prog.JPEG"))[0] == 0xC2
    assert device_decodable(open(paths["truncated"], "rb").read())  # its header is whole: the decoder finds out


def test_device_path_crops_like_pil_from_the_same_parameters(tree):
    d = data(tree, batch=6)
    x, y = d.batch(0)
    ds = d.train_loader.dataset
    d.sampler.start(0)
    idx = next(iter(d.sampler))
    assert y.tolist() == [ds.samples[i][1] for i in idx]
    sizes = [Image.open(ds.path(i)).size[::-1] for i in idx]
    params = train_params(3, 0, 6, range(6), sizes)
    assert {p[4] for p in params} == {True, False}  # both flips occur in this batch
    assert any(p[2] * p[3] < 0.8 * h * w for p, (h, w) in zip(params, sizes))  # real crops, not whole images
    ref = torch.stack([_pil_reference(ds.path(i), *p) for i, p in zip(idx, params)])
    diff = (_levels(x) - _levels(ref)).abs()
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.float32
    assert diff.max() <= MAX_LEVELS and diff.mean() <= MEAN_LEVELS, (diff.max(), diff.mean())
    other = torch.stack([_pil_reference(ds.path(i), *p) for i, p in zip(idx, train_params(4, 0, 6, range(6), sizes))])
    assert (_levels(x) - _levels(other)).abs().mean() > 10  # another seed's crops are far away
    assert not torch.equal(d.batch(1)[0][:1], x[:1])


def test_device_path_evaluates_like_pil(tree):
    dev, pil = data(tree), data(tree, decode="cpu")
    (xd, yd), = list(dev.test_batches())[:1]
    (xp, yp), = list(pil.test_batches())[:1]
    assert torch.equal(yd, yp) and xd.shape == xp.shape == (5, 3, 32, 32)
    diff = (_levels(xd) - _levels(xp)).abs()
    assert diff.max() <= MAX_LEVELS and diff.mean() <= MEAN_LEVELS


def test_cpu_path_is_todays_pil_path(tree):
    """``decode=cpu``: the ImageFolder with the PIL transforms, the same order and global RNG draws."""
    from torchvision import datasets

    d = data(tree, decode="cpu")
    torch.manual_seed(7)
    x, y = d.batch(0)
    folder = datasets.ImageFolder(tree / "train", transform=train_transform(32))
    d.sampler.start(0)
    torch.manual_seed(7)
    ref = [folder[i] for i in next(iter(d.sampler))]
    assert torch.equal(x, torch.stack([r[0] for r in ref])) and y.tolist() == [r[1] for r in ref]
    vx, _ = next(iter(d.test_batches()))
    vfolder = datasets.ImageFolder(tree / "val", transform=val_transform(32, 36))
    assert torch.equal(vx, torch.stack([vfolder[i][0] for i in range(5)]))


def test_crop_parameters_follow_random_resized_crop():
    u = step_uniforms(0, 0, 4000)
    assert np.array_equal(u, step_uniforms(0, 0, 4000)) and not np.array_equal(u, step_uniforms(0, 1, 4000))
    assert not np.array_equal(u, step_uniforms(1, 0, 4000))
    crops = [crop_params(row, 375, 500) for row in u]
    area = np.array([h * w for _, _, h, w in crops]) / (375 * 500)
    ratio = np.array([w / h for _, _, h, w in crops])
    assert area.min() >= 0.075 and area.max() <= 1.0 and 0.4 < area.mean() < 0.6
    assert ratio.min() >= 0.74 and ratio.max() <= 1.35
    assert all(0 <= t <= 375 - h and 0 <= le <= 500 - w for t, le, h, w in crops)
    assert 0.45 < np.mean(u[:, -1] < 0.5) < 0.55  # the flip
    assert crop_params(np.full(41, 0.99), 10, 1000) == (0, 493, 10, 13)  # no try fits: the centre crop at 4/3


def test_resume_mid_epoch_and_rank_slices_give_the_same_batches(tree):
    full = data(tree, batch=4)
    steps = [full.batch(s) for s in range(6)]  # 18 images: 4 steps per epoch, so this crosses one
    resumed = data(tree, batch=4)
    for s in (3, 4, 5):  # a fresh process resuming at step 3
        assert all(torch.equal(a, b) for a, b in zip(resumed.batch(s), steps[s]))
    ranks = [data(tree, batch=4, world=2, rank=r) for r in (0, 1)]
    for s in (0, 5):
        halves = [r.batch(s) for r in ranks]
        assert torch.equal(torch.cat([h[0] for h in halves]), steps[s][0])
        assert torch.equal(torch.cat([h[1] for h in halves]), steps[s][1])


def test_odd_files_are_decoded_or_named_once_and_replaced(tmp_path, capsys):
    bad = make_tree(tmp_path, n=2, odd=True)
    d = data(tmp_path, batch=3)
    assert len(d.train_loader.dataset) == 12
    epochs = [[d.batch(s) for s in range(e * 4, e * 4 + 4)] for e in range(2)]
    err = capsys.readouterr().err
    for path in bad.values():
        assert err.count(path) == 1, err  # named once over two epochs
    assert err.count("warning") == 2
    x = torch.cat([b[0] for b in epochs[0]])
    grey = (x.abs().amax(dim=(1, 2, 3)) < 0.02).nonzero().flatten().tolist()  # mean-grey: ~0 normalised
    assert len(grey) == 2 and torch.isfinite(x).all()
    assert all(torch.equal(a[0], b[0]) for a, b in zip(epochs[0], _first_epoch(tmp_path)))


def _first_epoch(root):
    d = data(root, batch=3)
    return [d.batch(s) for s in range(4)]


def test_decode_option_is_checked_in_one_line(tree):
    opts = dict(root=str(tree), batch_size=4, eval_batch_size=4, workers=0, image_size=32, resize=36,
                train_subset=None, test_subset=None)
    assert describe("imagefolder", decode="device", **opts).input_shape == (3, 32, 32)
    with pytest.raises(ValueError, match=r"^unknown dataset.decode 'gpu'; did you mean cpu\? valid: auto, cpu, device$"):
        describe("imagefolder", decode="gpu", **opts)
    assert decode_path("auto", "cpu") == "cpu" and decode_path("auto", "cuda") == "device"
    assert decode_path("device", "cpu") == "device"


@pytest.mark.slow
def test_workers_deliver_the_same_batches_as_the_main_process(tmp_path, capfd):
    bad = make_tree(tmp_path, n=2, odd=True)
    inline, pooled = data(tmp_path, batch=3), data(tmp_path, batch=3, workers=2)
    for s in range(5):
        assert all(torch.equal(a, b) for a, b in zip(inline.batch(s), pooled.batch(s)))
    err = capfd.readouterr().err
    assert all(err.count(p) == 2 for p in bad.values())  # once per ImageNetData: inline and pooled


MODELS = {
    "small_cnn": ["model=small_cnn", "model.width=4", "model.hidden=8"],
    "resnet18": ["model=resnet18"],
    "torchvision": ["model=torchvision", "model.arch=mobilenet_v3_small"],
    "custom": ["model=custom", "model.target=tests.usercode:tiny_net"],
}
TINY = ["trainer.max_steps=2", "trainer.log_every=1", "trainer.eval_every=2", "trainer.checkpoint_every=2",
        "trainer.progress=false", "trainer.scatter_sample=100", "device=cpu"]


@pytest.fixture(scope="module")
def odd_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd")
    make_tree(root, n=2, odd=True)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("decode", ["cpu", "device"])
@pytest.mark.parametrize("model", MODELS)
def test_imagefolder_trains_every_model_on_both_paths(model, decode, tree, tmp_path):
    from qatrun.train import train
    from tests.conftest import make_cfg

    cfg = make_cfg("dataset=imagefolder", f"dataset.root={tree}", f"dataset.decode={decode}", "dataset.batch_size=4",
                   "dataset.eval_batch_size=6", "dataset.workers=0", "dataset.image_size=16", "dataset.resize=18",
                   *MODELS[model], *TINY, tiny=False)
    s = train(cfg, tmp_path / "run")
    assert s["steps"] == 2 and s["est/loss"] > 0 and s["twin/loss"] > 0
    assert s["config"]["dataset"]["decode"] == decode and 0.0 <= s["est/test_acc"] <= 1.0


@pytest.mark.slow
def test_imagenet_preset_trains_on_the_device_path_through_odd_files_with_workers(odd_tree, tmp_path, capfd):
    from qatrun.train import train
    from tests.conftest import make_cfg

    cfg = make_cfg("experiment=imagenet", f"dataset.root={odd_tree}", "dataset.decode=device", "dataset.batch_size=4",
                   "dataset.eval_batch_size=4", "dataset.workers=1", "dataset.image_size=32", "dataset.resize=36",
                   "model=resnet18", "precision=fp32", "channels_last=false", "trainer.max_steps=6",
                   "trainer.log_every=1", "trainer.eval_every=6", "trainer.checkpoint_every=6", *TINY[4:], tiny=False)
    s = train(cfg, tmp_path / "run")
    assert s["steps"] == 6 and s["config"]["dataset"]["name"] == "imagenet"  # two epochs of 12 images
    err = capfd.readouterr().err
    assert err.count("truncated.JPEG cannot be decoded") == 1 and err.count("junk.JPEG cannot be decoded") == 1


@pytest.mark.slow
def test_loader_bench_prints_both_paths_beside_the_consumption(tmp_path, capsys):
    from qatrun.bench.cli import run

    out = run(["--cases", "loader", "--batch", "8", "--steps", "2", "--rounds", "1", "--workers", "1",
               "--out", str(tmp_path / "b.json")])
    text = capsys.readouterr().out
    res = json.loads((tmp_path / "b.json").read_text())["cases"]["loader"]
    assert set(res["paths"]) == {"pil", "device", "read"} and all(p["images_per_s"] > 0 for p in res["paths"].values())
    assert "pil: PIL decode + crop in the workers" in text and "device: decode + crop on" in text
    if not CUDA:
        assert "not measured (no GPU)" in text and res["targets"][0]["pass"] is None
        assert "quoted: an earlier H200 probe" in text
    assert res["cores_per_gpu"]["pil"] >= 1 and out["targets"][0]["key"] == "loader_over_consumption"


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_cuda_decode_matches_the_cpu_device_path(tree):
    cpu, gpu = data(tree), data(tree, device="cuda")
    for s in (0, 1):
        (xc, yc), (xg, yg) = cpu.batch(s), gpu.batch(s)
        diff = (_levels(xg.cpu()) - _levels(xc)).abs()
        assert torch.equal(yc, yg.cpu()) and diff.mean() <= 2.0 and diff.max() <= 24
