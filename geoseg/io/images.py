"""Plain images and TIFF stacks: PNG/JPEG/... through imageio, multi-page TIFF through tifffile.

PNG, JPEG, GIF, BMP and WebP files are compressed as a whole: no window can be read
without decoding the image. :class:`ImageSource` therefore decodes the whole image in the
first task of a worker process that needs it, keeps the last image it decoded, and cuts
every window from memory; ``open_raster`` gives such an image a single chunk (one task)
unless told otherwise. Images whose decoded pixels exceed ``MAX_IMAGE_BYTES`` are refused
before anything is read: convert them once to a tiled GeoTIFF or a chunked Zarr. Only the
first frame of an animated GIF or WebP is read. Band names come from the channels: gray,
gray + alpha, red/green/blue(/alpha).

Multi-page TIFFs that are not georeferenced (ImageJ hyperstacks, OME-TIFF, plain page
stacks from microscopes or cameras) are read by :class:`TiffStackSource` through tifffile,
window by window: the series' zarr view (``series.aszarr()``) reads only the pages, strips
or tiles a window covers. The series' axes decide the roles: ``Y``, ``X`` and ``Z`` are
spatial, ``S`` (samples, e.g. RGB) or ``C`` (channels) is the band axis, axes of length 1
are dropped, and a generic page axis (``I``, ``Q``, ``T``, ...) becomes ``z`` or the band
axis as the ``pages`` option says (default ``"z"``). Volumes keep the voxel spacing ImageJ
or OME metadata record. A TIFF with GeoTIFF tags is always read as a GeoTIFF (rasterio), and
so is a single non-georeferenced page.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
import imageio.v3 as iio
import numpy as np
import tifffile
import zarr

from geoseg.errors import UnsupportedFormatError
from geoseg.io import remote
from geoseg.io.georef import GeoRef
from geoseg.io.sources import BAND, DROP, SPACE, RasterSource

MAX_IMAGE_BYTES = 2**29  # decoded size of the largest plain image read whole (512 MiB)
IMAGE_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
}
GEOTIFF_TAGS = (
    33550,
    33922,
    34264,
    34735,
)  # ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeys
PAGES = ("z", "band")
_CHANNEL_NAMES = {
    1: ("gray",),
    2: ("gray", "alpha"),
    3: ("red", "green", "blue"),
    4: ("red", "green", "blue", "alpha"),
}


def image_kind(head: bytes) -> str | None:
    """``"PNG"``, ``"JPEG"``, ... when the first bytes of a file are a plain image's signature."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in IMAGE_SIGNATURES.items() if head.startswith(magic)), None)


@dataclass(frozen=True)
class ImageSource(RasterSource):
    """A PNG/JPEG/... image: each read takes its window from the whole decoded image, decoded
    once per worker process (the last image decoded is kept)."""

    band_indexes: tuple[int, ...] | None = None  # 0-based channels; None: all

    def read(self, window: tuple[slice, ...]) -> np.ndarray:
        data = decoded(self.url, self.storage_options)[(slice(None), *window)]
        return (data if self.band_indexes is None else data[list(self.band_indexes)]).copy()


_LAST: dict[tuple[str, Any, str], np.ndarray] = {}
_LOCK = threading.Lock()


