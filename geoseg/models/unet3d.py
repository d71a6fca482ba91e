"""3D U-Net (Cicek et al., 2016) for volumes ``(N, C, Z, Y, X)``, in plain torch.

Same design as :class:`~geoseg.models.unet.UNet2D` (zero-padded 3x3x3
convolutions, 2x max pooling, ``kernel == stride`` transposed convolutions,
concatenated skips), with optional anisotropic pooling for stacks whose z
spacing is coarser than their pixels: ``pool_z=False`` never pools z, an int
``k`` pools z only at the ``k`` deepest levels.

Per-axis metadata
-----------------
``stride`` and ``receptive_radius`` are plain ints when they are the same on
every axis (the isotropic case), and otherwise :class:`PerAxis` tuples
``(z, y, x)``. ``int()`` of a :class:`PerAxis` is its largest entry, which is
a safe isotropic value (strides are powers of two, so the largest is a multiple
of the others) for callers that want one int per network.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from geoseg.errors import ModelConfigError
from geoseg.models.probe import Span
from geoseg.models.registry import register_architecture


class PerAxis(tuple):
    """A per-axis tuple of ints whose ``int()`` is its largest entry (a conservative scalar)."""

    def __int__(self) -> int:
        return max(self)


def _double_conv3d(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
    )


def _scalar_if_isotropic(values: tuple[int, ...]) -> int | PerAxis:
    return values[0] if len(set(values)) == 1 else PerAxis(values)


@register_architecture("unet3d")
class UNet3D(nn.Module):
    """A 3D U-Net.

    Parameters
    ----------
    in_channels
        Number of input channels.
    num_classes
        Number of output classes (logit channels).
    depth
        Number of 2x downsamplings in y and x; the y/x stride is ``2 ** depth``.
    width
        Channels at full resolution; doubled at every level.
    pool_z
        Which levels also pool z: all (``True``), none (``False``), or the
        ``k`` deepest (an int ``0 <= k <= depth``). The z stride is ``2 ** k``.
    """

    spatial_dims = 3
    global_context = False

    def __init__(self, in_channels: int = 1, num_classes: int = 2, depth: int = 3, width: int = 8,
                 pool_z: bool | int = True):
        super().__init__()
        z_levels = depth if pool_z is True else 0 if pool_z is False else int(pool_z)
        if depth < 1 or width < 1 or not 0 <= z_levels <= depth:
            raise ModelConfigError(f"need depth >= 1, width >= 1 and 0 <= pool_z <= depth; got "
                                   f"depth={depth}, width={width}, pool_z={pool_z}.")
        self.in_channels, self.depth = in_channels, depth
        self.factors = [(2 if level >= depth - z_levels else 1, 2, 2) for level in range(depth)]
        chans = [width * 2**level for level in range(depth + 1)]
        self.encoders = nn.ModuleList([_double_conv3d(([in_channels] + chans)[lv], chans[lv])
                                       for lv in range(depth + 1)])
        self.pools = nn.ModuleList([nn.MaxPool3d(f) for f in self.factors])
        self.upsamplers = nn.ModuleList([nn.ConvTranspose3d(chans[lv + 1], chans[lv], f, stride=f)
                                         for lv, f in enumerate(self.factors)])
        self.decoders = nn.ModuleList([_double_conv3d(2 * chans[lv], chans[lv])
                                       for lv in range(depth)])
        self.head = nn.Conv3d(chans[0], num_classes, 1)

    @property
    def stride(self) -> int | PerAxis:
        """Total downsampling per axis ``(z, y, x)``: inputs must be multiples of it."""
        strides = tuple(math.prod(f[axis] for f in self.factors) for axis in range(3))
        return _scalar_if_isotropic(strides)

    @property
    def receptive_radius(self) -> int | PerAxis:
        """Largest distance per axis ``(z, y, x)`` from an output voxel to an input it reads."""
        return _scalar_if_isotropic(tuple(self.span(axis).radius for axis in range(3)))

    def span(self, axis: int) -> Span:
        """Dependency interval of an output voxel along ``axis`` (0: z, 1: y, 2: x)."""
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

