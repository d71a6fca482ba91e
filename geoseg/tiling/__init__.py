"""Tiling plans: where each task reads, what each tile computes, what it writes."""

from geoseg.tiling.plan import (
    AxisTile,
    Tile,
    TilingSpec,
    axis_tiles,
    n_regions,
    read_window,
    region_tiles,
    regions,
)

__all__ = [
    "AxisTile",
    "Tile",
    "TilingSpec",
    "axis_tiles",
    "n_regions",
    "read_window",
    "region_tiles",
    "regions",
]
