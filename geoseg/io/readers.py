"""``open_raster``: any supported raster URL to a lazy, georeferenced ``xarray.DataArray``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask.array as da
import fsspec
import numpy as np
import xarray as xr
import zarr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from geoseg.errors import RasterNotFoundError, UnsupportedFormatError
from geoseg.io.georef import GeoRef
from geoseg.io.sources import GeoTIFFSource, RasterSource, ZarrSource, open_rasterio
from geoseg.tiling.plan import round_up

TIFF_SUFFIXES = (".tif", ".tiff", ".gtiff", ".cog")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_COORD_NAMES = {"x", "y", "band", "spatial_ref", "lat", "lon", "latitude", "longitude", "time"}
SUPPORTED = "Zarr v2/v3 (an array or a group holding one), GeoTIFF/COG (.tif, .tiff)"


def open_raster(
    url: str,
    storage_options: dict[str, Any] | None = None,
    *,
    variable: str | None = None,
    bands: Sequence[int] | None = None,
    chunks: int | Sequence[int] | None = None,
) -> xr.DataArray:
    """Open a raster lazily as a dask-backed ``DataArray`` with dims ``("band", "y", "x")``.

    Parameters
    ----------
    url
        A path or fsspec URL (``file://``, ``s3://``, ``memory://``, ...) of a Zarr
        array or group, or of a GeoTIFF/COG.
    storage_options
        Passed to fsspec (credentials, endpoint); never stored in attributes.
    variable
        The array inside a Zarr group, when the group holds several.
    bands
        1-based band numbers to keep, in order (default: all).
    chunks
        Spatial chunk size of the dask array (default: the file's own chunking,
        grown to at least 512 pixels per axis).

    Each chunk is read by its own task, which opens the file on the worker and
    reads its window; this function reads only metadata.
    """
    source = open_source(url, storage_options, variable=variable, bands=bands)
    return source_to_dataarray(source, chunks)


def open_source(url: str, storage_options: dict[str, Any] | None = None, *,
                variable: str | None = None, bands: Sequence[int] | None = None) -> RasterSource:
    """Inspect ``url`` (metadata only) and describe it as a :class:`RasterSource`."""
    so = dict(storage_options or {})
    kind = detect_format(url, so)
    if kind == "zarr":
        return _zarr_source(url, so, variable, bands)
    return _geotiff_source(url, so, bands)


def detect_format(url: str, storage_options: dict[str, Any]) -> str:
    """``"zarr"`` or ``"geotiff"``; raises when the URL is missing or neither."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    path = path.rstrip("/")
    if not fs.exists(path):
        raise RasterNotFoundError(f"No raster at {url}: nothing exists at that path. "
                                  "Check the URL (and storage_options for remote stores).")
    if any(fs.exists(f"{path}/{marker}") for marker in ("zarr.json", ".zarray", ".zgroup")):
        return "zarr"
    if fs.isfile(path):
        with fs.open(path, "rb") as f:
            if f.read(4) in _TIFF_MAGIC:
                return "geotiff"
    raise UnsupportedFormatError(
        f"Cannot read {url}: it is not a format geoseg reads (found neither Zarr metadata "
        f"nor a TIFF header). Supported: {SUPPORTED}. Convert other formats to GeoTIFF or Zarr first."
    )


def _zarr_source(url: str, so: dict[str, Any], variable: str | None,
                 bands: Sequence[int] | None) -> ZarrSource:
    node = zarr.open(url, mode="r", **({"storage_options": so} if so else {}))
    group = node if isinstance(node, zarr.Group) else None
    array_path = _pick_variable(node, url, variable) if group is not None else ""
    arr = group[array_path] if group is not None else node
    dims = _dimension_names(arr)
    band_axis = _band_axis(arr.ndim, dims, url)
    spatial = [i for i in range(arr.ndim) if i != band_axis]
    n_bands = 1 if band_axis is None else arr.shape[band_axis]
    indexes = _band_indexes(bands, n_bands, url)
    names = _zarr_band_names(arr, n_bands)
    georef = _zarr_georef(arr, group)
    return ZarrSource(
        url=url,
        shape=(len(indexes), arr.shape[spatial[0]], arr.shape[spatial[1]]),
        dtype=str(arr.dtype),
        chunks=(arr.chunks[spatial[0]], arr.chunks[spatial[1]]),
        georef=georef,
        band_names=tuple(names[i] for i in indexes),
        storage_options=so,
        array_path=array_path,
        band_indexes=None if bands is None or band_axis is None else tuple(indexes),
        band_axis=band_axis,
    )


def _pick_variable(group: zarr.Group, url: str, variable: str | None) -> str:
    arrays = {name: a for name, a in group.arrays()}
    if variable is not None:
        if variable not in arrays:
            raise RasterNotFoundError(
                f"Zarr group {url} has no array {variable!r}; it has: {', '.join(sorted(arrays)) or 'none'}."
            )
        return variable
    candidates = sorted(n for n, a in arrays.items() if a.ndim in (2, 3) and n not in _COORD_NAMES)
    if len(candidates) != 1:
        raise UnsupportedFormatError(
            f"Zarr group {url} holds {len(candidates)} raster-like arrays ({', '.join(candidates) or 'none'}); "
            "name the one to read with variable= (or input.variable in a job spec)."
        )
    return candidates[0]


def _dimension_names(arr: zarr.Array) -> tuple[str | None, ...] | None:
    if arr.metadata.zarr_format == 3:
        return arr.metadata.dimension_names
    dims = arr.attrs.get("_ARRAY_DIMENSIONS")
    return tuple(dims) if dims else None


def _band_axis(ndim: int, dims: tuple[str | None, ...] | None, url: str) -> int | None:
    if ndim == 2:
        return None
    if ndim != 3:
        raise UnsupportedFormatError(
            f"Array at {url} has {ndim} dimensions; expected 2 (y, x) or 3 (band, y, x)."
        )
    if dims and "y" in dims and "x" in dims:
        return next(i for i, d in enumerate(dims) if d not in ("y", "x"))
    return 0


def _band_indexes(bands: Sequence[int] | None, n_bands: int, url: str) -> list[int]:
    if bands is None:
        return list(range(n_bands))
    bad = [b for b in bands if not 1 <= int(b) <= n_bands]
    if bad:
        raise UnsupportedFormatError(
            f"Band numbers {bad} are out of range for {url}, which has {n_bands} band(s); "
            f"bands are numbered from 1 to {n_bands}."
        )
    return [int(b) - 1 for b in bands]


def _zarr_band_names(arr: zarr.Array, n_bands: int) -> list[str]:
    names = arr.attrs.get("band_names")
    if isinstance(names, list) and len(names) == n_bands:
        return [str(n) for n in names]
    return [f"band_{i + 1}" for i in range(n_bands)]


def _zarr_georef(arr: zarr.Array, group: zarr.Group | None) -> GeoRef:
    attrs = dict(arr.attrs)
    nodata = attrs.get("nodata")
    mapping = attrs.get("grid_mapping", "spatial_ref")
    if group is not None and mapping in group:
        return GeoRef.from_spatial_ref_attrs(dict(group[mapping].attrs), nodata)
    if "crs" in attrs or "transform" in attrs:
        return GeoRef.from_crs(attrs.get("crs"), attrs.get("transform"), nodata)
    return GeoRef(nodata=None if nodata is None else float(nodata))


def _geotiff_source(url: str, so: dict[str, Any], bands: Sequence[int] | None) -> GeoTIFFSource:
    with open_rasterio(url, so) as ds:
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
        )


