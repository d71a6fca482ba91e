"""U-Net (Ronneberger et al., 2015) for 2D rasters, in plain torch.

Convolutions pad with zeros, pooling is 2x2 with stride 2 and upsampling is a
2x2 transposed convolution with stride 2, so every output pixel depends on a
bounded, stride-periodic neighbourhood of the input: the receptive field below
is exact enough to size halos for seamless chunked inference.
"""

from __future__ import annotations

from geoseg.errors import ModelConfigError
from geoseg.models._blocks import UNetBody
from geoseg.models.registered import register_architecture


@register_architecture("unet")
class UNet2D(UNetBody):
    """A 2D U-Net.

    Parameters
    ----------
    in_channels, num_classes
        Input bands and output classes.
    depth
        Number of 2x downsamplings; the total stride is ``2 ** depth``.
    width
        Channels at full resolution; doubled at every level.
    """

    spatial_dims = 2

    def __init__(self, in_channels: int = 3, num_classes: int = 2, depth: int = 3, width: int = 16):
        if depth < 1 or width < 1:
            raise ModelConfigError(f"depth and width must be >= 1, got depth={depth}, width={width}.")
        super().__init__(in_channels, num_classes, width, [(2, 2)] * depth)


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
