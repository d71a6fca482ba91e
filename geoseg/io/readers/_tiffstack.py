"""TIFF stacks that are not georeferenced (ImageJ hyperstacks, OME-TIFF, plain page stacks from
microscopes or cameras), read through tifffile window by window.

The series' zarr view (``series.aszarr()``) reads only the pages, strips or tiles a window
covers. The series' axes decide the roles: ``Y``, ``X`` and ``Z`` are spatial, ``S`` (samples,
e.g. RGB) or ``C`` (channels) is the band axis, axes of length 1 are dropped, and a generic
page axis (``I``, ``Q``, ``T``, ...) becomes ``z`` or the band axis as the ``pages`` option
says (default ``"z"``). Volumes keep the voxel spacing ImageJ or OME metadata record. A single
image (one page, a pyramid in its SubIFDs at most) is read here too when tifffile decodes its
compression without imagecodecs and GDAL's tags say nothing. A TIFF with GeoTIFF tags is left
to the GeoTIFF reader (rasterio), and so is a single image that only GDAL reads whole: its
nodata or metadata tags, its mask or overview pages, or a compression such as LZW or JPEG.

A plain TIFF written page by page (``tifffile.TiffWriter.write`` once per page, so each page is
a series of its own) is read as one stack of all its data pages when they are alike (same
shape, data type and storage: tifffile's page hash); overview and mask pages are not data
pages. Data pages that differ are refused, never read as the first one only (GDAL would).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

import fsspec
import numpy as np
import tifffile
import zarr

from geoseg.core.text import whole_number
from geoseg.core.urls import public_url
from geoseg.errors import CorruptInputError, UnsupportedFormatError
from geoseg.io import allow, remote
from geoseg.io.georef import GeoRef
from geoseg.io.readers import probe
from geoseg.io.readers._image import CHANNEL_NAMES
from geoseg.io.readers.base import BAND, DROP, SPACE, RasterSource, Reader, select_bands

GEOTIFF_TAGS = (
    33550,
    33922,
    34264,
    34735,
)  # ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeys
GDAL_TAGS = (42112, 42113)  # GDAL_METADATA (band descriptions, scales ...), GDAL_NODATA
PAGES = ("z", "band")


@dataclass(frozen=True)
class TiffStackSource(RasterSource):
    """A non-georeferenced multi-page TIFF read by window through tifffile's zarr view of a
    series; ``roles`` has one entry per axis of the series (``space``, ``band`` or ``drop``)."""

    series: int = 0
    level: int = 0
    roles: tuple[str, ...] = (SPACE, SPACE, SPACE)
    band_indexes: tuple[int, ...] | None = None  # 0-based, into the band axis
    all_pages: bool = False  # every data page, one series each, read as one stack (IYX[S])

    def read(self, window: tuple[slice, ...]) -> np.ndarray:
        spatial = iter(window)
        index = tuple(
            0 if role == DROP else slice(None) if role == BAND else next(spatial)
            for role in self.roles
        )
        with (
            _open_tiff(self.url, self.storage_options) as tif,
            _zarr_view(_series_of(tif, self.series, self.all_pages), self.level) as array,
        ):
            data = np.asarray(array[index])
        kept = [role for role in self.roles if role != DROP]
        if BAND not in kept:
            return data[None]
        data = np.moveaxis(data, kept.index(BAND), 0)
        return data if self.band_indexes is None else data[list(self.band_indexes)]


class TiffStackReader(Reader):
    name = "tiff-stack"
    description = "a TIFF stack (ImageJ, OME-TIFF or multi-page, not georeferenced)"
    priority = 60

    def guess_can_open(self, url: str, storage_options: dict[str, Any]) -> bool:
        """A TIFF (by its first bytes) of several pages and no GeoTIFF tags."""
        is_tiff = probe.head(url, storage_options)[:4] in allow.TIFF_MAGIC
        return is_tiff and tiff_kind(url, storage_options) == "tiff"

    def open(self, url: str, storage_options: dict[str, Any], *, bands: Sequence[int] | None = None,
             level: int | None = None, pages: str | None = None) -> TiffStackSource:
        """``level``: the pyramid level; ``pages``: ``"z"`` or ``"band"``, when the metadata
        does not say what the pages are."""
        return select_bands(tiff_source(url, storage_options, pages=pages, level=level), bands)


@contextlib.contextmanager
def _open_tiff(url: str, storage_options: dict[str, Any]) -> Iterator[tifffile.TiffFile]:
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    with _tifffile_quiet(), fs.open(path, "rb", block_size=remote.READ_BLOCK) as f, \
            tifffile.TiffFile(f) as tif:
        if tif.ome_metadata:
            _check_ome(tif.ome_metadata, len(tif.pages), url)
        yield tif


OME_MAX_LEVELS = 100  # of OME-XML elements; OME's own schema nests under ten
OME_MAX_PLANES = 10**6  # declared past the file's own: tifffile's lists of them stay a few MB


def _check_ome(xml: str, pages: int, url: str) -> None:
    """Refuse OME-XML that tifffile would trust to exhaust the stack or memory: elements nested
    past :data:`OME_MAX_LEVELS` (``xml2dict`` recurses once per level), or images declaring
    more planes (SizeZ x SizeC x SizeT) than four per page of the file (RGBA) and than
    :data:`OME_MAX_PLANES`, for which tifffile builds a list entry per plane before any pixel
    is read. (A multi-file dataset's XML lists other files' planes too, so fewer is no fault.)
    Measured with expat's incremental parser, which neither recurses nor expands."""
    depth = deepest = planes = 0
    try:
        for event, element in ElementTree.iterparse(io.StringIO(xml), events=("start", "end")):
            depth += 1 if event == "start" else -1
            deepest = max(deepest, depth)
            if deepest > OME_MAX_LEVELS:
                raise CorruptInputError(
                    f"{public_url(url)}: its OME-XML nests elements over {OME_MAX_LEVELS} levels "
                    "deep; expected OME metadata (a few levels). Rewrite the file's metadata, "
                    "e.g. with tifffile or bfconvert.")
            if event == "end" and element.tag.rpartition("}")[2] == "Pixels":
                planes += math.prod(whole_number(element.get(f"Size{a}", "1")) or 1 for a in "ZCT")
                element.clear()
    except ElementTree.ParseError:
        return  # not XML tifffile reads as OME either
    if planes > max(4 * pages, OME_MAX_PLANES):
        raise CorruptInputError(
            f"{public_url(url)}: its OME-XML declares {planes:,} planes (SizeZ x SizeC x SizeT) "
            f"for a file of {pages:,} pages; expected OME metadata that describes its pages. "
            "Rewrite the metadata, e.g. with tifffile or bfconvert.")


