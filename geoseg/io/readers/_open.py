"""Opening rasters: a URL to a :class:`RasterSource` through the reader that claims it, and a
source to a lazy, georeferenced ``xarray.DataArray`` whose every chunk is one read task."""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dask.array as da
import fsspec
import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from geoseg import budgets
from geoseg.core.pixels import check_pixel_dtype
from geoseg.core.text import as_whole
from geoseg.core.urls import credentials_refused, public_url
from geoseg.errors import (
    CorruptInputError,
    GeosegError,
    ParameterError,
    PlanError,
    RasterNotFoundError,
    StorageAccessError,
    UnsupportedFormatError,
)
from geoseg.io import faults, mosaic, remote
from geoseg.io.georef import pixel_index_coords, voxel_index_coords
from geoseg.io.readers import _registry, probe
from geoseg.io.readers.base import RasterSource
from geoseg.tiling.plan import ceil_div, coerce_per_axis, round_up

log = logging.getLogger("geoseg.io")
OPEN_THREADS = 8  # scenes of a mosaic opened at once


def open_raster(
    url: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    storage_options: dict[str, Any] | None = None,
    *,
    variable: str | None = None,
    bands: Sequence[int] | None = None,
    level: int | None = None,
    chunks: int | str | Sequence[int] | None = None,
    pages: str | None = None,
    reader: str | None = None,
) -> xr.DataArray:
    """Open a raster lazily as a dask-backed ``DataArray`` with dims ``("band", "y", "x")``,
    or ``("band", "z", "y", "x")`` for a volume.

    Parameters
    ----------
    url
        A path or fsspec URL (``file://``, ``s3://``, ``http://``, ``memory://``, ...) of a
        Zarr array or group, an OME-Zarr image, a GeoTIFF/COG, an uncompressed NIfTI file, a
        TIFF stack or a PNG/JPEG/GIF/BMP/WebP image. ``http(s)://`` URLs are read-only.
        A :class:`pathlib.Path` (any ``os.PathLike``) is taken as its path; a list of them
        (or a glob pattern) is read as one mosaic. An array already in memory does not go
        here: give it to :func:`geoseg.segment` as a DataArray with dims ``(band, y, x)``.
    storage_options
        Passed to fsspec (credentials, endpoint); never stored in attributes.
    variable
        The array inside a Zarr group, when the group holds several.
    bands
        1-based band numbers to keep, in order (default: all); one int keeps one band.
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
    reader
        The name of the reader to open ``url`` with (:func:`installed_readers`); by default
        each installed reader is asked in turn whether the URL is its format.

    Each chunk is read by its own task, which opens the file on the worker and
    reads its window; this function reads only metadata.
    """
    source = open_source(url, storage_options, variable=variable, bands=bands, level=level,
                         pages=pages, reader=reader)
    return source_to_dataarray(source, chunks)


def open_source(url: str | Sequence[str], storage_options: dict[str, Any] | None = None, *,
                variable: str | None = None, bands: Sequence[int] | None = None,
                level: int | None = None, pages: str | None = None,
                reader: str | None = None) -> RasterSource:
    """Inspect ``url`` (metadata only) and describe it as a :class:`RasterSource`. Transient
    storage errors are retried; a missing bucket or object and access denied raise geoseg errors.

    The reader named ``reader`` opens it; without one, the installed readers are asked in turn
    (:func:`installed_readers`) and the first that claims the URL opens it. An option the
    reader does not take (``pages`` for a GeoTIFF, ``level`` for a reader without levels) is
    refused, naming the formats that take it.

    A glob pattern (``s3://bucket/scenes/*.tif``) or a list of URLs is read as one mosaic of
    scenes on a common grid (:mod:`geoseg.io.mosaic`).

    A raster declaring more pixels than ``GEOSEG_MAX_PIXELS``, or stored chunks that decode to
    more than ``GEOSEG_MAX_CHUNK_BYTES``, raises :class:`~geoseg.errors.BudgetError`
    (:mod:`geoseg.budgets`) before any pixel is read.

    A URL carrying credentials where its store cannot take them (``s3://KEY:SECRET@bucket/...``)
    raises :class:`~geoseg.errors.StorageAccessError` before anything is asked of the store.

    ``url`` may be an ``os.PathLike`` (a :class:`pathlib.Path`), or a list of them; ``bands``
    one band number or a list of them."""
    url = input_urls(url)
    for one in [url] if isinstance(url, str) else url:
        refused = credentials_refused(str(one), "Input")
        if refused is not None:
            raise StorageAccessError(refused)
    so = _storage_options(storage_options)
    options = {"variable": variable, "bands": band_numbers(bands), "level": level_number(level),
               "pages": pages}
    if not isinstance(url, str) or mosaic.is_glob(url):
        return _checked(_mosaic(url, so, reader, options))
    return _open_url(url, so, reader, options)