def decoded(url: str, storage_options: dict[str, Any]) -> np.ndarray:
    """The whole image at ``url`` as ``(band, y, x)``, from this process's cache while the file's
    size and modification time (or ETag) are unchanged."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    info = fs.info(path)
    version = (
        info.get("mtime") or info.get("LastModified") or info.get("ETag") or info.get("created")
    )
    key = (url, info.get("size"), str(version or ""))
    with _LOCK:
        if key not in _LAST:
            pixels = iio.imread(fs.cat_file(path), index=0)
            _LAST.clear()
            _LAST[key] = np.moveaxis(pixels, -1, 0) if pixels.ndim == 3 else pixels[None]
        return _LAST[key]


def image_source(
    url: str, storage_options: dict[str, Any], *, max_bytes: int | None = MAX_IMAGE_BYTES
) -> ImageSource:
    """Describe the image at ``url`` from its header (no pixels decoded); refuse one whose
    decoded pixels exceed ``max_bytes`` (``None``: no limit)."""
    shape, dtype, mode = _image_header(url, storage_options)
    bands = shape[2] if len(shape) == 3 else 1
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if max_bytes is not None and nbytes > max_bytes:
        raise UnsupportedFormatError(
            f"{remote.public_url(url)} is a {shape[1]} x {shape[0]} image with {bands} band(s): "
            f"{nbytes / 2**20:.0f} MiB decoded, over the {max_bytes / 2**20:.0f} MiB geoseg "
            "decodes whole (PNG/JPEG cannot be read by window). Convert it once to a chunked Zarr "
            "or a tiled GeoTIFF (`geoseg convert IN OUT.zarr`, or `gdal_translate -of COG IN "
            "OUT.tif`) and use that."
        )
    names = ("cyan", "magenta", "yellow", "black") if mode == "CMYK" else _CHANNEL_NAMES.get(bands)
    return ImageSource(
        url=url,
        shape=(bands, shape[0], shape[1]),
        dtype=str(np.dtype(dtype)),
        chunks=(shape[0], shape[1]),
        georef=GeoRef(),
        band_names=tuple(names or (f"band_{i + 1}" for i in range(bands))),
        storage_options=storage_options,
    )


def _image_header(
    url: str, storage_options: dict[str, Any]
) -> tuple[tuple[int, ...], Any, str | None]:
    """Shape ``(y, x[, band])``, dtype and colour mode of the image's first frame."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    try:
        with fs.open(path, "rb", block_size=remote.PROBE_BLOCK) as f, iio.imopen(f, "r") as image:
            props = image.properties(index=0)
            mode = image.metadata(index=0, exclude_applied=False).get("mode")
    except Exception as exc:  # whatever imageio's plugins raise on a bad file
        if remote.is_transient(exc) or isinstance(exc, (FileNotFoundError, PermissionError)):
            raise
        from geoseg.io.readers import SUPPORTED  # here: readers imports this module

        raise UnsupportedFormatError(
            f"Cannot read {remote.public_url(url)}: it starts like an image file, but imageio "
            f"cannot decode it ({remote.reason(exc, storage_options)}). Check that the file is "
            "complete. "
            f"Supported: {SUPPORTED}."
        ) from None
    shape = tuple(int(n) for n in props.shape)
    if len(shape) not in (2, 3):
        raise UnsupportedFormatError(
            f"{remote.public_url(url)}: an image of shape {shape}; expected "
            "(y, x) or (y, x, channel)."
        )
    return shape, props.dtype, mode


# --- TIFF stacks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TiffStackSource(RasterSource):
    """A non-georeferenced multi-page TIFF read by window through tifffile's zarr view of a
    series; ``roles`` has one entry per axis of the series (``space``, ``band`` or ``drop``)."""

    series: int = 0
    level: int = 0
    roles: tuple[str, ...] = (SPACE, SPACE, SPACE)
    band_indexes: tuple[int, ...] | None = None  # 0-based, into the band axis

    def read(self, window: tuple[slice, ...]) -> np.ndarray:
        spatial = iter(window)
        index = tuple(
            0 if role == DROP else slice(None) if role == BAND else next(spatial)
            for role in self.roles
        )
        with (
            _open_tiff(self.url, self.storage_options) as tif,
            _zarr_view(tif, self.series, self.level) as array,
        ):
            data = np.asarray(array[index])
        kept = [role for role in self.roles if role != DROP]
        if BAND not in kept:
            return data[None]
        data = np.moveaxis(data, kept.index(BAND), 0)
        return data if self.band_indexes is None else data[list(self.band_indexes)]


@contextlib.contextmanager
def _open_tiff(url: str, storage_options: dict[str, Any]) -> Iterator[tifffile.TiffFile]:
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    with fs.open(path, "rb", block_size=remote.READ_BLOCK) as f, tifffile.TiffFile(f) as tif:
        yield tif


