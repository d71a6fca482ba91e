"""``open_raster``: any supported raster URL to a lazy, georeferenced ``xarray.DataArray``."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections.abc import Sequence
from typing import Any

import dask.array as da
import fsspec
import numpy as np
import xarray as xr
import zarr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from geoseg import budgets
from geoseg.errors import BandMismatchError, PlanError, RasterNotFoundError, UnsupportedFormatError
from geoseg.io import allow, faults, images, mosaic, omezarr, remote
from geoseg.io.georef import GeoRef
from geoseg.io.geozarr import geozarr_dimension_names, geozarr_georef
from geoseg.io.nifti import GZIP_MAGIC, NiftiSource, is_nifti, nifti_source
from geoseg.io.sources import (
    BAND,
    DROP,
    SPACE,
    GeoTIFFSource,
    RasterSource,
    ZarrSource,
    open_rasterio,
)
from geoseg.tiling.plan import coerce_per_axis, round_up

log = logging.getLogger("geoseg.io")

TIFF_SUFFIXES = (".tif", ".tiff", ".gtiff", ".cog")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_COORD_NAMES = {"x", "y", "band", "spatial_ref", "lat", "lon", "latitude", "longitude", "time"}
SUPPORTED = ("Zarr v2/v3 (an array or a group holding one), OME-Zarr (NGFF 0.4/0.5), GeoTIFF/COG "
             "(.tif, .tiff), NIfTI (.nii), TIFF stacks (ImageJ, OME-TIFF, multi-page), PNG, JPEG, GIF, "
             "BMP, WebP")


def open_raster(
    url: str | Sequence[str],
    storage_options: dict[str, Any] | None = None,
    *,
    variable: str | None = None,
    bands: Sequence[int] | None = None,
    level: int | None = None,
    chunks: int | str | Sequence[int] | None = None,
    pages: str | None = None,
) -> xr.DataArray:
    """Open a raster lazily as a dask-backed ``DataArray`` with dims ``("band", "y", "x")``,
    or ``("band", "z", "y", "x")`` for a volume.

    Parameters
    ----------
    url
        A path or fsspec URL (``file://``, ``s3://``, ``http://``, ``memory://``, ...) of a
        Zarr array or group, an OME-Zarr image, a GeoTIFF/COG, an uncompressed NIfTI file, a
        TIFF stack or a PNG/JPEG/GIF/BMP/WebP image. ``http(s)://`` URLs are read-only.
    storage_options
        Passed to fsspec (credentials, endpoint); never stored in attributes.
    variable
        The array inside a Zarr group, when the group holds several.
    bands
        1-based band numbers to keep, in order (default: all).
    level
        Resolution level: 0 is full resolution; for a GeoTIFF/COG, 1 is its first
        overview; for OME-Zarr, the multiscale dataset of that index; for a TIFF stack, its
        pyramid level.
    chunks
        Spatial chunk size of the dask array. Default: the file's own chunking, one
        task per stored chunk (grouped into whole multiples of it only when there would
        be more than ``GEOSEG_MAX_TASKS`` chunks, with a log line giving the figures).
        ``"grouped"``: whole multiples of the stored chunks, at least 512 pixels (or 128
        voxels) per axis, so small stored chunks make fewer, larger tasks (logged). A
        PNG/JPEG image is one chunk: it cannot be read by window, so every task decodes it
        whole (once per process).
    pages
        What the pages of a non-georeferenced TIFF stack are when its metadata does not say:
        ``"z"`` (the default: a volume) or ``"band"``.

    Each chunk is read by its own task, which opens the file on the worker and
    reads its window; this function reads only metadata.
    """
    source = open_source(url, storage_options, variable=variable, bands=bands, level=level, pages=pages)
    return source_to_dataarray(source, chunks)


def open_source(url: str | Sequence[str], storage_options: dict[str, Any] | None = None, *,
                variable: str | None = None, bands: Sequence[int] | None = None,
                level: int | None = None, pages: str | None = None) -> RasterSource:
    """Inspect ``url`` (metadata only) and describe it as a :class:`RasterSource`. Transient
    storage errors are retried; a missing bucket or object and access denied raise geoseg errors.

    A glob pattern (``s3://bucket/scenes/*.tif``) or a list of URLs is read as one mosaic of
    scenes on a common grid (:mod:`geoseg.io.mosaic`).

    A raster declaring more pixels than ``GEOSEG_MAX_PIXELS`` raises
    :class:`~geoseg.errors.BudgetError` (:mod:`geoseg.budgets`) before any pixel is read."""
    so = dict(storage_options or {})
    if not isinstance(url, str) or mosaic.is_glob(url):
        source = _mosaic(url, so, variable=variable, bands=bands, level=level)
    else:
        with remote.storage_errors(url, so, "Reading"), faults.metadata_errors(url, so):
            source = remote.call_with_retries(_open_source, url, so, variable, bands, level, pages,
                                              url=url, storage_options=so)
    budgets.check_pixels(source.shape[1:], f"input {remote.public_url(source.url)}")
    return source


def _mosaic(urls: str | Sequence[str], so: dict[str, Any], **options: Any) -> RasterSource:
    if isinstance(urls, str):
        with remote.storage_errors(urls, so, "Listing"), faults.metadata_errors(urls, so):
            fs, _ = fsspec.core.url_to_fs(urls, **so)
            found = sorted(fs.unstrip_protocol(p) if "://" in urls else p for p in fs.glob(urls))
        if not found:
            raise RasterNotFoundError(f"No raster matches {remote.public_url(urls)}; check the pattern "
                                      "(and storage_options for remote stores).")
        name, listed = urls, found
    else:
        if not urls:
            raise RasterNotFoundError("An empty list of rasters was given; give at least one URL.")
        name, listed = f"{urls[0]} (+{len(urls) - 1} more)", list(urls)
    sources = [open_source(u, so, **options) for u in listed]
    return sources[0] if len(sources) == 1 else mosaic.mosaic_source(sources, name)


def _open_source(url: str, so: dict[str, Any], variable: str | None, bands: Sequence[int] | None,
                 level: int | None, pages: str | None) -> RasterSource:
    kind = detect_format(url, so)
    if pages is not None and kind != "tiff":
        raise UnsupportedFormatError(f"pages={pages!r} was given for {remote.public_url(url)}, which is "
                                     f"not a TIFF stack ({kind}); drop pages.")
    if kind == "zarr":
        return _zarr_source(url, so, variable, bands, level)
    if kind == "nifti":
        _refuse_level(url, level, "NIfTI")
        return _with_bands(nifti_source(url, so), bands)
    if kind == "tiff":
        return _with_bands(images.tiff_source(url, so, pages=pages, level=level), bands)
    if kind == "image":
        _refuse_level(url, level, "a PNG/JPEG image")
        return _with_bands(images.image_source(url, so), bands)
    return _geotiff_source(url, so, bands, level)


def detect_format(url: str, storage_options: dict[str, Any]) -> str:
    """``"zarr"``, ``"geotiff"``, ``"nifti"``, ``"tiff"`` (a stack for tifffile) or ``"image"``
    (PNG/JPEG/...); raises when the URL is missing or none of them."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    path = path.rstrip("/")
    if not path.endswith(".zarr") and remote.isfile(fs, path):
        kind = _file_kind(fs, path, url, storage_options)  # a file: no Zarr probes
        if kind is not None:
            return kind
    if any(remote.exists(fs, f"{path}/{marker}") for marker in ("zarr.json", ".zarray", ".zgroup")):
        return "zarr"  # by its markers: a web server may have no page for the store's folder itself
    if not remote.exists(fs, path):
        raise remote.not_found(url, storage_options)
    raise UnsupportedFormatError(
        f"Cannot read {url}: it is not a format geoseg reads (found neither Zarr metadata "
        f"nor a TIFF header). Supported: {SUPPORTED}. Convert other formats to GeoTIFF or Zarr first."
    )


def _file_kind(fs: Any, path: str, url: str, storage_options: dict[str, Any]) -> str | None:
    """What a file's first bytes say it is, if geoseg reads it."""
    head = fs.cat_file(path, start=0, end=348)  # one small range request, no read-ahead
    if head[:4] in _TIFF_MAGIC:
        return images.tiff_kind(url, storage_options)
    if images.image_kind(head):
        return "image"
    if is_nifti(head) or (head[:2] == GZIP_MAGIC and path.endswith(".nii.gz")):
        return "nifti"  # a gzipped one gets its own error (convert it) from the reader
    allow.refuse_gdal_format(url, head)  # a VRT (or WMS ...) named .tif: say what it is
    return None


def _zarr_source(url: str, so: dict[str, Any], variable: str | None,
                 bands: Sequence[int] | None, level: int | None) -> ZarrSource:
    node = zarr.open(url, mode="r", **({"storage_options": so} if so else {}))
    group = node if isinstance(node, zarr.Group) else None
    if group is not None and variable is None and omezarr.multiscales(dict(group.attrs)):
        return _ome_source(url, so, group, bands, level)
    _refuse_level(url, level, "a plain Zarr array")
    array_path = _pick_variable(node, url, variable) if group is not None else ""
    arr = group[array_path] if group is not None else node
    roles = axis_roles(arr.shape, geozarr_dimension_names(arr, group, _dimension_names(arr)), url)
    return zarr_array_source(url, so, arr, array_path, roles, bands, _zarr_georef(arr, group, roles))


def zarr_array_source(url: str, so: dict[str, Any], arr: zarr.Array, array_path: str,
                      roles: tuple[str, ...], bands: Sequence[int] | None, georef: GeoRef,
                      band_names: Sequence[str] | None = None) -> ZarrSource:
    """A :class:`ZarrSource` for ``arr`` whose axes play ``roles``."""
    spatial = [i for i, r in enumerate(roles) if r == SPACE]
    band_axis = roles.index(BAND) if BAND in roles else None
    n_bands = 1 if band_axis is None else arr.shape[band_axis]
    indexes = _band_indexes(bands, n_bands, url)
    names = list(band_names) if band_names is not None else _zarr_band_names(arr, n_bands)
    return ZarrSource(
        url=url,
        shape=(len(indexes), *(arr.shape[i] for i in spatial)),
        dtype=str(arr.dtype),
        chunks=tuple(arr.chunks[i] for i in spatial),
        georef=georef,
        band_names=tuple(names[i] for i in indexes),
        storage_options=so,
        array_path=array_path,
        band_indexes=None if bands is None or band_axis is None else tuple(indexes),
        roles=roles,
    )


def _ome_source(url: str, so: dict[str, Any], group: zarr.Group, bands: Sequence[int] | None,
                level: int | None) -> ZarrSource:
    path, image = omezarr.level_path(group, level, url)
    arr = group[path]
    roles = omezarr.roles(image, arr.shape, url)
    attrs = dict(group.attrs)
    n_bands = arr.shape[roles.index(BAND)] if BAND in roles else 1
    georef = omezarr.georef(image, level or 0, roles, arr.attrs.get("nodata"))
    return zarr_array_source(url, so, arr, path, roles, bands, georef,
                             omezarr.channel_names(attrs, n_bands))


def _refuse_level(url: str, level: int | None, what: str) -> None:
    if level:
        raise UnsupportedFormatError(f"level={level} was asked of {url}, but {what} has one resolution "
                                     "only; drop level (or use 0).")


def _with_bands(source: NiftiSource, bands: Sequence[int] | None) -> NiftiSource:
    """``source`` reduced to ``bands`` (1-based)."""
    if bands is None:
        return source
    indexes = _band_indexes(bands, source.shape[0], source.url)
    return dataclasses.replace(source, shape=(len(indexes), *source.shape[1:]), band_indexes=tuple(indexes),
                               band_names=tuple(source.band_names[i] for i in indexes))


def _pick_variable(group: zarr.Group, url: str, variable: str | None) -> str:
    arrays = {name: a for name, a in group.arrays()}
    if variable is not None:
        if variable not in arrays:
            raise RasterNotFoundError(
                f"Zarr group {url} has no array {variable!r}; it has: {', '.join(sorted(arrays)) or 'none'}."
            )
        return variable
    candidates = sorted(n for n, a in arrays.items() if a.ndim in (2, 3, 4) and n not in _COORD_NAMES)
    if len(candidates) != 1:
        raise UnsupportedFormatError(
            f"Zarr group {url} holds {len(candidates)} raster-like arrays ({', '.join(candidates) or 'none'}); "
            "name the one to read: input.variable in a job spec, --variable on the command line, "
            "variable= in Python."
        )
    return candidates[0]


def _dimension_names(arr: zarr.Array) -> tuple[str | None, ...] | None:
    if arr.metadata.zarr_format == 3:
        return arr.metadata.dimension_names
    dims = arr.attrs.get("_ARRAY_DIMENSIONS")
    return tuple(dims) if dims else None


_SPATIAL_NAMES = ("z", "y", "x")
_BAND_NAMES = ("band", "bands", "c", "channel", "channels")
_TIME_NAMES = ("t", "time")


def axis_roles(shape: Sequence[int], dims: Sequence[str | None] | None, url: str) -> tuple[str, ...]:
    """The role of each axis of an array: named dims decide; unnamed ones are read as
    ``(y, x)``, ``(band, y, x)`` or ``(band, z, y, x)``."""
    if dims and all(dims) and {"y", "x"} <= set(dims):
        return _named_roles(shape, [str(d) for d in dims], url)
    unnamed = {2: (SPACE, SPACE), 3: (BAND, SPACE, SPACE), 4: (BAND, SPACE, SPACE, SPACE)}
    if len(shape) not in unnamed:
        raise UnsupportedFormatError(
            f"Array at {url} has {len(shape)} dimensions and no dimension names; expected 2 (y, x), "
            "3 (band, y, x) or 4 (band, z, y, x). Name its dimensions (Zarr v3 dimension_names or "
            "xarray's _ARRAY_DIMENSIONS) so geoseg knows which axis is which."
        )
    return unnamed[len(shape)]


def _named_roles(shape: Sequence[int], dims: list[str], url: str) -> tuple[str, ...]:
    roles = []
    for name, size in zip(dims, shape):
        if name in _SPATIAL_NAMES:
            roles.append(SPACE)
        elif size == 1 and (name in _TIME_NAMES or BAND in roles or name not in _BAND_NAMES):
            roles.append(DROP)
        elif name in _BAND_NAMES or BAND not in roles:
            roles.append(BAND)
        else:
            raise UnsupportedFormatError(
                f"Array at {url} has dimensions {tuple(dims)} with shape {tuple(shape)}: geoseg reads "
                "one band axis plus z/y/x, and drops only axes of length 1. Select one time step or "
                "band set first (e.g. write it with xarray's .isel)."
            )
    if dims.index("y") > dims.index("x") or ("z" in dims and dims.index("z") > dims.index("y")):
        raise UnsupportedFormatError(f"Array at {url} has dimensions {tuple(dims)}; geoseg expects the "
                                     "spatial axes in the order z, y, x. Transpose it first.")
    return tuple(roles)


def _band_indexes(bands: Sequence[int] | None, n_bands: int, url: str) -> list[int]:
    if bands is None:
        return list(range(n_bands))
    bad = [b for b in bands if not 1 <= int(b) <= n_bands]
    if bad:
        raise BandMismatchError(
            f"Band numbers {bad} are out of range for {url}, which has {n_bands} band(s); "
            f"bands are numbered from 1 to {n_bands}."
        )
    return [int(b) - 1 for b in bands]


def _zarr_band_names(arr: zarr.Array, n_bands: int) -> list[str]:
    names = arr.attrs.get("band_names")
    if isinstance(names, list) and len(names) == n_bands:
        return [str(n) for n in names]
    return [f"band_{i + 1}" for i in range(n_bands)]


def _zarr_georef(arr: zarr.Array, group: zarr.Group | None, roles: Sequence[str] = ()) -> GeoRef:
    attrs = dict(arr.attrs)
    nodata = attrs.get("nodata")
    if roles.count(SPACE) == 3:
        affine = attrs.get("voxel_affine")
        if affine is None and "spacing" in attrs:
            affine = np.diag([*map(float, attrs["spacing"]), 1.0])
        return GeoRef.from_voxel_affine(np.eye(4) if affine is None else affine, nodata, attrs.get("units"))
    mapping = attrs.get("grid_mapping", "spatial_ref")
    if group is not None and mapping in group:
        return GeoRef.from_spatial_ref_attrs(dict(group[mapping].attrs), nodata)
    geozarr = geozarr_georef(attrs, dict(group.attrs) if group is not None else {}, nodata)
    if geozarr is not None:
        return geozarr
    if "crs" in attrs or "transform" in attrs:
        return GeoRef.from_crs(attrs.get("crs"), attrs.get("transform"), nodata)
    return GeoRef(nodata=None if nodata is None else float(nodata))


def _geotiff_source(url: str, so: dict[str, Any], bands: Sequence[int] | None,
                    level: int | None) -> GeoTIFFSource:
    overview = None if not level else int(level) - 1
    with open_rasterio(url, so) as ds:
        n_overviews = len(ds.overviews(1))
    if overview is not None and not 0 <= overview < n_overviews:
        raise UnsupportedFormatError(
            f"{url} has {n_overviews} overview(s), so levels 0 (full resolution) to {n_overviews}; "
            f"received level={level}." + (" Build overviews (gdaladdo, or a COG) to read a coarser level."
                                          if not n_overviews else ""))
    with open_rasterio(url, so, overview) as ds:
        indexes = [i + 1 for i in _band_indexes(bands, ds.count, url)]
        names = _tiff_band_names(ds)
        block_y, block_x = ds.block_shapes[0]
        return GeoTIFFSource(
            url=url,
            shape=(len(indexes), ds.height, ds.width),
            dtype=str(ds.dtypes[indexes[0] - 1]),
            chunks=(block_y, block_x),
            georef=GeoRef.from_crs(ds.crs, ds.transform, ds.nodata),
            band_names=tuple(names[i - 1] for i in indexes),
            storage_options=so,
            band_indexes=tuple(indexes),
            overview_level=overview,
        )


def _tiff_band_names(ds: Any) -> list[str]:
    descriptions = [d for d in ds.descriptions if d]
    if len(descriptions) == ds.count:
        return list(descriptions)
    interp = [c.name for c in ds.colorinterp]
    if len(set(interp)) == ds.count and all(c in ("red", "green", "blue", "alpha") for c in interp):
        return interp
    return [f"band_{i + 1}" for i in range(ds.count)]


def source_to_dataarray(source: RasterSource, chunks: int | str | Sequence[int] | None = None
                        ) -> xr.DataArray:
    """A dask-backed DataArray whose every chunk is one ``source.read(window)`` task."""
    spatial = source.shape[1:]
    sizes = dask_chunks(source, chunks)
    axis_chunks = [_split(n, c) for n, c in zip(spatial, sizes)]
    name = "open_raster-" + tokenize(source, sizes)
    dsk = {}
    for index in itertools.product(*(range(len(c)) for c in axis_chunks)):
        window = tuple(slice(sum(c[:i]), sum(c[: i + 1])) for c, i in zip(axis_chunks, index))
        dsk[(name, 0, *index)] = (source.read, window)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    data = da.Array(graph, name, ((source.shape[0],), *axis_chunks), dtype=np.dtype(source.dtype))
    coords: dict[str, Any] = {"band": ("band", list(source.band_names))}
    if len(spatial) == 2:
        coords.update(source.georef.coords(*spatial))
    out = xr.DataArray(data, dims=("band", *source.spatial_dims), coords=coords,
                       attrs=source.georef.attrs(), name="raster")
    out.encoding["geoseg_source"] = source
    return out


GROUPED = "grouped"


def dask_chunks(source: RasterSource, chunks: int | str | Sequence[int] | None) -> tuple[int, ...]:
    """Spatial dask chunks for ``source``: ``chunks`` as given, ``"grouped"`` (whole multiples
    of the stored chunks, at least 512 pixels or 128 voxels per axis), or ``None``: the stored
    chunks, grouped only as far as ``GEOSEG_MAX_TASKS`` requires. Any grouping is logged."""
    stored = tuple(int(c) for c in source.chunks)
    if isinstance(chunks, str):
        if chunks != GROUPED:
            raise PlanError(f"chunks={chunks!r}; expected None (the stored chunks), "
                            f"{GROUPED!r}, or a size in pixels per axis.")
        least = 512 if len(stored) == 2 else 128
        return _grouping(source, tuple(round_up(least, c) if c < least else c for c in stored),
                         "as asked (chunks='grouped')")
    if chunks is not None:
        return coerce_per_axis(chunks, len(stored), "chunks")
    limit = budgets.limit(budgets.MAX_TASKS)
    factor = max(1, math.isqrt(_n_chunks(source.shape[1:], stored) // limit))
    while _n_chunks(source.shape[1:], tuple(c * factor for c in stored)) > limit:
        factor += 1  # the least whole multiple of the stored chunks that fits
    return _grouping(source, tuple(c * factor for c in stored),
                     f"to stay within GEOSEG_MAX_TASKS={budgets.figure(limit)}")


def _n_chunks(shape: Sequence[int], chunks: Sequence[int]) -> int:
    return int(np.prod([-(-int(n) // c) for n, c in zip(shape, chunks)]))


def _grouping(source: RasterSource, sizes: tuple[int, ...], why: str) -> tuple[int, ...]:
    """``sizes``, logged when they group several stored chunks into one dask chunk."""
    stored = tuple(int(c) for c in source.chunks)
    spatial = source.shape[1:]
    if _n_chunks(spatial, sizes) < _n_chunks(spatial, stored):
        level = logging.INFO if why.startswith("as asked") else logging.WARNING
        log.log(level, "%s: stored chunks %s grouped into %s %s: %s tasks instead of %s.",
                remote.public_url(source.url), _by(stored), _by(sizes), why,
                budgets.figure(_n_chunks(spatial, sizes)), budgets.figure(_n_chunks(spatial, stored)))
    return sizes


def _by(sizes: Sequence[int]) -> str:
    return " x ".join(str(int(c)) for c in sizes)


def _split(n: int, c: int) -> tuple[int, ...]:
    return tuple(min(c, n - i) for i in range(0, n, c))
