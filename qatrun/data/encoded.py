"""The worker side of ``dataset.decode=device``: read each image file's bytes, decode nothing that
the device can decode.

A DataLoader worker reads the file and looks at its JPEG header (a few hundred bytes, no decode).
A baseline 8-bit three-component JPEG, what almost every ImageNet file is, travels as its encoded
bytes and is decoded in a batch on the run's device (``qatrun.data.devicedecode``). Anything else
(PNG, greyscale or CMYK JPEG, progressive JPEG, a file whose header cannot be read) is decoded
here on the CPU to RGB uint8 (``torchvision.io.decode_image``, then PIL), and a file neither can
decode is marked ``CORRUPT``: the main process names it once and replaces it. So a worker never
raises on a bad image, and the CPU does the decode only for the rare files that need it.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from torch.utils.data import Dataset

ENCODED, DECODED, CORRUPT = 0, 1, 2  # what a sample's payload holds

# Start-of-frame markers the device decoder takes: baseline and extended sequential Huffman.
# Progressive (0xC2) and the rest go the CPU way; nvJPEG's batched decode does not take them all.
_DEVICE_SOF = (0xC0, 0xC1)
_OTHER_SOF = (0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)
_NO_LENGTH = {0x01, *range(0xD0, 0xD8)}  # markers without a length field (TEM, RSTn)


def jpeg_frame(data: bytes) -> tuple[int, int, int, int, int] | None:
    """``(marker, precision, height, width, components)`` of a JPEG's frame header, or None when
    ``data`` is not a JPEG or its header cannot be read. Walks the marker segments only."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _NO_LENGTH:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _DEVICE_SOF or marker in _OTHER_SOF:
            if pos + 10 > n:
                return None
            precision = data[pos + 4]
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            return marker, precision, height, width, data[pos + 9]
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        pos += 2 + length
    return None


def device_decodable(data: bytes) -> bool:
    """A baseline or extended 8-bit YCbCr JPEG with a non-empty frame."""
    frame = jpeg_frame(data)
    if frame is None:
        return False
    marker, precision, height, width, components = frame
    return marker in _DEVICE_SOF and precision == 8 and components == 3 and height > 0 and width > 0


def cpu_decode(data: bytes) -> torch.Tensor | None:
    """RGB uint8 (3, H, W) from any image file torchvision or PIL reads; None when neither can."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except Exception:  # torchvision does not read every format PIL does (e.g. BMP): try PIL next
        pass
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            arr = np.asarray(img.convert("RGB"))
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
    except Exception:  # a corrupt file: the caller names it and replaces it
        return None


class EncodedImages(Dataset):
    """``(payload, kind, label)`` per sample of ``samples`` (``(path, label)`` pairs, ImageFolder's):
    the file's bytes (``ENCODED``), its CPU decode (``DECODED``) or an empty tensor (``CORRUPT``)."""

    def __init__(self, samples, classes):
        self.samples, self.classes = list(samples), list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.samples)

    def path(self, index: int) -> str:
        return self.samples[index][0]

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return torch.empty(0, dtype=torch.uint8), CORRUPT, label, index
        if device_decodable(data):
            return torch.frombuffer(bytearray(data), dtype=torch.uint8), ENCODED, label, index
        image = cpu_decode(data)
        if image is None:
            return torch.empty(0, dtype=torch.uint8), CORRUPT, label, index
        return image, DECODED, label, index


def collate_encoded(items):
    """A batch of ``EncodedImages`` items: payloads as a list (their sizes differ), kinds, labels and
    indices as int64 tensors."""
    payloads, kinds, labels, indices = zip(*items)
    as_long = lambda v: torch.tensor(v, dtype=torch.int64)  # noqa: E731
    return list(payloads), as_long(kinds), as_long(labels), as_long(indices)


__all__ = ["CORRUPT", "DECODED", "ENCODED", "EncodedImages", "collate_encoded", "cpu_decode", "device_decodable",
           "jpeg_frame"]
