"""A user's own code, as the README's "Your own model and data" describes it: a model builder and a
dataset builder that qatrun imports by path (``model.target=tests.usercode:tiny_net``)."""

import torch
import torch.nn as nn


def tiny_net(num_classes: int, in_channels: int, width: int = 8) -> nn.Module:
    """A user's CNN: two convolutions (quantized), a hidden Linear and the classifier (float)."""
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * width, 16), nn.ReLU(),
                         nn.Linear(16, num_classes))


def no_classifier(num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, num_classes, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def not_a_module(num_classes: int):
    return "a string"


class Stripes:
    """A user's dataset: class c has bright rows c, c+k, ...; batches are a function of the step."""

    def __init__(self, seed: int = 0, num_classes: int = 3, side: int = 12, batch: int = 16, steps: int = 4):
        self.num_classes, self.input_shape, self.steps_per_epoch = num_classes, (1, side, side), steps
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, num_classes, (batch * (steps + 1),), generator=g)
        self.x = torch.randn(len(self.y), 1, side, side, generator=g) * 0.3
        for c in range(num_classes):
            self.x[self.y == c, :, c::num_classes, :] += 1.0
        self.batch_size = batch

    def batch(self, step: int):
        i = (step % self.steps_per_epoch) * self.batch_size
        return self.x[i : i + self.batch_size], self.y[i : i + self.batch_size]

    def test_batches(self):
        yield self.x[-self.batch_size :], self.y[-self.batch_size :]


def stripes(seed: int, num_classes: int = 3) -> Stripes:
    return Stripes(seed, num_classes)


def zero_channel_net(num_classes: int, in_channels: int) -> nn.Module:
    """``tiny_net`` whose second convolution's output channel 3 has all-zero weights (a pruned channel)."""
    net = tiny_net(num_classes, in_channels)
    with torch.no_grad():
        net[2].weight[3].zero_()
    return net


def equal_channels_net(num_classes: int, in_channels: int) -> nn.Module:
    """``tiny_net`` whose convolutions have every output channel at max-abs 0.5 (``w / max|w_c| * 0.5``: the
    largest weight of each channel is 0.5 exactly), so one range per tensor and one per channel coincide."""
    net = tiny_net(num_classes, in_channels)
    with torch.no_grad():
        for conv in (net[0], net[2]):
            conv.weight.div_(conv.weight.abs().amax(dim=(1, 2, 3), keepdim=True)).mul_(0.5)
    return net