def input_urls(url: Any) -> str | list[str]:
    """``url`` as a string, or a list of them: an ``os.PathLike`` becomes its path string. An
    in-memory array (numpy, dask, xarray) or anything else is refused, saying what goes where."""
    if isinstance(url, (str, os.PathLike)):
        return _url(url)
    if isinstance(url, (list, tuple)):
        return [_url(one) for one in url]
    raise ParameterError(_not_a_url(url))


def _url(one: Any) -> str:
    text = os.fspath(one) if isinstance(one, (str, os.PathLike)) else None
    if not isinstance(text, str):
        raise ParameterError(_not_a_url(one))
    return text


def _not_a_url(value: Any) -> str:
    shape = getattr(value, "shape", None)
    what = f"value of type {type(value).__name__}" + ("" if shape is None else f" of shape {tuple(shape)}")
    advice = ("To segment an array already in memory, skip open_raster and give geoseg.segment a "
              'DataArray with dims (band, y, x), e.g. xr.DataArray(arr, dims=("band", "y", "x")).'
              if shape is not None else "Give the raster's path or URL as a string.")
    return (f"open_raster(): url: received a {what}; expected a path or URL string (or "
            f"os.PathLike such as pathlib.Path), or a list of them. {advice}")


def _storage_options(storage_options: Any) -> dict[str, Any]:
    """``storage_options`` as a new dict (``None``: empty); anything but a mapping is refused."""
    if storage_options is None:
        return {}
    if not isinstance(storage_options, Mapping):
        raise ParameterError(
            f"storage_options: received a value of type {type(storage_options).__name__} (its "
            "contents not shown: they may hold credentials); expected a dict of fsspec options, e.g. {'anon': True} or {'key': ..., 'secret': ...}, "
            "or None.")
    return dict(storage_options)


def band_numbers(bands: Any) -> list[int] | None:
    """``bands`` as a list of band numbers: one int is one band (``2`` -> ``[2]``); ``None`` is
    every band. Anything but whole numbers is refused; the reader checks their range."""
    if bands is None:
        return None
    values = [bands] if not isinstance(bands, (str, bytes, Mapping)) and not hasattr(
        bands, "__iter__") else bands
    numbers = [as_whole(b) for b in values]
    if isinstance(values, (str, bytes, Mapping)) or not numbers or None in numbers:
        raise ParameterError(
            f"bands: received {bands!r}; expected a list of 1-based band numbers, e.g. [2] or "
            "[3, 2, 1] (or one number for one band).")
    return numbers


def level_number(level: Any) -> int | None:
    """``level`` as a whole number >= 0 (``None``: full resolution); anything else is refused,
    not cut to a whole number. The reader checks it against the levels the raster has."""
    number = None if level is None else as_whole(level)
    if level is not None and (number is None or number < 0):
        raise ParameterError(
            f"level: received {level!r}; expected a resolution level, a whole number >= 0 "
            "(0: full resolution, 1: the first overview or pyramid level, ...).")
    return number