@contextlib.contextmanager
def _tifffile_quiet() -> Iterator[None]:
    """tifffile's warnings and errors off while it reads (``shaped series shape does not match
    page shape``, ``ImageJ series metadata invalid`` ...): what they are about geoseg reads
    anyway or refuses in its own words, and a library line on stderr before that message only
    confuses."""
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # it logs metadata it cannot parse as errors too
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _zarr_view(series: tifffile.TiffPageSeries, level: int) -> Iterator[zarr.Array]:
    """The zarr array over one level of a series: reading an index reads only its pages/tiles."""
    store = series.aszarr(level=level)
    try:
        yield zarr.open_array(store, mode="r", zarr_format=2)
    finally:
        store.close()


def tiff_kind(url: str, storage_options: dict[str, Any]) -> str:
    """``"geotiff"`` (read by rasterio) for a georeferenced TIFF or a single image only GDAL reads
    whole, ``"tiff"`` (read by tifffile) for a stack of pages or a plain single image that is not
    georeferenced."""
    try:
        with _open_tiff(url, storage_options) as tif:
            if any(tag in tif.pages.first.tags for tag in GEOTIFF_TAGS):
                return "geotiff"
            if len(_data_series(tif)) > 1:
                return "tiff"  # one page per series (read as a stack), or unlike pages (refused)
            series = tif.series[0]
            stacked = [
                n for axis, n in zip(series.axes, series.shape) if axis not in "YXS" and n > 1
            ]
            return "tiff" if stacked or _plain_image(tif) else "geotiff"
    except CorruptInputError:
        raise
    except (tifffile.TiffFileError, IndexError, ValueError, KeyError) as exc:
        _refuse_unread_pages(url, storage_options, exc)
        return "geotiff"  # tifffile cannot make sense of it; GDAL may


def _refuse_unread_pages(url: str, storage_options: dict[str, Any], exc: Exception) -> None:
    """Refuse a TIFF of several image pages whose metadata tifffile cannot make sense of (OME-XML
    lacking a size, say): GDAL, which would read it instead, reads its first page only."""
    try:
        with _open_tiff(url, storage_options) as tif:
            pages = sum(not (page.is_reduced or page.is_mask) for page in tif.pages)
    except Exception:  # noqa: BLE001 - not even its pages are readable: GDAL may read it
        return
    if pages > 1:
        raise CorruptInputError(
            f"{public_url(url)} is a TIFF of {pages} image pages whose metadata tifffile cannot "
            f"read ({type(exc).__name__}: {exc}), so its pages cannot be stacked, and geoseg does "
            "not read its first page alone (as GDAL would). Fix or remove its metadata (e.g. "
            "its OME-XML ImageDescription), or write the pages as a new TIFF stack.")


