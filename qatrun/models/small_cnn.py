"""The authors' MNIST CNN (arXiv 2405.05171, MNIST experiments).

    Conv(32, 3x3) - ReLU - AvgPool(2) - Conv(64, 3x3) - ReLU - AvgPool(2) - Flatten
    - Dense(256) - ReLU - Dense(10)

The authors wrote it in Flax, whose convolutions default to ``padding="SAME"``: a 3x3 conv with
stride 1 keeps the spatial size, so here ``padding=1`` and a 28x28 input goes
28 -> 28 -> 14 -> 14 -> 7, flattening to ``2 * width * 7 * 7`` (3136 at width 32).
(Flax flattens NHWC, PyTorch NCHW: only a fixed permutation of the dense layer's inputs, which is
irrelevant when training from scratch.)

Only the two convolutions are quantized in the paper; both Dense layers stay float (the runner
asks ``qatrun.models.quantized_names``). The builder returns a plain float model with PyTorch's
default initialization; the runner re-draws the quantized weights He-uniform itself.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Tuple

import torch.nn as nn

from qatrun import checks
from qatrun.models.base import MODELS


@MODELS.register("small_cnn")
def small_cnn(
    num_classes: int = 10,
    input_shape: Tuple[int, int, int] = (1, 28, 28),
    width: int = 32,
    hidden: int = 256,
) -> nn.Sequential:
    """The MNIST CNN; modules ``conv1, relu1, pool1, conv2, relu2, pool2, flatten, fc1, relu3, fc2``.

    ``fc2`` (the last Linear) is the classifier. ``input_shape`` ``(channels, height, width)`` sets the
    first convolution's inputs and the flattened size: height and width must be divisible by 4.
    """
    in_channels, height, width_px = (int(s) for s in input_shape)
    for key, val in (("num_classes", num_classes), ("in_channels", in_channels), ("width", width),
                     ("hidden", hidden), ("height", height), ("width", width_px)):
        checks.positive_int(f"small_cnn: {key}", val)
    if height % 4 or width_px % 4:
        raise ValueError(f"model=small_cnn needs an image height and width divisible by 4 (two 2x2 poolings), "
                         f"got {height}x{width_px}; resize the data (dataset.image_size) or choose another model")
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(in_channels, width, kernel_size=3, padding=1)),
                ("relu1", nn.ReLU()),
                ("pool1", nn.AvgPool2d(2)),
                ("conv2", nn.Conv2d(width, 2 * width, kernel_size=3, padding=1)),
                ("relu2", nn.ReLU()),
                ("pool2", nn.AvgPool2d(2)),
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(2 * width * (height // 4) * (width_px // 4), hidden)),
                ("relu3", nn.ReLU()),
                ("fc2", nn.Linear(hidden, num_classes)),
            ]
        )
    )
