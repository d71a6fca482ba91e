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

from geoseg.errors import ModelConfigError
from geoseg.models._blocks import PerAxis, UNetBody
from geoseg.models.registered import register_architecture

__all__ = ["PerAxis", "UNet3D"]


@register_architecture("unet3d")
class UNet3D(UNetBody):
    """A 3D U-Net.

    Parameters
    ----------
    in_channels, num_classes
        Input channels and output classes.
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
        z_levels = depth if pool_z is True else 0 if pool_z is False else int(pool_z)
        if depth < 1 or width < 1 or not 0 <= z_levels <= depth:
            raise ModelConfigError(f"need depth >= 1, width >= 1 and 0 <= pool_z <= depth; got "
                                   f"depth={depth}, width={width}, pool_z={pool_z}.")
        factors = [(2 if level >= depth - z_levels else 1, 2, 2) for level in range(depth)]
        super().__init__(in_channels, num_classes, width, factors)
        self.in_channels = in_channels