@contextlib.contextmanager
def _zarr_view(tif: tifffile.TiffFile, series: int, level: int) -> Iterator[zarr.Array]:
    """The zarr array over one level of a series: reading an index reads only its pages/tiles."""
    store = tif.series[series].aszarr(level=level)
    try:
        yield zarr.open_array(store, mode="r", zarr_format=2)
    finally:
        store.close()


def tiff_kind(url: str, storage_options: dict[str, Any]) -> str:
    """``"geotiff"`` (read by rasterio) for a georeferenced or single-image TIFF, ``"tiff"`` (read
    by tifffile) for a stack of pages that is not georeferenced."""
    try:
        with _open_tiff(url, storage_options) as tif:
            if any(tag in tif.pages.first.tags for tag in GEOTIFF_TAGS):
                return "geotiff"
            series = tif.series[0]
            stacked = [
                n for axis, n in zip(series.axes, series.shape) if axis not in "YXS" and n > 1
            ]
    except (tifffile.TiffFileError, IndexError, ValueError, KeyError):
        return "geotiff"  # tifffile cannot make sense of it; GDAL may
    return "tiff" if stacked else "geotiff"


def tiff_source(
    url: str, storage_options: dict[str, Any], *, pages: str | None = None, level: int | None = None
) -> TiffStackSource:
    """Describe the first series of a TIFF stack from its metadata (no pixels read)."""
    with _open_tiff(url, storage_options) as tif:
        series = tif.series[0]
        index = _level_index(len(series.levels), level, url)
        axes, shape = series.levels[index].axes, series.levels[index].shape
        roles = tiff_roles(axes, shape, pages, url)
        with _zarr_view(tif, 0, index) as array:
            chunks, dtype = array.chunks, str(array.dtype)
        georef = _tiff_georef(tif, roles, shape, series.shape)
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
        level=index,
        roles=roles,
    )


def _level_index(n_levels: int, level: int | None, url: str) -> int:
    index = int(level or 0)
    if not 0 <= index < n_levels:
        raise UnsupportedFormatError(
            f"TIFF {remote.public_url(url)} has {n_levels} resolution level(s), 0 to "
            f"{n_levels - 1}; received level={level}. Pick one of those (0 is full resolution)."
        )
    return index


def tiff_roles(axes: str, shape: tuple[int, ...], pages: str | None, url: str) -> tuple[str, ...]:
    """The geoseg role of each axis of a tifffile series (``axes`` like ``"ZCYX"``)."""
    if pages not in (None, *PAGES):
        raise UnsupportedFormatError(
            f"pages={pages!r} for {remote.public_url(url)}; expected one of "
            f"{', '.join(PAGES)} (what the pages of a TIFF stack are)."
        )
    kinds = [_axis_kind(axis, n, pages or "z") for axis, n in zip(axes, shape)]
    taken = [k for k in kinds if k != DROP]
    if len(set(taken)) != len(taken) or not {"y", "x"} <= set(taken):
        raise UnsupportedFormatError(
            f"TIFF stack {remote.public_url(url)} has axes {axes!r} with shape {tuple(shape)}, "
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
        return _CHANNEL_NAMES[n]
    return tuple(f"band_{i + 1}" for i in range(n))


def _tiff_georef(
    tif: tifffile.TiffFile,
    roles: tuple[str, ...],
    shape: tuple[int, ...],
    full_shape: tuple[int, ...],
) -> GeoRef:
    """Volumes: a diagonal voxel affine from ImageJ or OME spacing (1 where none is recorded),
    scaled for a reduced level. Images: no georeference."""
    if roles.count(SPACE) != 3:
        return GeoRef()
    spatial = [i for i, role in enumerate(roles) if role == SPACE]
    spacing, units = _imagej_spacing(tif) or _ome_spacing(tif) or ((1.0, 1.0, 1.0), None)
    scaled = [s * full_shape[i] / shape[i] for s, i in zip(spacing, spatial)]
    return GeoRef.from_voxel_affine(np.diag([*scaled, 1.0]), units=units)


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
