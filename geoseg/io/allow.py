"""Allow-lists: which GDAL drivers may open an input, and where outputs may be written.

GDAL opens hundreds of formats, and some of them read further files or URLs that the file
names: a VRT (virtual raster) renamed ``scene.tif`` makes every worker that opens it read
whatever local file or URL its XML points at. geoseg therefore opens rasters with GDAL's
``GTiff`` driver only (GeoTIFF and COG; GDAL writes COGs with its ``COG`` driver but reads
them with ``GTiff``) and without looking for sidecar files (``.ovr``, ``.aux.xml``, ``.msk``),
which GDAL opens with any driver. Everything else is refused, naming its real driver.

An output URL is refused before anything is written when it carries credentials as user info
where its store cannot take them (``s3://KEY:SECRET@bucket/...``), when a segment of its path
is ``..``, when its scheme is not in ``GEOSEG_OUTPUT_SCHEMES``, or, when
``GEOSEG_OUTPUT_BUCKETS`` is set, when its bucket (container) is not one of them (shell-style
patterns such as ``team-*``); and an output where its own input is (:func:`overlapping`), which
replacing would delete.
"""

from __future__ import annotations

import fnmatch
import os
import re
from typing import Any
from urllib.parse import unquote, urlsplit

import fsspec

from geoseg import config
from geoseg.core.urls import credentials_refused, public_url
from geoseg.errors import OutputLocationError, UnsupportedFormatError

GDAL_DRIVERS = ("GTiff",)  # the drivers geoseg lets GDAL open an input with
GDAL_OPTIONS = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}  # no sidecar files, local or remote
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
# first bytes of formats GDAL would open, some of which read other files or URLs they name
_SIGNATURES = (
    (b"<VRTDataset", "VRT", "a GDAL virtual raster (XML naming other files or URLs)"),
    (b"<GDAL_WMS", "WMS", "a GDAL web map service description (XML naming a server)"),
    (b"<GDALTileIndexDataset", "GTI", "a GDAL tile index (XML naming other files)"),
    (b"<WMS_Capabilities", "WMS", "a web map service capabilities document"),
    (b"SQLite format 3", "GPKG/MBTiles", "an SQLite database"),
    (b"\x89HDF", "HDF5", "an HDF5 file"),
    (b"CDF\x01", "netCDF", "a netCDF file"),
    (b"CDF\x02", "netCDF", "a netCDF file"),
    (b"%PDF", "PDF", "a PDF document"),
    (b"\x00\x00\x00\x0cjP  ", "JP2OpenJPEG", "a JPEG 2000 file"),
    (b"<", "XML", "an XML document"),
)
_REFERRING = ("VRT", "WMS", "GTI")  # drivers that read what the file names
_LOCAL = ("file", "local", "memory")  # schemes without buckets


