"""Clean a lazy class map with a morphological :class:`~geoseg.methods.morphology.Cleanup`,
chunk by chunk with the exact halo, through the same executor as any segmenter."""

from __future__ import annotations

from typing import Any

import xarray as xr

from geoseg.errors import MethodParameterError
from geoseg.methods.morphology import Cleanup, MaskCleanup
from geoseg.parallel.lazy import segment


def clean_mask(
    classes: xr.DataArray, target: int = 1, *, chunks: Any = None, tile: Any = None, **steps: Any
) -> xr.DataArray:
    """Clean class ``target`` of a lazy ``(y, x)`` class map, chunk by chunk with the exact halo.

    ``steps`` are those of :class:`Cleanup`; ``chunks`` and ``tile`` are passed to
    :func:`geoseg.segment` (defaults: the map's chunks, ``GEOSEG_TILE``).

    Returns a lazy uint8 map: 1 where the cleaned target is, 0 elsewhere, and the
    map's ``nodata`` value (``classes.attrs["nodata"]``, 255 for
    :func:`geoseg.segment` outputs) where it had no data; no-data pixels count as
    not the target while cleaning.
    """
    if classes.ndim != 2:
        raise MethodParameterError(
            f"clean_mask takes a (y, x) class map, got dims {classes.dims}; select one class "
            f"map (e.g. the output of geoseg.segment(..., output='classes'))."
        )
    raster = classes.expand_dims("band").assign_coords(band=["classes"])
    nodata = classes.attrs.get("nodata")
    out = segment(
        raster,
        MaskCleanup(int(target), Cleanup(**steps)),
        chunks=chunks,
        tile=tile,
        nodata_class=None if nodata is None else int(nodata),
    )
    return out.rename("cleaned")
