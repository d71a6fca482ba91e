"""Raster sources: small picklable descriptions of where pixels live and how to read a window.

A task carries a source and a window and reads its own pixels straight from
storage on whichever worker runs it; the client only ever reads metadata.
Storage options travel with the source (workers need them) but are excluded
from ``repr`` and comparisons so they never reach logs or errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import rasterio
import zarr
from rasterio.windows import Window

from geoseg.io.georef import GeoRef


@dataclass(frozen=True)
class RasterSource:
    """Common fields; ``shape`` is ``(band, y, x)`` after band selection."""

    url: str
    shape: tuple[int, int, int]
    dtype: str
    chunks: tuple[int, int]
    georef: GeoRef
    band_names: tuple[str, ...]
    storage_options: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def read(self, window: tuple[slice, slice]) -> np.ndarray:  # pragma: no cover - abstract
        """Pixels ``(band, h, w)`` of a window that lies inside the image."""
        raise NotImplementedError

    @property
    def format(self) -> str:
        return type(self).__name__.removesuffix("Source").lower()


@dataclass(frozen=True)
class ZarrSource(RasterSource):
    """A 2D ``(y, x)`` or 3D ``(band, y, x)`` Zarr array (v2 or v3), possibly inside a group."""

    array_path: str = ""
    band_indexes: tuple[int, ...] | None = None  # 0-based, into the array's band axis
    band_axis: int | None = 0  # None: the array has no band axis

    def open_array(self) -> zarr.Array:
        kwargs: dict[str, Any] = {"mode": "r"}
        if self.storage_options:
            kwargs["storage_options"] = self.storage_options
        if self.array_path:
            kwargs["path"] = self.array_path
        return zarr.open_array(self.url, **kwargs)

    def read(self, window: tuple[slice, slice]) -> np.ndarray:
        arr = self.open_array()
        if self.band_axis is None:
            return np.asarray(arr[window])[None]
        index: list[Any] = list(window)
        index.insert(self.band_axis, slice(None))
        data = np.moveaxis(np.asarray(arr[tuple(index)]), self.band_axis, 0)
        return data if self.band_indexes is None else data[list(self.band_indexes)]


@dataclass(frozen=True)
class GeoTIFFSource(RasterSource):
    """A GeoTIFF/COG read with rasterio, one window per task."""

    band_indexes: tuple[int, ...] = (1,)  # 1-based, rasterio's convention

    def read(self, window: tuple[slice, slice]) -> np.ndarray:
        ys, xs = window
        win = Window(xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start)
        with open_rasterio(self.url, self.storage_options) as ds:
            return ds.read(list(self.band_indexes), window=win)


def open_rasterio(url: str, storage_options: dict[str, Any]) -> Any:
    """Open with GDAL directly for local paths and GDAL URLs, through fsspec otherwise."""
    protocol = fsspec.utils.get_protocol(url)
    if protocol in ("file", "local") or url.startswith("/vsi"):
        return rasterio.open(fsspec.core.strip_protocol(url) if protocol == "file" else url)
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    return rasterio.open(path, opener=fs.open)
