"""U-Net (Ronneberger et al., 2015) for 2D rasters, in plain torch.

Convolutions pad with zeros, pooling is 2x2 with stride 2 and upsampling is a
2x2 transposed convolution with stride 2, so every output pixel depends on a
bounded, stride-periodic neighbourhood of the input: the receptive field below
is exact enough to size halos for seamless chunked inference.
"""

from __future__ import annotations

import torch
from torch import nn

from geoseg.errors import ModelConfigError
from geoseg.models.registry import register_architecture


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


@register_architecture("unet")
class UNet2D(nn.Module):
    """A 2D U-Net.

    Parameters
    ----------
    in_channels
        Number of input bands.
    num_classes
        Number of output classes (logit channels).
    depth
        Number of 2x downsamplings; the total stride is ``2 ** depth``.
    width
        Channels at full resolution; doubled at every level.
    """

    spatial_dims = 2

    def __init__(self, in_channels: int = 3, num_classes: int = 2, depth: int = 3, width: int = 16):
        super().__init__()
        if depth < 1 or width < 1:
            raise ModelConfigError(f"depth and width must be >= 1, got depth={depth}, width={width}.")
        self.depth = depth
        chans = [width * 2**level for level in range(depth + 1)]
        self.encoders = nn.ModuleList(
            [_double_conv(in_channels, chans[0])]
            + [_double_conv(chans[lv - 1], chans[lv]) for lv in range(1, depth + 1)]
        )
        self.pool = nn.MaxPool2d(2)
        self.upsamplers = nn.ModuleList(
            [nn.ConvTranspose2d(chans[lv + 1], chans[lv], 2, stride=2) for lv in range(depth)]
        )
        self.decoders = nn.ModuleList([_double_conv(2 * chans[lv], chans[lv]) for lv in range(depth)])
        self.head = nn.Conv2d(chans[0], num_classes, 1)

    @property
    def stride(self) -> int:
        """Total downsampling: inputs must be multiples of this on every axis."""
        return 2**self.depth

    @property
    def receptive_radius(self) -> int:
        """Largest distance from an output pixel to an input pixel it depends on."""
        return unet_receptive_radius(self.depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x if level == 0 else self.pool(x))
            skips.append(x)
        for level in reversed(range(self.depth)):
            x = self.upsamplers[level](x)
            x = self.decoders[level](torch.cat([skips[level], x], dim=1))
        return self.head(x)


def unet_receptive_radius(depth: int, convs: int = 2, kernel: int = 3) -> int:
    """Receptive-field radius of :class:`UNet2D`, by interval propagation.

    Track, relative to an output pixel's position at each level, the lowest and
    highest input offsets it can depend on (worst case over positions within a
    stride period): a 3x3 conv at level ``l`` widens both sides by ``2**l``, a
    2x2 pool extends the high side by ``2**l``, and a stride-2 transposed conv
    makes odd positions reach one coarse pixel back.
    """
    reach = (kernel - 1) // 2 * convs
    lo = hi = 0
    skips = []
    for level in range(depth):
        lo, hi = lo - reach * 2**level, hi + reach * 2**level
        skips.append((lo, hi))
        hi += 2**level
    lo, hi = lo - reach * 2**depth, hi + reach * 2**depth
    for level in reversed(range(depth)):
        lo = min(lo - 2**level, skips[level][0])
        hi = max(hi, skips[level][1])
        lo, hi = lo - reach * 2**level, hi + reach * 2**level
    return max(-lo, hi)
