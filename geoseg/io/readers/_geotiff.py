"""GeoTIFF and COG, read with rasterio (GDAL's GTiff driver only), one window per task.

A TIFF is claimed by its first bytes. Multi-page TIFFs that are not georeferenced are claimed
first by the TIFF-stack reader (:mod:`geoseg.io.readers._tiffstack`); every other TIFF is read
here, its overviews as resolution levels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import rasterio
import rasterio.enums
import rasterio.errors
from rasterio.windows import Window

from geoseg.errors import UnsupportedFormatError
from geoseg.io import allow, faults, remote
from geoseg.io.georef import GeoRef
from geoseg.io.readers import probe
from geoseg.io.readers.base import RasterSource, Reader, band_indexes


@dataclass(frozen=True)
class GeoTIFFSource(RasterSource):
    """A GeoTIFF/COG read with rasterio, one window per task."""

    band_indexes: tuple[int, ...] = (1,)  # 1-based, rasterio's convention
    overview_level: int | None = None  # None: full resolution; 0: the first overview, ...

    def read(self, window: tuple[slice, ...]) -> np.ndarray:
        ys, xs = window
        win = Window(xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start)
        with open_rasterio(self.url, self.storage_options, self.overview_level) as ds:
            return ds.read(list(self.band_indexes), window=win)


class GeoTIFFReader(Reader):
    name = "geotiff"
    description = "a GeoTIFF or COG (.tif, .tiff)"
    priority = 50

    def guess_can_open(self, url: str, storage_options: dict[str, Any]) -> bool:
        return probe.head(url, storage_options)[:4] in allow.TIFF_MAGIC

    def open(self, url: str, storage_options: dict[str, Any], *, bands: Sequence[int] | None = None,
             level: int | None = None) -> GeoTIFFSource:
        """Level 0 is full resolution, 1 the first overview."""
        overview = None if not level else int(level) - 1
        with open_rasterio(url, storage_options) as ds:
            n_overviews = len(ds.overviews(1))
        if overview is not None and not 0 <= overview < n_overviews:
            raise UnsupportedFormatError(
                f"{url} has {n_overviews} overview(s), so levels 0 (full resolution) to {n_overviews}; "
                f"received level={level}." + (" Build overviews (gdaladdo, or a COG) to read a coarser "
                                              "level." if not n_overviews else ""))
        with open_rasterio(url, storage_options, overview) as ds:
            return _describe(ds, url, storage_options, bands, overview)


def _describe(ds: Any, url: str, storage_options: dict[str, Any], bands: Sequence[int] | None,
              overview: int | None) -> GeoTIFFSource:
    indexes = [i + 1 for i in band_indexes(bands, ds.count, url)]
    names = _tiff_band_names(ds)
    block_y, block_x = ds.block_shapes[0]
    return GeoTIFFSource(
        url=url,
        shape=(len(indexes), ds.height, ds.width),
        dtype=str(ds.dtypes[indexes[0] - 1]),
        chunks=(block_y, block_x),
        georef=GeoRef.from_crs(ds.crs, ds.transform, ds.nodata),
        band_names=tuple(names[i - 1] for i in indexes),
        storage_options=storage_options,
        stored_chunk=(_bands_per_block(ds), block_y, block_x),
        band_indexes=tuple(indexes),
        overview_level=overview,
    )


def _bands_per_block(ds: Any) -> int:
    """Bands one decoded block holds: all of them when pixel-interleaved, else one."""
    return ds.count if ds.interleaving == rasterio.enums.Interleaving.pixel else 1


def _tiff_band_names(ds: Any) -> list[str]:
    descriptions = [d for d in ds.descriptions if d]
    if len(descriptions) == ds.count:
        return list(descriptions)
    interp = [c.name for c in ds.colorinterp]
    if len(set(interp)) == ds.count and all(c in ("red", "green", "blue", "alpha") for c in interp):
        return interp
    return [f"band_{i + 1}" for i in range(ds.count)]


@contextlib.contextmanager
def open_rasterio(url: str, storage_options: dict[str, Any],
                  overview_level: int | None = None) -> Iterator[Any]:
    """Open with GDAL directly for local paths and GDAL URLs, through fsspec otherwise: a
    :class:`~geoseg.io.remote.GuardedContainer`, whose read errors are raised on leaving.
    Only GDAL's GTiff driver may open it and no sidecar file is looked for (:mod:`~geoseg.io.allow`):
    a VRT named ``.tif`` is refused, never followed to the files or URLs it names."""
    kwargs = {"driver": allow.GDAL_DRIVERS[0]}
    if overview_level is not None:
        kwargs["overview_level"] = overview_level
    protocol = fsspec.utils.get_protocol(url)
    # no sidecar search (.aux.xml, .ovr, .msk ...): GDAL opens those with any driver, and on a
    # store the search costs a listing or a dozen requests each time a task opens the file
    with rasterio.Env(**allow.GDAL_OPTIONS):
        if protocol in ("file", "local") or url.startswith("/vsi"):
            path = fsspec.core.strip_protocol(url) if protocol == "file" else url
            with _open_allowed(url, storage_options, path, **kwargs) as ds:
                yield ds
            return
        fs, path = fsspec.core.url_to_fs(url, **storage_options)
        with (remote.guarded_reads(),
              _open_allowed(url, storage_options, path, opener=remote.GuardedContainer(fs), **kwargs) as ds):
            yield ds


def _open_allowed(url: str, storage_options: dict[str, Any], path: str, **kwargs: Any) -> Any:
    """``rasterio.open``; a file the allowed drivers do not recognise because it is no TIFF at all
    (a VRT, a WMS description ...) raises :class:`~geoseg.errors.UnsupportedFormatError` naming it."""
    try:
        return rasterio.open(path, **kwargs)
    except rasterio.errors.RasterioIOError:
        head = _head(url, storage_options)
        if head is None or head[:4] in allow.TIFF_MAGIC:
            raise  # a TIFF GDAL cannot open: corrupt, reported as such by the caller
        raise faults.bare(allow.unknown_refused(url, head)) from None


def _head(url: str, storage_options: dict[str, Any]) -> bytes | None:
    """The first bytes of ``url``, to name what it is; ``None`` when they cannot be read."""
    if url.startswith("/vsi"):
        return None
    try:
        fs, path = fsspec.core.url_to_fs(url, **storage_options)
        return fs.cat_file(path, start=0, end=64)
    except Exception:  # noqa: BLE001 - only to name the format; the open's own error stands
        return None
