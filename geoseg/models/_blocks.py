"""Layers the architectures share: conv-BN-ReLU stacks, 2x upsamplers, the U-Net body.

Every helper builds its modules in the same order and with the same names the
architectures used before they shared them, so saved weights keep loading: a
``dims`` argument picks 2D or 3D layers. Every architecture takes
``in_channels`` (input bands or channels) and ``num_classes`` (output classes,
one logit channel each).
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import nn

from geoseg.models.probe import Span

CONV = {2: nn.Conv2d, 3: nn.Conv3d}
NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
MAX_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
TRANSPOSED = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


class PerAxis(tuple):
    """A per-axis tuple of ints whose ``int()`` is its largest entry (a conservative scalar)."""

    def __int__(self) -> int:
        return max(self)


def scalar_if_isotropic(values: tuple[int, ...]) -> int | PerAxis:
    """``values[0]`` when every axis has the same value, else a :class:`PerAxis`."""
    return values[0] if len(set(values)) == 1 else PerAxis(values)


def conv_bn_relu_layers(in_channels: int, out_channels: int, kernel: int = 3, dilation: int = 1,
                        dims: int = 2) -> list[nn.Module]:
    """A zero-padded ("same") convolution without bias, batch norm and ReLU, as a list."""
    conv = CONV[dims](in_channels, out_channels, kernel, padding=(kernel - 1) // 2 * dilation,
                      dilation=dilation, bias=False)
    return [conv, NORM[dims](out_channels), nn.ReLU(inplace=True)]


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 3, dilation: int = 1,
                 dims: int = 2) -> nn.Sequential:
    """A zero-padded ("same") convolution, batch norm and ReLU."""
    return nn.Sequential(*conv_bn_relu_layers(in_channels, out_channels, kernel, dilation, dims))


def double_conv(in_channels: int, out_channels: int, dims: int = 2) -> nn.Sequential:
    """Two 3x3 conv-BN-ReLU layers in one flat ``Sequential`` (the U-Net stage)."""
    return nn.Sequential(*conv_bn_relu_layers(in_channels, out_channels, dims=dims),
                         *conv_bn_relu_layers(out_channels, out_channels, dims=dims))


def conv_chain(widths: list[int]) -> nn.Sequential:
    """3x3 conv-BN-ReLU layers from ``widths[0]`` channels through each next width in turn."""
    return nn.Sequential(*[conv_bn_relu(a, b) for a, b in pairwise(widths)])


def nearest_upsampler(channels: int, factor: int) -> nn.ConvTranspose2d:
    """A ``kernel == stride`` transposed convolution initialised to nearest-neighbour upsampling."""
    up = nn.ConvTranspose2d(channels, channels, factor, stride=factor, bias=False)
    with torch.no_grad():
        up.weight.zero_()
        up.weight[range(channels), range(channels)] = 1.0
    return up


class Halving:
    """``stride`` and ``receptive_radius`` of a net that halves every axis ``depth`` times
    and states its dependency interval with ``span()``."""

    depth: int

    @property
    def stride(self) -> int:
        """Total downsampling: inputs must be multiples of this on every axis."""
        return 2**self.depth

    @property
    def receptive_radius(self) -> int:
        """Largest distance from an output pixel to an input pixel it depends on."""
        return self.span().radius  # type: ignore[attr-defined]


class UNetBody(nn.Module):
    """The U-Net: double-conv encoders, max pools, ``kernel == stride`` transposed convolutions,
    concatenated skips, double-conv decoders and a 1x1 head.

    ``factors[level]`` is the pooling factor per axis at ``level``; its length is the number of
    spatial axes, 2 or 3.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int,
                 factors: list[tuple[int, ...]]):
        super().__init__()
        dims, depth = len(factors[0]), len(factors)
        self.depth, self.factors = depth, factors
        chans = [width * 2**level for level in range(depth + 1)]
        self.encoders = nn.ModuleList([double_conv(([in_channels] + chans)[lv], chans[lv], dims)
                                       for lv in range(depth + 1)])
        self.pools = nn.ModuleList([MAX_POOL[dims](f) for f in factors])
        self.upsamplers = nn.ModuleList([TRANSPOSED[dims](chans[lv + 1], chans[lv], f, stride=f)
                                         for lv, f in enumerate(factors)])
        self.decoders = nn.ModuleList([double_conv(2 * chans[lv], chans[lv], dims)
                                       for lv in range(depth)])
        self.head = CONV[dims](chans[0], num_classes, 1)

    @property
    def stride(self) -> int | PerAxis:
        """Total downsampling per axis: inputs must be multiples of it."""
        axes = range(len(self.factors[0]))
        return scalar_if_isotropic(tuple(math.prod(f[axis] for f in self.factors) for axis in axes))

    @property
    def receptive_radius(self) -> int | PerAxis:
        """Largest distance per axis from an output pixel to an input it reads."""
        return scalar_if_isotropic(tuple(self.span(axis).radius for axis in range(len(self.factors[0]))))

    def span(self, axis: int = 0) -> Span:
        """Dependency interval of an output pixel along ``axis``."""
        span, skips = Span(), []
        for level in range(self.depth):
            span = span.conv(3).conv(3)
            skips.append(span)
            factor = self.factors[level][axis]
            span = span.conv(factor, stride=factor, padding=0)
        span = span.conv(3).conv(3)
        for level in reversed(range(self.depth)):
            span = span.transposed(self.factors[level][axis]).union(skips[level])
            span = span.conv(3).conv(3)
        return span

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x if level == 0 else self.pools[level - 1](x))
            skips.append(x)
        for level in reversed(range(self.depth)):
            x = self.upsamplers[level](x)
            x = self.decoders[level](torch.cat([skips[level], x], dim=1))
        return self.head(x)
