"""Plain images: PNG, JPEG, GIF, BMP and WebP, through imageio.

These formats are compressed as a whole: no window can be read without decoding the image.
:class:`ImageSource` therefore decodes the whole image in the first task of a worker process
that needs it, keeps the last image it decoded, and cuts every window from memory;
``open_raster`` gives such an image a single chunk (one task) unless told otherwise. Images
whose decoded pixels exceed ``MAX_IMAGE_BYTES`` are refused before anything is read: convert
them once to a tiled GeoTIFF or a chunked Zarr. Only the first frame of an animated GIF or WebP
is read. Band names come from the channels: gray, gray + alpha, red/green/blue(/alpha).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import imageio.v3 as iio
import numpy as np
from PIL import Image

from geoseg.core.urls import public_url
from geoseg.errors import UnsupportedFormatError
from geoseg.io import remote
from geoseg.io.georef import GeoRef
from geoseg.io.readers import probe
from geoseg.io.readers.base import RasterSource, Reader, refuse_level, select_bands

MAX_IMAGE_BYTES = 2**29  # decoded size of the largest plain image read whole (512 MiB)
IMAGE_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
}
CHANNEL_NAMES = {
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


class ImageReader(Reader):
    name = "image"
    description = "a PNG, JPEG, GIF, BMP or WebP image"
    priority = 30

    def guess_can_open(self, url: str, storage_options: dict[str, Any]) -> bool:
        return image_kind(probe.head(url, storage_options)) is not None

    def open(self, url: str, storage_options: dict[str, Any], *, bands: Sequence[int] | None = None,
             level: int | None = None) -> ImageSource:
        refuse_level(url, level, "a PNG/JPEG image")
        return select_bands(image_source(url, storage_options), bands)


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
            f"{public_url(url)} is a {shape[1]} x {shape[0]} image with {bands} band(s): "
            f"{nbytes / 2**20:.0f} MiB decoded, over the {max_bytes / 2**20:.0f} MiB geoseg "
            "decodes whole (PNG/JPEG cannot be read by window). Convert it once to a chunked Zarr "
            "or a tiled GeoTIFF (`geoseg convert IN OUT.zarr`, or `gdal_translate -of COG IN "
            "OUT.tif`) and use that."
        )
    names = ("cyan", "magenta", "yellow", "black") if mode == "CMYK" else CHANNEL_NAMES.get(bands)
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
        with warnings.catch_warnings():  # Pillow's warning of a large image, on stderr before
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # geoseg's size check
            with fs.open(path, "rb", block_size=remote.PROBE_BLOCK) as f, \
                    iio.imopen(f, "r") as image:
                props = image.properties(index=0)
                mode = image.metadata(index=0, exclude_applied=False).get("mode")
    except Exception as exc:  # whatever imageio's plugins raise on a bad file
        if remote.is_transient(exc) or isinstance(exc, (FileNotFoundError, PermissionError)):
            raise
        if remote.whole_files_only(exc, url) is not None:  # a server ignoring Range: no bad file
            raise remote.whole_files(url) from None
        if isinstance(exc, Image.DecompressionBombError):  # a whole image, far over the limit
            raise UnsupportedFormatError(
                f"{public_url(url)} is an image too large to decode whole ({exc}); geoseg decodes "
                f"at most {MAX_IMAGE_BYTES / 2**20:.0f} MiB of a PNG/JPEG, which cannot be read "
                "by window. Convert it once to a tiled GeoTIFF with a tool that streams it "
                "(`gdal_translate -of COG IN OUT.tif`) and use that.") from None
        raise UnsupportedFormatError(
            f"Cannot read {public_url(url)}: it starts like an image file, but imageio cannot "
            f"decode it ({remote.reason(exc, storage_options)}). Check that the file is complete."
        ) from None
    shape = tuple(int(n) for n in props.shape)
    if len(shape) not in (2, 3):
        raise UnsupportedFormatError(
            f"{public_url(url)}: an image of shape {shape}; expected "
            "(y, x) or (y, x, channel)."
        )
    return shape, props.dtype, mode
