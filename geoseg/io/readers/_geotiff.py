"""GeoTIFF and COG, read with rasterio (GDAL's GTiff driver only), one window per task.

A TIFF is claimed by its first bytes. Multi-page TIFFs that are not georeferenced are claimed
first by the TIFF-stack reader (:mod:`geoseg.io.readers._tiffstack`); every other TIFF is read
here, its overviews as resolution levels.

An internal (per-dataset) mask marks no data the way a nodata value does: each task reads its
window of the mask with its pixels and writes the nodata value where the mask is 0 (NaN for
floats; integers without a nodata value are widened to hold one below their range, so no valid
value is taken for it). An alpha band stays a band.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import rasterio
import rasterio.enums
import rasterio.errors
from affine import Affine
from rasterio.windows import Window

from geoseg.core.urls import public_url
from geoseg.errors import UnsupportedFormatError
from geoseg.io import allow, faults, remote
from geoseg.io.georef import GeoRef
from geoseg.io.readers import probe
from geoseg.io.readers.base import RasterSource, Reader, band_indexes, widened

log = logging.getLogger("geoseg.io")
# a TIFF without a georeference is read on its pixel grid, as its user expects: no warning about
# it reaches the terminal (a filter, not catch_warnings: reads run in many threads at once)
warnings.filterwarnings("ignore", category=rasterio.errors.NotGeoreferencedWarning)


@dataclass(frozen=True)
class GeoTIFFSource(RasterSource):
    """A GeoTIFF/COG read with rasterio, one window per task."""

    band_indexes: tuple[int, ...] = (1,)  # 1-based, rasterio's convention
    overview_level: int | None = None  # None: full resolution; 0: the first overview, ...
    masked: bool = False  # an internal mask's 0s read as nodata (NaN for floats without one)

    def read(self, window: tuple[slice, ...]) -> np.ndarray:
        ys, xs = window
        win = Window(xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start)
        with open_rasterio(self.url, self.storage_options, self.overview_level) as ds:
            data = ds.read(list(self.band_indexes), window=win)
            if not self.masked:
                return data
            invalid = ds.read_masks(self.band_indexes[0], window=win) == 0
        data = data.astype(self.dtype, copy=False)
        data[:, invalid] = np.nan if self.georef.nodata is None else self.georef.nodata
        return data


class GeoTIFFReader(Reader):
    name = "geotiff"
    description = "a GeoTIFF or COG, or a TIFF only GDAL reads (.tif, .tiff)"
    priority = 50

    def guess_can_open(self, url: str, storage_options: dict[str, Any]) -> bool:
        return probe.head(url, storage_options)[:4] in allow.TIFF_MAGIC

    def open(self, url: str, storage_options: dict[str, Any], *, bands: Sequence[int] | None = None,
             level: int | None = None) -> GeoTIFFSource:
        """Level 0 is full resolution, 1 the first overview."""
        overview = None if not level else int(level) - 1
        with open_rasterio(url, storage_options) as ds:
            n_overviews = len(ds.overviews(1))
            full = (ds.transform, ds.width, ds.height)
        if overview is not None and not 0 <= overview < n_overviews:
            raise UnsupportedFormatError(
                f"{url} has {n_overviews} overview(s), so levels 0 (full resolution) to {n_overviews}; "
                f"received level={level}." + (" Build overviews (gdaladdo, or a COG) to read a coarser "
                                              "level." if not n_overviews else ""))
        with open_rasterio(url, storage_options, overview) as ds:
            transform = ds.transform if overview is None else _overview_transform(ds, *full)
            return _describe(ds, url, storage_options, bands, overview, transform)


def _overview_transform(ds: Any, transform: Affine, width: int, height: int) -> Affine:
    """An overview's transform: GDAL's, or for a TIFF without a georeference (whose overviews
    GDAL gives an all-zero transform) its pixel grid scaled to the overview, as GDAL scales a
    georeferenced one."""
    if ds.transform.determinant != 0:
        return ds.transform
    return transform @ Affine.scale(width / ds.width, height / ds.height)


def _describe(ds: Any, url: str, storage_options: dict[str, Any], bands: Sequence[int] | None,
              overview: int | None, transform: Affine) -> GeoTIFFSource:
    indexes = [i + 1 for i in band_indexes(bands, ds.count, url)]
    names = _tiff_band_names(ds)
    block_y, block_x = ds.block_shapes[0]
    masked = _has_internal_mask(ds, indexes)
    stored = str(ds.dtypes[indexes[0] - 1])
    dtype, nodata = _masked_encoding(stored, ds.nodata, url) if masked else (stored, ds.nodata)
    return GeoTIFFSource(
        url=url,
        shape=(len(indexes), ds.height, ds.width),
        dtype=dtype,
        chunks=(block_y, block_x),
        georef=GeoRef.from_crs(ds.crs, transform, nodata,
                               source=f"The geotransform of GeoTIFF {public_url(url)}"),
        band_names=tuple(names[i - 1] for i in indexes),
        storage_options=storage_options,
        stored_chunk=(_bands_per_block(ds), block_y, block_x),
        band_indexes=tuple(indexes),
        overview_level=overview,
        masked=masked,
    )


def _has_internal_mask(ds: Any, indexes: Sequence[int]) -> bool:
    """Whether the bands read share a per-dataset mask that is no alpha band (an internal mask,
    GDAL_TIFF_INTERNAL_MASK; sidecar .msk files are never opened)."""
    flags = [ds.mask_flag_enums[i - 1] for i in indexes]
    return all(rasterio.enums.MaskFlags.per_dataset in f and rasterio.enums.MaskFlags.alpha not in f
               for f in flags)


def _masked_encoding(dtype: str, nodata: float | None, url: str) -> tuple[str, float | None]:
    """The dtype and nodata a GeoTIFF with an internal mask is read with: its own when it declares
    a nodata value or holds floats (masked pixels: NaN), else a wider integer type and one below
    the stored type's range."""
    if nodata is not None or np.dtype(dtype).kind == "f":
        return dtype, nodata
    encoding = widened(dtype)
    if encoding is None:
        raise UnsupportedFormatError(
            f"{public_url(url)} has an internal mask and {dtype} pixels without a nodata value; "
            "geoseg marks masked pixels with a nodata value, and takes none from a range this wide. "
            "Write the masked pixels as a value no valid pixel holds and declare it the nodata, "
            "e.g. gdalwarp -dstnodata VALUE in.tif out.tif, or with rasterio: "
            "data[:, src.read_masks(1) == 0] = VALUE; write with nodata=VALUE.")
    wider, fill = encoding
    log.info("%s: its internal mask's masked pixels read as nodata %g (%s pixels read as %s).",
             public_url(url), fill, dtype, wider)
    return wider, fill


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