def _plain_image(tif: tifffile.TiffFile) -> bool:
    """One page (no mask or overview pages), no GDAL tags, a compression tifffile decodes."""
    first = tif.pages.first
    return (len(tif.pages) == 1 and not any(tag in first.tags for tag in GDAL_TAGS)
            and first.compression in tifffile.TIFF.DECOMPRESSORS)


def _data_series(tif: tifffile.TiffFile) -> list[tuple[int, tifffile.TiffPageSeries]]:
    """The series of image data (by index): not those of reduced-resolution (overview) or mask
    pages, which tifffile sets apart by their NewSubfileType."""
    return [(i, s) for i, s in enumerate(tif.series)
            if not (s.keyframe.is_reduced or s.keyframe.is_mask)]


def _series_of(tif: tifffile.TiffFile, index: int, all_pages: bool) -> tifffile.TiffPageSeries:
    """The series a source reads: the one at ``index``, or every data page as one stack."""
    if not all_pages:
        return tif.series[index]
    pages = [page for _, series in _data_series(tif) for page in series.pages]
    key = pages[0].keyframe
    return tifffile.TiffPageSeries(pages, (len(pages), *key.shape), key.dtype, "I" + key.axes,
                                   kind="generic", parent=tif)


def _main_series(tif: tifffile.TiffFile, url: str) -> tuple[int, bool]:
    """Which series to read: ``(index, False)`` for the one series of image data, ``(0, True)``
    for a file of several one-page series with alike pages (a stack written page by page)."""
    found = _data_series(tif)
    if len(found) <= 1:
        return (found[0][0] if found else 0), False
    pages = [page for _, series in found for page in series.pages]
    if len(pages) == len(found) and None not in pages and len({p.hash for p in pages}) == 1:
        return 0, True
    raise _unlike_pages(found, url)


def _unlike_pages(
    found: list[tuple[int, tifffile.TiffPageSeries]], url: str
) -> UnsupportedFormatError:
    n_pages = sum(len(series.pages) for _, series in found)
    listing = "; ".join(_series_text(series) for _, series in found[:8])
    more = f"; and {len(found) - 8} more" if len(found) > 8 else ""
    return UnsupportedFormatError(
        f"TIFF {public_url(url)} holds {n_pages} pages of image data in {len(found)} separate "
        f"images: {listing}{more}. geoseg reads several images of a TIFF as one stack only when "
        "each is one page and all have the same shape, data type and storage (compression, "
        "tiling), and reads no single page or image of a file on its own (GDAL would read only "
        "the first). Split the file into one TIFF per image (e.g. tifffile.imread(path, "
        "series=i) or key=i, then tifffile.imwrite), or write the pages again alike, in one stack.")


def _series_text(series: tifffile.TiffPageSeries) -> str:
    """``"page 2: 150 x 250 uint8, uncompressed"``, or ``"pages 1-3: 3 x 200 x 300 ..."``."""
    numbers = [page.index + 1 for page in series.pages if page is not None] or [0]
    where = (f"page {numbers[0]}" if len(series.pages) == 1
             else f"pages {numbers[0]}-{numbers[-1]}")
    shape = " x ".join(str(n) for n in series.shape)
    compression = tifffile.COMPRESSION(series.keyframe.compression)
    stored = "uncompressed" if compression == 1 else compression.name.lower()
    return f"{where}: {shape} {series.dtype}, {stored}"


def tiff_source(
    url: str, storage_options: dict[str, Any], *, pages: str | None = None, level: int | None = None
) -> TiffStackSource:
    """Describe the series of image data of a TIFF stack (every page of a stack written page
    by page) from its metadata (no pixels read)."""
    with _open_tiff(url, storage_options) as tif:
        number, all_pages = _main_series(tif, url)
        series = _series_of(tif, number, all_pages)
        index = _level_index(len(series.levels), level, url)
        axes, shape = series.levels[index].axes, series.levels[index].shape
        roles = tiff_roles(axes, shape, pages, url)
        with _zarr_view(series, index) as array:
            chunks, dtype = array.chunks, str(array.dtype)
        georef = _tiff_georef(tif, roles, shape, series.shape, url)
        names = _tiff_band_names(tif, axes, shape, roles)
    spatial = [i for i, role in enumerate(roles) if role == SPACE]
    return TiffStackSource(
        url=url,
        shape=(len(names), *(shape[i] for i in spatial)),
        dtype=dtype,
        chunks=tuple(chunks[i] for i in spatial),
        georef=georef,
        band_names=names,
        storage_options=storage_options,
        stored_chunk=(_planes(chunks, spatial), *(chunks[i] for i in spatial)),
        series=number,
        level=index,
        roles=roles,
        all_pages=all_pages,
    )