def _tiff_band_names(ds: Any) -> list[str]:
    descriptions = [d for d in ds.descriptions if d]
    if len(descriptions) == ds.count:
        return list(descriptions)
    interp = [c.name for c in ds.colorinterp]
    if len(set(interp)) == ds.count and all(c in ("red", "green", "blue", "alpha") for c in interp):
        return interp
    return [f"band_{i + 1}" for i in range(ds.count)]


def source_to_dataarray(source: RasterSource, chunks: int | Sequence[int] | None = None) -> xr.DataArray:
    """A dask-backed DataArray whose every chunk is one ``source.read(window)`` task."""
    cy, cx = _default_chunks(source) if chunks is None else _pair(chunks)
    n_bands, height, width = source.shape
    ychunks = _split(height, cy)
    xchunks = _split(width, cx)
    name = "open_raster-" + tokenize(source, cy, cx)
    dsk = {}
    for i, y0 in enumerate(np.cumsum((0,) + ychunks[:-1])):
        for j, x0 in enumerate(np.cumsum((0,) + xchunks[:-1])):
            window = (slice(int(y0), int(y0) + ychunks[i]), slice(int(x0), int(x0) + xchunks[j]))
            dsk[(name, 0, i, j)] = (source.read, window)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    data = da.Array(graph, name, ((n_bands,), ychunks, xchunks), dtype=np.dtype(source.dtype))
    coords = {"band": ("band", list(source.band_names)), **source.georef.coords(height, width)}
    out = xr.DataArray(data, dims=("band", "y", "x"), coords=coords, attrs=source.georef.attrs(), name="raster")
    out.encoding["geoseg_source"] = source
    return out


def _default_chunks(source: RasterSource) -> tuple[int, int]:
    """The file's chunks, whole multiples of them up to at least 512 pixels."""
    cy, cx = (round_up(512, c) if c < 512 else c for c in source.chunks)
    return cy, cx


def _pair(chunks: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(chunks, int):
        return chunks, chunks
    cy, cx = chunks
    return int(cy), int(cx)


def _split(n: int, c: int) -> tuple[int, ...]:
    return tuple(min(c, n - i) for i in range(0, n, c))
