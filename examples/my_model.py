"""An example of your own model: `make sweep MODEL=examples.my_model:build` (or `--model
examples.my_model:build` to bin/sweep and the trainers).

The function takes the data set's spec (`spec.shape`: one sample's C, H, W; `spec.num_classes`;
`spec.in_features`: C x H x W) and returns the model as a list of `nn.Module` blocks. Each block
takes one tensor and returns one: the staged strategies cut the list between blocks, so 5 blocks
allow up to 5 stages. Weights are initialised from the run's seed (torchswitch seeds the RNG
before calling the function), so every strategy starts from the same parameters. No BatchNorm and
no dropout here: the maths is then the same under every strategy (docs/strategies.md#batchnorm).
"""

from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    """x + f(x): a block of your own is any nn.Module with one tensor in and one out."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


def build(spec, width: int = 16) -> list[nn.Module]:  # noqa: ANN001 - trainers.common.data.DataSpec
    channels = spec.shape[0]
    return [
        nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()),
        Residual(width),
        nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten()),
        nn.Sequential(nn.Linear(width * 16, 64), nn.ReLU()),
        nn.Linear(64, spec.num_classes),
    ]
