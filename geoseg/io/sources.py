"""Raster sources: small picklable descriptions of where pixels live and how to read a window.

A task carries a source and a window and reads its own pixels straight from
storage on whichever worker runs it; the client only ever reads metadata.
Storage options travel with the source (workers need them) but are excluded
from ``repr`` and comparisons so they never reach logs or errors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import rasterio
import rasterio.errors
import zarr
from rasterio.windows import Window

from geoseg.io import allow, faults, missing, remote
from geoseg.io.blockcache import read_blocks
from geoseg.io.georef import GeoRef


@dataclass(frozen=True)
class RasterSource:
    """Common fields. ``shape`` is ``(band, y, x)`` for images and ``(band, z, y, x)`` for
    volumes, after band selection; ``chunks`` is the storage chunking of the spatial axes."""

    url: str
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]
    georef: GeoRef
    band_names: tuple[str, ...]
    storage_options: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    read_cache: str | None = field(default=None, compare=False, repr=False)

    def with_read_cache(self) -> RasterSource:
        """This source reading through the per-process cache of decoded chunks
        (:mod:`geoseg.io.blockcache`) under a new name: one run's reads share chunks, and no
        run sees blocks an earlier run cached (the data may have changed since)."""
        return dataclasses.replace(self, read_cache=uuid.uuid4().hex)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every subclass's ``read`` retries transient storage errors (:mod:`geoseg.io.remote`)."""
        super().__init_subclass__(**kwargs)
        read = cls.__dict__.get("read")
        if read is not None and not getattr(read, "__geoseg_retrying__", False):
            cls.read = faults.reading_windows(remote.retrying("Reading")(read), probe=read)

    def read(self, window: tuple[slice, ...]) -> np.ndarray:  # pragma: no cover - abstract
        """Pixels ``(band, *window_shape)`` of a window that lies inside the raster."""
        raise NotImplementedError

    def chunk_name(self, index: tuple[int, ...]) -> str:
        """How an error names the chunk at spatial grid ``index``."""
        return f"block ({faults.grid_text(index)})"

    @property
    def format(self) -> str:
        return type(self).__name__.removesuffix("Source").lower()

    @property
    def spatial_dims(self) -> tuple[str, ...]:
        return ("y", "x") if len(self.shape) == 3 else ("z", "y", "x")


BAND, DROP, SPACE = "band", "drop", "space"


@dataclass(frozen=True)
class ZarrSource(RasterSource):
    """A Zarr array (v2 or v3), possibly inside a group, whose axes each play a role:
    ``"space"`` (z, y, x in order), ``"band"`` (at most one) or ``"drop"`` (length 1, e.g. time)."""

    array_path: str = ""
    band_indexes: tuple[int, ...] | None = None  # 0-based, into the array's band axis
    roles: tuple[str, ...] = (BAND, SPACE, SPACE)
    missing_chunks: str = "fill"  # chunks the store lacks: "error", "fill" (zarr's own way), "auto";
    # a job sets its input's from input.missing_chunks (geoseg.io.missing)

    def open_array(self) -> zarr.Array:
        kwargs: dict[str, Any] = {"mode": "r"}
        if self.storage_options:
            kwargs["storage_options"] = self.storage_options
        if self.array_path:
            kwargs["path"] = self.array_path
        return zarr.open_array(self.url, **kwargs)

    def chunk_name(self, index: tuple[int, ...]) -> str:
        """The storage key of the chunk at spatial grid ``index`` (its first band chunk)."""
        array = self.open_array()
        spatial = iter(index)
        coords = tuple(next(spatial) if role == SPACE else 0 for role in self.roles)
        key = array.metadata.encode_chunk_key(coords)
        several = any(role != SPACE and n > 1 for role, n in zip(self.roles, array.cdata_shape))
        return (f"{self.array_path}/{key}" if self.array_path else key) + (
            " (or another band chunk there)" if several else "")

    def read(self, window: tuple[slice, ...]) -> np.ndarray:
        array = self.open_array()
        spatial = iter(window)
        index = tuple(slice(0, 1) if role == DROP else slice(0, n) if role == BAND else next(spatial)
                      for role, n in zip(self.roles, array.shape))
        if not missing.fills(self.missing_chunks, array, self.georef.nodata):
            missing.refuse_absent(self.url, array, index)
        if self.read_cache is None:
            data = np.asarray(array[index])
        else:
            data = read_blocks(self.read_cache, index, array.shape, array.chunks, array.dtype,
                               lambda part: array[part])
        data = data[tuple(0 if role == DROP else slice(None) for role in self.roles)]
        kept = [role for role in self.roles if role != DROP]
        if BAND not in kept:
            return data[None]
        data = np.moveaxis(data, kept.index(BAND), 0)
        return data if self.band_indexes is None else data[list(self.band_indexes)]


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