def _open_url(url: str, so: dict[str, Any], reader: str | None, options: dict[str, Any]
              ) -> RasterSource:
    """The one raster at ``url``, never read as a pattern: what a glob found is a file, even
    where its name holds a glob character (or the pattern matched only itself)."""
    remote.local_options_ignored(url, so, "input")
    with remote.storage_errors(url, so, "Reading"), faults.metadata_errors(url, so):
        source = remote.call_with_retries(_open_one, url, so, reader, options,
                                          url=url, storage_options=so)
    return _checked(source)


def _checked(source: RasterSource) -> RasterSource:
    """``source``, its pixel dtype, sizes and budgets checked (:mod:`geoseg.budgets`)."""
    check_pixel_dtype(source.dtype, f"input {public_url(source.url)}", "the input")
    _check_sizes(source)
    _check_extent(source)
    budgets.check_pixels(source.shape[1:], f"input {public_url(source.url)}")
    if source.stored_chunk:
        budgets.check_chunk(source.stored_chunk, source.dtype, f"input {public_url(source.url)}")
    return source


def _check_extent(source: RasterSource) -> None:
    """Refuse a transform whose terms are finite but place the raster's far pixels beyond
    floating point (``1e308`` metres a pixel): its coordinates would be infinite, and geoseg's
    own exports and stages would refuse the output the run wrote."""
    t = source.georef.affine if source.georef is not None else None
    if t is None or len(source.shape) != 3:
        return
    height, width = source.shape[1:]
    corners = [t @ corner for corner in ((0, 0), (width, 0), (0, height), (width, height))]
    if all(math.isfinite(v) for corner in corners for v in corner):
        return
    raise CorruptInputError(
        f"input {public_url(source.url)}: its transform {tuple(t)[:6]} places its "
        f"{height} x {width} pixels beyond the range of floating-point numbers (a corner at "
        f"{next(c for c in corners if not all(map(math.isfinite, c)))}); expected a transform "
        "whose pixel corners are finite. Fix the raster's transform, or remove it to read the "
        "raster without one.")


def _check_sizes(source: RasterSource) -> None:
    """Refuse a source whose shape or stored chunks have a size < 1, whichever reader described
    it: planning its tasks would divide by zero, or plan none."""
    sizes = (*source.shape, *source.chunks)
    if sizes and min(int(n) for n in sizes) >= 1:
        return
    raise CorruptInputError(
        f"input {public_url(source.url)} declares shape {tuple(source.shape)} (band, spatial "
        f"axes) and chunks {tuple(source.chunks)}; every size must be >= 1. Its metadata is "
        "corrupt, or the raster is empty: re-write or re-download it.")


def _open_one(url: str, so: dict[str, Any], name: str | None, options: dict[str, Any]) -> RasterSource:
    given = {key: value for key, value in options.items() if value is not None}
    _registry.refuse_special_file(url, so)
    remote.check_ranges(url, so)  # before any reader's first read drains a whole-file answer
    with probe.sharing():
        if name is None:
            name, reader = _registry.claim(url, so)
            _registry.refuse_options(reader, name, url, given)
            return reader.open(url, so, **given)
        reader = _registry.named(name)
        _registry.refuse_options(reader, name, url, given)
        try:
            return reader.open(url, so, **given)
        except (RasterNotFoundError, FileNotFoundError):  # none of its files there: is anything?
            raise _registry.not_its_format(name, reader, url, so) from None
        except Exception as exc:  # another format than the reader's? Say which, not "corrupt"
            if remote.is_transient(exc) or (isinstance(exc, GeosegError) and not isinstance(
                    exc, (UnsupportedFormatError, CorruptInputError))):
                raise
            if not _registry.another_format(reader, url, so):
                raise
            raise _registry.not_its_format(name, reader, url, so) from None


