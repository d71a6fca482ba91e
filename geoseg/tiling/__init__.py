"""Tiling plans: where each task reads, what each tile computes, what it writes.

:class:`Plan` is the one place tiles, halos, windows, task regions and output chunks are
decided; the rest is its arithmetic. Pure Python: importing this loads no numpy, torch or dask.
"""

from geoseg.tiling._plan import (
    DEFAULT_CHUNK,
    INPUT_CHUNK,
    Geometry,
    InferenceSettings,
    Layout,
    Plan,
    default_chunks,
)
from geoseg.tiling.plan import (
    AxisTile,
    Tile,
    Tiling,
    axis_tiles,
    n_regions,
    read_window,
    region_tiles,
    regions,
)

__all__ = [
    "DEFAULT_CHUNK",
    "INPUT_CHUNK",
    "AxisTile",
    "Geometry",
    "InferenceSettings",
    "Layout",
    "Plan",
    "Tile",
    "Tiling",
    "axis_tiles",
    "default_chunks",
    "n_regions",
    "read_window",
    "region_tiles",
    "regions",
]