def gdal_driver(head: bytes) -> tuple[str, str] | None:
    """``(driver, description)`` of a file GDAL may open that starts with ``head``; ``None`` for
    a TIFF (the ``GTiff`` driver's) or for bytes this table does not know."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text[:4] in TIFF_MAGIC:
        return None
    for signature, driver, description in _SIGNATURES:
        if text.startswith(signature):
            return driver, description
    return None


def refuse_gdal_format(url: str, head: bytes) -> None:
    """Raise :class:`UnsupportedFormatError` when ``head`` is the start of a GDAL format that
    reads other files or URLs (a VRT named ``.tif``, ...)."""
    found = gdal_driver(head)
    if found is not None and found[0] in _REFERRING:
        raise driver_refused(url, *found)


def driver_refused(url: str, driver: str, description: str) -> UnsupportedFormatError:
    """The error for an input GDAL would open with ``driver``, which geoseg does not accept."""

    return UnsupportedFormatError(
        f"Cannot read {public_url(url)}: it is {description}, GDAL driver {driver}, whatever its "
        f"name says; geoseg opens inputs with the GDAL drivers {', '.join(GDAL_DRIVERS)} only "
        "(GeoTIFF/COG), because others read further files or URLs the file names. Convert it to "
        "a GeoTIFF/COG where you trust what it points at (gdal_translate -of COG IN OUT.tif), "
        "or to Zarr.")


def unknown_refused(url: str, head: bytes) -> UnsupportedFormatError:
    """The error for an input the allowed GDAL drivers do not recognise, by its first bytes."""
    found = gdal_driver(head)
    if found is not None:
        return driver_refused(url, *found)

    return UnsupportedFormatError(
        f"Cannot read {public_url(url)}: GDAL's {', '.join(GDAL_DRIVERS)} driver does not "
        f"recognise it (it starts with {head[:12]!r}); geoseg opens inputs with the GDAL drivers "
        f"{', '.join(GDAL_DRIVERS)} only (GeoTIFF/COG). Convert it to a GeoTIFF/COG or to Zarr.")


# --- outputs -------------------------------------------------------------------------------------


def output_schemes() -> tuple[str, ...]:
    """``GEOSEG_OUTPUT_SCHEMES``: the URL schemes an output may have (``file`` is a local path)."""
    return _names(config.get("GEOSEG_OUTPUT_SCHEMES"))


def output_buckets() -> tuple[str, ...]:
    """``GEOSEG_OUTPUT_BUCKETS``: bucket names or patterns outputs on object stores must be in;
    empty: any bucket."""
    return _names(config.get("GEOSEG_OUTPUT_BUCKETS"))


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def check_output_url(url: str) -> None:
    """Refuse (:class:`OutputLocationError`) an output URL with credentials as user info where
    its store cannot take them (``s3://KEY:SECRET@bucket/...``), a ``..`` segment, a scheme not in
    ``GEOSEG_OUTPUT_SCHEMES`` or, when ``GEOSEG_OUTPUT_BUCKETS`` is set, a bucket not in it."""
    refused = credentials_refused(url, "Output")
    if refused is not None:
        raise OutputLocationError(f"{refused} Nothing was written.")
    *wrappers, target = url.split("::")  # a chained URL (simplecache::s3://...): every protocol
    for protocol in [part.split("://", 1)[0] for part in wrappers] + [fsspec.utils.get_protocol(target)]:
        _check_scheme(url, protocol)
    _check_segments(url, target)
    _check_query(url, target)
    protocol = fsspec.utils.get_protocol(target)
    if protocol not in _LOCAL and output_buckets():
        _check_bucket(url, urlsplit(target).hostname or "")


def _check_query(url: str, target: str) -> None:
    """Refuse ``?`` or ``#`` in a store URL's key (``s3://bucket/one.zarr?v=2``): the store
    writes that key, but records, logs and reports show URLs without their query and fragment,
    where signed URLs keep tokens, so they would name another object (``s3://bucket/one.zarr``,
    perhaps another run's output) than the one written. A plain path keeps them."""
    scheme, sep, rest = target.partition("://")
    if sep and len(scheme) > 1 and ("?" in rest or "#" in rest):
        raise OutputLocationError(
            f"Output {_public(url)}: received a URL whose key holds '?' or '#' "
            f"({'?' if '?' in rest else '#'}...); expected a key without them: geoseg shows and "
            "records URLs without their query and fragment (where tokens hide), so the run's "
            "record and report would name another object. Choose a key without '?' and '#'. "
            "Nothing was written.")


def overlapping(a: str, a_options: dict[str, Any] | None, b: str, b_options: dict[str, Any] | None) -> bool:
    """Whether locations ``a`` and ``b`` are one, or one lies inside the other (same file
    system, paths equal or nested): writing or replacing one would touch the other. Pure URL
    arithmetic, nothing is read; local paths are compared absolute, symbolic links resolved."""
    try:
        fs_a, path_a = fsspec.core.url_to_fs(a, **(a_options or {}))
        fs_b, path_b = fsspec.core.url_to_fs(b, **(b_options or {}))
    except (ValueError, TypeError, ImportError):  # an unknown scheme: the reader or writer says so
        return False
    if type(fs_a) is not type(fs_b):
        return False
    if fsspec.utils.get_protocol(a) in ("file", "local"):
        path_a, path_b = os.path.realpath(path_a), os.path.realpath(path_b)
    path_a, path_b = path_a.rstrip("/"), path_b.rstrip("/")
    return path_a == path_b or path_a.startswith(f"{path_b}/") or path_b.startswith(f"{path_a}/")


def _check_scheme(url: str, protocol: str) -> None:
    allowed = output_schemes()
    if protocol not in allowed:
        raise OutputLocationError(
            f"Output {_public(url)}: received scheme {protocol}://; expected one of "
            f"{', '.join(allowed)} (GEOSEG_OUTPUT_SCHEMES). Write to one of those, or add "
            f"{protocol} to GEOSEG_OUTPUT_SCHEMES if outputs really belong there. Nothing was written.")


def _check_segments(url: str, target: str) -> None:
    rest = target.split("://", 1)[-1].split("?", 1)[0]
    if any(unquote(segment) == ".." for segment in re.split(r"[/\\]", rest)):
        raise OutputLocationError(
            f"Output {_public(url)}: received a path with a '..' segment; expected a location "
            "that does not climb out of its folder or bucket. Give the output's absolute path "
            "(or a URL without '..'). Nothing was written.")


def _check_bucket(url: str, bucket: str) -> None:
    allowed = output_buckets()
    if not any(fnmatch.fnmatchcase(bucket, pattern) for pattern in allowed):
        raise OutputLocationError(
            f"Output {_public(url)}: received bucket {bucket or '(none)'!r}; expected one of "
            f"{', '.join(allowed)} (GEOSEG_OUTPUT_BUCKETS). Write to one of those buckets, or add "
            "this one to GEOSEG_OUTPUT_BUCKETS. Nothing was written.")


def _public(url: str) -> str:

    return public_url(url)