def _mosaic(urls: str | Sequence[str], so: dict[str, Any], reader: str | None,
            options: dict[str, Any]) -> RasterSource:
    if isinstance(urls, str):
        with remote.storage_errors(urls, so, "Listing"), faults.metadata_errors(urls, so):
            fs, _ = fsspec.core.url_to_fs(urls, **so)
            found = sorted(fs.unstrip_protocol(p) if "://" in urls else p for p in fs.glob(urls))
        if not found:
            raise RasterNotFoundError(f"No raster matches {public_url(urls)}; check the pattern "
                                      "(and storage_options for remote stores).")
        name, listed = urls, found
    else:
        if not urls:
            raise RasterNotFoundError("An empty list of rasters was given; give at least one URL.")
        name, listed = f"{urls[0]} (+{len(urls) - 1} more)", list(urls)
    if isinstance(urls, str):  # files found, each opened as itself
        sources = _each(lambda u: _open_url(u, so, reader, options), listed)
    else:  # the caller's URLs, each of which may be a pattern
        sources = _each(lambda u: open_source(u, so, reader=reader, **options), listed)
    return sources[0] if len(sources) == 1 else mosaic.mosaic_source(sources, name)


def _each(open_one: Callable[[str], RasterSource], urls: Sequence[str]) -> list[RasterSource]:
    """``open_one`` of every URL, in their order, up to :data:`OPEN_THREADS` at once (opening a
    remote scene mostly waits on the store). The first URL in order whose open fails raises its
    error; scenes not yet started are then not opened."""
    if len(urls) <= 1:
        return [open_one(u) for u in urls]
    with concurrent.futures.ThreadPoolExecutor(min(OPEN_THREADS, len(urls)),
                                               thread_name_prefix="geoseg-open") as pool:
        futures = [pool.submit(open_one, u) for u in urls]
        try:
            return [f.result() for f in futures]
        finally:
            for f in futures:
                f.cancel()


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
        coords.update(pixel_index_coords(source.georef, *spatial))
    elif source.georef.voxel_affine is not None:
        coords.update(voxel_index_coords(source.spatial_dims, spatial))
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
        sizes = coerce_per_axis(chunks, len(stored), "chunks")
        if min(sizes) < 1:
            raise PlanError(f"chunks={chunks!r}: expected sizes >= 1 on every axis (pixels per "
                            f"chunk), e.g. chunks=512, or None for the stored chunks {stored}.")
        return sizes
    limit = budgets.limit(budgets.MAX_TASKS)
    factor = max(1, math.isqrt(_n_chunks(source.shape[1:], stored) // limit))
    while _n_chunks(source.shape[1:], tuple(c * factor for c in stored)) > limit:
        factor += 1  # the least whole multiple of the stored chunks that fits
    return _grouping(source, tuple(c * factor for c in stored),
                     f"to stay within GEOSEG_MAX_TASKS={budgets.figure(limit)}")


def _n_chunks(shape: Sequence[int], chunks: Sequence[int]) -> int:
    return int(np.prod([ceil_div(int(n), c) for n, c in zip(shape, chunks)]))


def _grouping(source: RasterSource, sizes: tuple[int, ...], why: str) -> tuple[int, ...]:
    """``sizes``, logged when they group several stored chunks into one dask chunk."""
    stored = tuple(int(c) for c in source.chunks)
    spatial = source.shape[1:]
    if _n_chunks(spatial, sizes) < _n_chunks(spatial, stored):
        level = logging.INFO if why.startswith("as asked") else logging.WARNING
        log.log(level, "%s: stored chunks %s grouped into %s %s: %s tasks instead of %s.",
                public_url(source.url), _by(stored), _by(sizes), why,
                budgets.figure(_n_chunks(spatial, sizes)), budgets.figure(_n_chunks(spatial, stored)))
    return sizes


def _by(sizes: Sequence[int]) -> str:
    return " x ".join(str(int(c)) for c in sizes)


def _split(n: int, c: int) -> tuple[int, ...]:
    return tuple(min(c, n - i) for i in range(0, n, c))
