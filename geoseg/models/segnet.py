"""SegNet (Badrinarayanan et al., 2017) for 2D rasters, in plain torch.

The encoder is ``depth`` stages of 3x3 conv-BN-ReLU layers, each followed by a
2x2 max pool that remembers where every maximum came from. The decoder mirrors
it: each stage puts its input back at those positions (``MaxUnpool2d``, zeros
elsewhere) and densifies the sparse map with 3x3 convolutions.

Receptive field: an unpooled pixel depends on the decoder's coarse pixel above
it *and*, through the pooling indices, on the whole 2x2 pooling window of the
encoder feature map at that level (which of the four was the maximum). Gradients
do not flow through indices, so :func:`~geoseg.models.probe.measure_receptive_radius`
needs its impulse method to see that part.
"""

from __future__ import annotations

import torch
from torch import nn

from geoseg.errors import ModelConfigError
from geoseg.models._blocks import Halving, conv_chain
from geoseg.models.probe import Span
from geoseg.models.registered import register_architecture


@register_architecture("segnet")
class SegNet(Halving, nn.Module):
    """SegNet: an encoder-decoder that upsamples with the encoder's max-pooling indices.

    Parameters
    ----------
    in_channels, num_classes
        Input bands and output classes.
    depth
        Number of 2x poolings (and unpoolings); the total stride is ``2 ** depth``.
    width
        Channels of the first stage; doubled at each stage up to ``8 * width``.
    convs
        3x3 convolutions per encoder and per decoder stage.
    """

    spatial_dims = 2
    global_context = False

    def __init__(self, in_channels: int = 3, num_classes: int = 2, depth: int = 4, width: int = 16,
                 convs: int = 2):
        super().__init__()
        if depth < 1 or width < 1 or convs < 1:
            raise ModelConfigError(f"depth, width and convs must be >= 1, got depth={depth}, "
                                   f"width={width}, convs={convs}.")
        self.in_channels, self.depth, self.convs = in_channels, depth, convs
        chans = [width * 2 ** min(level, 3) for level in range(depth)]
        self.encoders = nn.ModuleList([conv_chain([([in_channels] + chans)[lv]] + [chans[lv]] * convs)
                                       for lv in range(depth)])
        # each decoder stage keeps its width until its last convolution
        self.decoders = nn.ModuleList([conv_chain([chans[lv]] * convs + [chans[max(lv - 1, 0)]])
                                       for lv in range(depth)])
        self.pool = nn.MaxPool2d(2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2)
        self.head = nn.Conv2d(chans[0], num_classes, 1)

    def span(self) -> Span:
        """Dependency interval of an output pixel (see :class:`~geoseg.models.probe.Span`).

        At each unpooling, the fine pixel reads the coarse decoder pixel above it
        (a 2x "transposed" step) and, through the indices, the 2x2 window of the
        encoder map around it: offsets -1..+1 fine pixels, i.e. a 3-wide window.
        """
        span, encoded = Span(), []
        for _ in range(self.depth):
            for _ in range(self.convs):
                span = span.conv(3)
            encoded.append(span)
            span = span.conv(2, stride=2, padding=0)
        for level in reversed(range(self.depth)):
            span = span.transposed(2).union(encoded[level].conv(3))
            for _ in range(self.convs):
                span = span.conv(3)
        return span

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        indices, sizes = [], []
        for encoder in self.encoders:
            x = encoder(x)
            sizes.append(x.shape[-2:])
            x, idx = self.pool(x)
            indices.append(idx)
        for level in reversed(range(self.depth)):
            x = self.unpool(x, indices[level], output_size=sizes[level])
            x = self.decoders[level](x)
        return self.head(x)
