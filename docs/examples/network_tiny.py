"""A geoseg network: the smallest architecture a model file can name, as a template.

An architecture is a ``torch.nn.Module`` that takes ``in_channels`` and ``num_classes``
keyword arguments and says how it tiles: ``stride`` (input pixels per output pixel, per
axis), ``receptive_radius`` (pixels of context each output pixel sees on each side, so
tiles cut with that halo stitch exactly) and ``spatial_dims`` (2 for images, 3 for
volumes). Register it in your ``pyproject.toml``; model files that say
``architecture: tiny-fcn`` then load anywhere geoseg is installed with your package::

    [project.entry-points."geoseg.models"]
    tiny-fcn = "network_tiny:TinyFCN"
"""

from __future__ import annotations

import torch
from torch import nn


class TinyFCN(nn.Module):
    """Two 3x3 convolutions: every output pixel sees 2 input pixels on each side."""

    stride = 1
    receptive_radius = 2
    spatial_dims = 2

    def __init__(self, in_channels: int, num_classes: int, width: int = 8):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, num_classes, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
