"""The device side of ``dataset.decode=device``: decode a batch of JPEGs on the run's device and
crop, flip and normalise it there, with the augmentation of ``qatrun.data.imagenet``'s PIL path.

Train: RandomResizedCrop(image_size, scale=(0.08, 1), ratio=(3/4, 4/3)) + horizontal flip (p=0.5);
evaluation: Resize(resize) (shorter side) + CenterCrop(image_size); both then ``x / 255``,
ImageNet's mean and std. The resizes are bilinear with antialiasing
(``torchvision.transforms.v2.functional`` on tensors), what PIL does when it shrinks.

Randomness: the crop and flip of the sample in slot ``s`` of the global batch of step ``t`` come
from row ``s`` of a table of uniforms drawn on the host from ``numpy.random.default_rng([seed, t])``
(``step_uniforms``): 10 tries of (scale, log-ratio, top, left) as torchvision's
``RandomResizedCrop.get_params`` makes them, then the flip. A rank reads its own rows, so one
process and ``world`` processes, both runs of a pair, and a resumed run see the same batches.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch

from qatrun.data.encoded import CORRUPT, DECODED, ENCODED, cpu_decode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SCALE, RATIO = (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0)
ATTEMPTS = 10  # RandomResizedCrop's tries before its centre-crop fallback
DRAWS = 4 * ATTEMPTS + 1  # uniforms per sample: 4 per try, then the flip


def step_uniforms(seed: int, step: int, global_batch: int) -> np.ndarray:
    """``(global_batch, DRAWS)`` uniforms in [0, 1), a function of ``(seed, step)`` only."""
    return np.random.default_rng([seed % 2**64, step]).random((global_batch, DRAWS))


def crop_params(u, height: int, width: int, scale=SCALE, ratio=RATIO) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of RandomResizedCrop for an image ``height x width``, from one row of
    ``step_uniforms`` (torchvision's ``get_params`` with its random draws replaced by ``u``)."""
    area = height * width
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    for k in range(ATTEMPTS):
        us, ur, ui, uj = (float(v) for v in u[4 * k : 4 * k + 4])
        target = area * (scale[0] + us * (scale[1] - scale[0]))
        aspect = math.exp(lo + ur * (hi - lo))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(ui * (height - h + 1)), int(uj * (width - w + 1)), h, w
    in_ratio = width / height  # no try fitted: the centre crop at the nearest allowed ratio
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def train_params(seed: int, step: int, global_batch: int, slots, sizes) -> list[tuple[int, int, int, int, bool]]:
    """``(top, left, h, w, flip)`` per sample: slot ``slots[k]`` of the global batch, image ``sizes[k]``."""
    u = step_uniforms(seed, step, global_batch)
    return [(*crop_params(u[s], h, w), bool(u[s, -1] < 0.5)) for s, (h, w) in zip(slots, sizes)]


class DeviceDecoder:
    """Decodes ``EncodedImages`` batches on ``device`` and augments them there; names each file it
    cannot decode once (stderr) and replaces it by a mean-grey image (zero after normalisation)."""

    def __init__(self, device, image_size: int, resize: int):
        self.device, self.size, self.resize = torch.device(device), image_size, resize
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        grey = torch.tensor(IMAGENET_MEAN).mul(255).round().to(torch.uint8)
        self.grey = grey.view(3, 1, 1).expand(3, image_size, image_size).contiguous().to(self.device)
        self.warned: set[str] = set()

    def _corrupt(self, path: str) -> torch.Tensor:
        if path not in self.warned:
            self.warned.add(path)
            print(f"qatrun: warning: {path} cannot be decoded as an image; it is replaced by a mean-grey image "
                  "(its label kept)", file=sys.stderr, flush=True)
        return self.grey

    def _one(self, data: torch.Tensor, path: str) -> torch.Tensor:
        """One JPEG the batched decode refused: alone on the device, else on the CPU, else replaced."""
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:
            image = cpu_decode(data.numpy().tobytes())
            return self._corrupt(path) if image is None else image.to(self.device)

    def decode(self, payloads, kinds, paths) -> list[torch.Tensor]:
        """RGB uint8 ``(3, H, W)`` images on the device, one per payload (``EncodedImages`` kinds)."""
        from torchvision.io import ImageReadMode, decode_jpeg

        out: list[torch.Tensor | None] = [None] * len(payloads)
        jpegs = [k for k, kind in enumerate(kinds) if kind == ENCODED]
        if jpegs:
            try:  # one batched call: nvJPEG decodes the whole batch on a CUDA device
                images = decode_jpeg([payloads[k] for k in jpegs], mode=ImageReadMode.RGB, device=self.device)
            except RuntimeError:  # one bad file fails the call: find it by decoding one at a time
                images = [self._one(payloads[k], paths[k]) for k in jpegs]
            for k, image in zip(jpegs, images):
                out[k] = image
        for k, kind in enumerate(kinds):
            if kind == DECODED:
                out[k] = payloads[k].to(self.device, non_blocking=True)
            elif kind == CORRUPT:
                out[k] = self._corrupt(paths[k])
        return out

    def normalise(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, 3, S, S)`` -> float32, as ToTensor + Normalize compute it."""
        return batch.float().div_(255).sub_(self.mean).div_(self.std)

    def train(self, images, params) -> torch.Tensor:
        """RandomResizedCrop + flip of each image with its ``params`` (``train_params``), normalised."""
        from torchvision.transforms.v2 import functional as F

        out = torch.empty((len(images), 3, self.size, self.size), dtype=torch.uint8, device=self.device)
        for k, (image, (top, left, h, w, flip)) in enumerate(zip(images, params)):
            crop = F.resized_crop(image, top, left, h, w, [self.size, self.size], antialias=True)
            out[k] = crop.flip(-1) if flip else crop
        return self.normalise(out)

    def eval(self, images) -> torch.Tensor:
        """Resize(resize) + CenterCrop(image_size) of each image, normalised."""
        from torchvision.transforms.v2 import functional as F

        out = torch.empty((len(images), 3, self.size, self.size), dtype=torch.uint8, device=self.device)
        for k, image in enumerate(images):
            out[k] = F.center_crop(F.resize(image, [self.resize], antialias=True), [self.size, self.size])
        return self.normalise(out)

    def _images(self, batch, dataset):
        payloads, kinds, labels, indices = batch
        paths = [dataset.path(i) for i in indices.tolist()]
        return self.decode(payloads, kinds.tolist(), paths), labels.to(self.device, non_blocking=True)

    def train_batch(self, batch, dataset, seed: int, step: int, global_batch: int, rank: int):
        """``(x, y)`` on the device from a ``collate_encoded`` batch of ``dataset``: rank ``rank``'s
        slice of the global batch of ``step``, so its slots start at ``rank * len(slice)``."""
        images, y = self._images(batch, dataset)
        first = rank * len(images)
        params = train_params(seed, step, global_batch, range(first, first + len(images)),
                              [tuple(im.shape[-2:]) for im in images])
        return self.train(images, params), y

    def eval_batch(self, batch, dataset):
        images, y = self._images(batch, dataset)
        return self.eval(images), y


__all__ = ["DeviceDecoder", "crop_params", "step_uniforms", "train_params"]
