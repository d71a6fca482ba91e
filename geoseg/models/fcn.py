"""FCN-8s (Long et al., 2015) for 2D rasters, in plain torch.

A VGG-style encoder (``depth`` stages of 3x3 convolutions, each followed by a
2x2 max pool) ends in "fully connected" convolutions at stride ``2**depth``.
Class scores are read at the three coarsest strides (8, 16 and 32 for the
classic ``depth=5``), fused coarse to fine by 2x learned upsampling and skip
addition, then upsampled to full resolution.

Unlike the original (100-pixel input padding, cropping, overlapping bilinear
deconvolutions), every convolution here pads with zeros and every transposed
convolution has ``kernel == stride``, initialised to nearest-neighbour
upsampling. The net is therefore equivariant to shifts by its stride and its
receptive field is bounded and computed exactly by :class:`~geoseg.models.probe.Span`.
"""

from __future__ import annotations

import torch
from torch import nn

from geoseg.errors import ModelConfigError
from geoseg.models._blocks import Halving, conv_bn_relu, conv_chain, nearest_upsampler
from geoseg.models.probe import Span
from geoseg.models.registered import register_architecture


@register_architecture("fcn")
class FCN8s(Halving, nn.Module):
    """FCN-8s with a small VGG-style encoder.

    Parameters
    ----------
    in_channels, num_classes
        Input bands and output classes.
    depth
        Number of 2x downsamplings (>= 3); the total stride is ``2 ** depth`` and
        scores are fused at strides ``2 ** (depth - 2)``, ``2 ** (depth - 1)``
        and ``2 ** depth`` (8, 16, 32 for the default 5).
    width
        Channels of the first stage; doubled at each stage up to ``8 * width``.
    convs
        3x3 convolutions per encoder stage.
    fc_channels
        Channels of the convolutional "fully connected" layers (default ``16 * width``).
    fc_kernel
        Kernel of the first of them (odd; 7 in the original, 3 by default).
    """

    spatial_dims = 2
    global_context = False

    def __init__(self, in_channels: int = 3, num_classes: int = 2, depth: int = 5, width: int = 16,
                 convs: int = 2, fc_channels: int | None = None, fc_kernel: int = 3):
        super().__init__()
        if depth < 3 or width < 1 or convs < 1 or fc_kernel < 1 or fc_kernel % 2 == 0:
            raise ModelConfigError(f"need depth >= 3, width >= 1, convs >= 1 and an odd fc_kernel; got "
                                   f"depth={depth}, width={width}, convs={convs}, fc_kernel={fc_kernel}.")
        self.in_channels, self.depth = in_channels, depth
        self.convs, self.fc_kernel = convs, fc_kernel
        chans = [width * 2 ** min(level, 3) for level in range(depth)]
        fc_channels = fc_channels or 16 * width
        self.stages = nn.ModuleList([conv_chain([([in_channels] + chans)[lv]] + [chans[lv]] * convs)
                                     for lv in range(depth)])
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Sequential(conv_bn_relu(chans[-1], fc_channels, fc_kernel),
                                conv_bn_relu(fc_channels, fc_channels, 1))
        self.score_fc = nn.Conv2d(fc_channels, num_classes, 1)
        self.score_mid = nn.Conv2d(chans[-2], num_classes, 1)  # pool output at 2 ** (depth - 1)
        self.score_fine = nn.Conv2d(chans[-3], num_classes, 1)  # pool output at 2 ** (depth - 2)
        self.up_mid = nearest_upsampler(num_classes, 2)
        self.up_fine = nearest_upsampler(num_classes, 2)
        self.up_full = nearest_upsampler(num_classes, 2 ** (depth - 2))

    def span(self) -> Span:
        """Dependency interval of an output pixel (see :class:`~geoseg.models.probe.Span`)."""
        span, pooled = Span(), []
        for _ in range(self.depth):
            for _ in range(self.convs):
                span = span.conv(3)
            span = span.conv(2, stride=2, padding=0)
            pooled.append(span)
        span = span.conv(self.fc_kernel).transposed(2).union(pooled[-2])
        return span.transposed(2).union(pooled[-3]).transposed(2 ** (self.depth - 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []
        for stage in self.stages:
            x = self.pool(stage(x))
            pooled.append(x)
        score = self.up_mid(self.score_fc(self.fc(x))) + self.score_mid(pooled[-2])
        score = self.up_fine(score) + self.score_fine(pooled[-3])
        return self.up_full(score)