def _planes(chunks: tuple[int, ...], spatial: list[int]) -> int:
    """How many planes one stored chunk (a page or a tile of one) spans off the spatial axes:
    a read decodes that many with each tile it touches."""
    return math.prod(n for i, n in enumerate(chunks) if i not in spatial)


def _level_index(n_levels: int, level: int | None, url: str) -> int:
    index = int(level or 0)
    if not 0 <= index < n_levels:
        raise UnsupportedFormatError(
            f"TIFF {public_url(url)} has {n_levels} resolution level(s), 0 to "
            f"{n_levels - 1}; received level={level}. Pick one of those (0 is full resolution)."
        )
    return index


def tiff_roles(axes: str, shape: tuple[int, ...], pages: str | None, url: str) -> tuple[str, ...]:
    """The geoseg role of each axis of a tifffile series (``axes`` like ``"ZCYX"``)."""
    if pages not in (None, *PAGES):
        raise UnsupportedFormatError(
            f"pages={pages!r} for {public_url(url)}; expected one of "
            f"{', '.join(PAGES)} (what the pages of a TIFF stack are)."
        )
    kinds = [_axis_kind(axis, n, pages or "z") for axis, n in zip(axes, shape)]
    taken = [k for k in kinds if k != DROP]
    if len(set(taken)) != len(taken) or not {"y", "x"} <= set(taken):
        raise UnsupportedFormatError(
            f"TIFF stack {public_url(url)} has axes {axes!r} with shape {tuple(shape)}, "
            f"read as {tuple(kinds)}: geoseg reads one band axis plus z, y, x, and drops only "
            "axes of length 1. Say what the pages are (pages='z' or pages='band'), or save one "
            "stack per file."
        )
    return tuple(SPACE if k in ("z", "y", "x") else k for k in kinds)


def _axis_kind(axis: str, n: int, pages: str) -> str:
    if axis in "YX":
        return axis.lower()
    if n == 1:
        return DROP
    if axis == "Z":
        return "z"
    if axis in "SC":
        return BAND
    return "z" if pages == "z" else BAND


def _tiff_band_names(
    tif: tifffile.TiffFile, axes: str, shape: tuple[int, ...], roles: tuple[str, ...]
) -> tuple[str, ...]:
    if BAND not in roles:
        return ("intensity",)
    axis = roles.index(BAND)
    n = shape[axis]
    rgb = tif.pages.first.photometric == tifffile.PHOTOMETRIC.RGB
    if axes[axis] == "S" and rgb and n in (3, 4):
        return CHANNEL_NAMES[n]
    return tuple(f"band_{i + 1}" for i in range(n))


def _tiff_georef(
    tif: tifffile.TiffFile,
    roles: tuple[str, ...],
    shape: tuple[int, ...],
    full_shape: tuple[int, ...],
    url: str,
) -> GeoRef:
    """Volumes: a voxel affine from ImageJ or OME spacing (1 where none is recorded; world rows
    x, y, z as for every volume, see GeoRef),
    scaled for a reduced level. Images: no georeference."""
    if roles.count(SPACE) != 3:
        return GeoRef()
    spatial = [i for i, role in enumerate(roles) if role == SPACE]
    spacing, units = _imagej_spacing(tif) or _ome_spacing(tif) or ((1.0, 1.0, 1.0), None)
    scaled = [s * full_shape[i] / shape[i] for s, i in zip(spacing, spatial)]
    return GeoRef.from_axis_scales(
        scaled, units=units, shape=[shape[i] for i in spatial],
        source=f"the voxel spacing {scaled} recorded in TIFF {public_url(url)}",
        fix="Fix the spacing in its ImageJ or OME metadata, or remove it to read on a unit grid")


def _imagej_spacing(tif: tifffile.TiffFile) -> tuple[tuple[float, float, float], str | None] | None:
    meta = tif.imagej_metadata
    if not meta:
        return None
    tags = tif.pages.first.tags
    y, x = (_per_pixel(tags.get(name)) for name in ("YResolution", "XResolution"))
    return (float(meta.get("spacing", 1.0)), y, x), meta.get("unit")


def _per_pixel(tag: Any) -> float:
    """Pixel size from a resolution tag (pixels per unit, as a fraction)."""
    if tag is None or not tag.value[0]:
        return 1.0
    numerator, denominator = tag.value
    return float(denominator) / float(numerator)


def _ome_spacing(tif: tifffile.TiffFile) -> tuple[tuple[float, float, float], str | None] | None:
    if not tif.ome_metadata:
        return None
    try:
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
        pixels = (pixels[0] if isinstance(pixels, list) else pixels)["Pixels"]
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    size = tuple(float(pixels.get(f"PhysicalSize{a}", 1.0)) for a in "ZYX")
    return (size[0], size[1], size[2]), pixels.get(
        "PhysicalSizeXUnit", "µm" if "PhysicalSizeX" in pixels else None
    )
