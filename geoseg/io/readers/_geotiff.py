"""GeoTIFF and COG, read with rasterio (GDAL's GTiff driver only), one window per task.

A TIFF is claimed by its first bytes. Multi-page TIFFs that are not georeferenced are claimed
first by the TIFF-stack reader (:mod:`geoseg.io.readers._tiffstack`); every other TIFF is read
here, its overviews as resolution levels.

An internal (per-dataset) mask marks no data the way a nodata value does: each task reads its
window of the mask with its pixels and writes the nodata value where the mask is 0 (NaN for
floats; integers without a nodata value are widened to hold one below their range, so no valid
value is taken for it). An alpha band stays a band (a warning says so where the bands read
leave it out).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import warnings
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Self

import fsspec
import numpy as np
import rasterio
import rasterio.enums
import rasterio.errors
from affine import Affine
from rasterio.windows import Window

from geoseg.core.urls import public_url
from geoseg.errors import CorruptInputError, UnsupportedFormatError
from geoseg.io import allow, blockcache, faults, remote, versions
from geoseg.io.georef import GeoRef
from geoseg.io.readers import probe
from geoseg.io.readers.base import RasterSource, Reader, band_indexes, widened

log = logging.getLogger("geoseg.io")
MIN_CACHE_BLOCK = 256  # pixels per axis of a cached block, at least (whole stored blocks)
CACHE_SHARE = 16  # a cached block takes at most 1/CACHE_SHARE of the read cache, else windows are read directly
# a TIFF without a georeference is read on its pixel grid, as its user expects: no warning about
# it reaches the terminal (a filter, not catch_warnings: reads run in many threads at once)
warnings.filterwarnings("ignore", category=rasterio.errors.NotGeoreferencedWarning)


@dataclass(frozen=True)
class GeoTIFFSource(RasterSource):
    """A GeoTIFF/COG read with rasterio, one window per task."""

    band_indexes: tuple[int, ...] = (1,)  # 1-based, rasterio's convention
    overview_level: int | None = None  # None: full resolution; 0: the first overview, ...
    masked: bool = False  # an internal mask's 0s read as nodata (NaN for floats without one)

    def read_as(self) -> str:
        if not self.masked:
            return ""
        return (f"{public_url(self.url)} has an internal mask, whose masked pixels read as nodata "
                f"{self.georef.nodata:g} in {self.dtype}")

    def read(self, window: tuple[slice, ...]) -> np.ndarray:
        """Pixels of ``window``. With a read cache (:meth:`with_read_cache`), assembled from whole
        blocks of the file's own tiles (or strips), each read once per process while the cache
        holds it (:mod:`geoseg.io.blockcache`); the file is opened only when a block is missing,
        its header bytes then taken from the cache too."""
        ys, xs = window
        cache = blockcache.process_cache() if self.read_cache is not None else None
        grid = self._cache_blocks()
        if cache is None or cache.max_bytes <= 0 or self._block_bytes(grid) * CACHE_SHARE > cache.max_bytes:
            with open_rasterio(self.url, self.storage_options, self.overview_level) as ds:
                return self._window(ds, ys, xs)
        with contextlib.ExitStack() as stack:
            opened: list[Any] = []

            def fetch(bounds: tuple[slice, ...]) -> np.ndarray:
                if not opened:  # rasterio datasets are not shared between threads: one per read
                    opened.append(stack.enter_context(open_rasterio(
                        self.url, self.storage_options, self.overview_level,
                        store=_task_bytes(self.url, self.storage_options, self.read_cache))))
                return self._window(opened[0], *bounds[1:])

            key = (self.read_cache, self.url, self.overview_level, self.band_indexes, self.masked)
            bands = self.shape[0]
            return blockcache.read_blocks(key, (slice(0, bands), ys, xs), self.shape, (bands, *grid),
                                          np.dtype(self.dtype), fetch, cache)

    def _window(self, ds: Any, ys: slice, xs: slice) -> np.ndarray:
        win = Window(xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start)
        data = ds.read(list(self.band_indexes), window=win)
        if not self.masked:
            return data
        invalid = ds.read_masks(self.band_indexes[0], window=win) == 0
        data = data.astype(self.dtype, copy=False)
        data[:, invalid] = np.nan if self.georef.nodata is None else self.georef.nodata
        return data

    def _cache_blocks(self) -> tuple[int, int]:
        """The cache's blocks: the stored blocks, grouped into whole multiples of them of at least
        :data:`MIN_CACHE_BLOCK` pixels per axis (a strip of one row is no block to cache alone)."""
        return tuple(min(size, c * -(-MIN_CACHE_BLOCK // c))  # type: ignore[return-value]
                     for c, size in zip(self.chunks, self.shape[1:]))

    def _block_bytes(self, grid: tuple[int, int]) -> int:
        return grid[0] * grid[1] * self.shape[0] * np.dtype(self.dtype).itemsize


class GeoTIFFReader(Reader):
    name = "geotiff"
    description = "a GeoTIFF or COG, or a TIFF only GDAL reads (.tif, .tiff)"
    priority = 50

    def guess_can_open(self, url: str, storage_options: dict[str, Any]) -> bool:
        return probe.head(url, storage_options)[:4] in allow.TIFF_MAGIC

    def open(self, url: str, storage_options: dict[str, Any], *, bands: Sequence[int] | None = None,
             level: int | None = None) -> GeoTIFFSource:
        """Level 0 is full resolution, 1 the first overview. The file's bytes are fetched once
        for the whole open (those the format guess read included), however often GDAL reads them."""
        overview = None if not level else int(level) - 1
        store = _open_bytes(url, storage_options)
        with open_rasterio(url, storage_options, store=store) as ds:
            n_overviews = len(ds.overviews(1))
            full = (ds.transform, ds.width, ds.height)
            if overview is None:
                return _describe(ds, url, storage_options, bands, overview, ds.transform)
        if not 0 <= overview < n_overviews:
            raise UnsupportedFormatError(
                f"{url} has {n_overviews} overview(s), so levels 0 (full resolution) to {n_overviews}; "
                f"received level={level}." + (" Build overviews (gdaladdo, or a COG) to read a coarser "
                                              "level." if not n_overviews else ""))
        with open_rasterio(url, storage_options, overview, store=store) as ds:
            return _describe(ds, url, storage_options, bands, overview, _overview_transform(ds, *full))


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
    _warn_gcps_dropped(ds, url)
    _warn_alpha_left_out(ds, url, indexes)
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


def _warn_gcps_dropped(ds: Any, url: str) -> None:
    """Warn where the file is georeferenced by ground control points only (a Sentinel-1 GRD
    scene, a scanned map): geoseg reads and writes grids placed by a transform, so the image
    is read on its pixel grid and nothing it writes says where it lies."""
    points, _ = ds.gcps
    if points and ds.crs is None and ds.transform.is_identity:
        warnings.warn(
            f"{public_url(url)} is georeferenced by {len(points)} ground control points (GCPs) only, "
            "which geoseg does not carry: it reads the image on its pixel grid, and the mask and "
            "its exports have no georeference (pixel coordinates). To keep it, warp the image onto "
            "a grid first (gdalwarp in.tif warped.tif, or rasterio.warp.reproject) and segment that.",
            UserWarning, stacklevel=2)


def _warn_alpha_left_out(ds: Any, url: str, indexes: Sequence[int]) -> None:
    """Warn where the bands read leave out a band marked alpha: an alpha band is read as a band,
    never as a mask (GDAL marks the fourth band of any 4-band 8-bit GeoTIFF written with its
    defaults as alpha, and it often holds near infrared), so its transparent pixels are
    segmented as the data under them."""
    alpha = [i for i in range(1, ds.count + 1)
             if ds.colorinterp[i - 1] == rasterio.enums.ColorInterp.alpha and i not in indexes]
    if alpha:
        bands = " ".join(f"-b {i}" for i in indexes)
        warnings.warn(
            f"{public_url(url)}: band {alpha[0]} is marked alpha (transparency) and is not among the "
            "bands read, so its transparent pixels are segmented as data. To mark them no data, "
            f"make the alpha band an internal mask: gdal_translate {bands} -mask {alpha[0]} "
            "--config GDAL_TIFF_INTERNAL_MASK YES in.tif out.tif, and read out.tif.",
            UserWarning, stacklevel=2)


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
def open_rasterio(url: str, storage_options: dict[str, Any], overview_level: int | None = None,
                  *, store: FileBytes | None = None) -> Iterator[Any]:
    """Open with GDAL directly for local paths and GDAL URLs, through fsspec otherwise: a
    :class:`FileOpener` on ``store`` (by default a new one), whose read errors are raised on leaving.
    Only GDAL's GTiff driver may open it and no sidecar file is looked for (:mod:`~geoseg.io.allow`):
    a VRT named ``.tif`` is refused, never followed to the files or URLs it names."""
    kwargs = {"driver": allow.GDAL_DRIVERS[0]}
    if overview_level is not None:
        kwargs["overview_level"] = overview_level
    protocol = fsspec.utils.get_protocol(url)
    # no sidecar search (.aux.xml, .ovr, .msk ...): GDAL opens those with any driver, and on a
    # store the search costs a listing or a dozen requests each time a task opens the file
    with rasterio.Env(**allow.GDAL_OPTIONS):
        if _gdal_reads(url):
            path = fsspec.core.strip_protocol(url) if protocol == "file" else url
            with _open_allowed(url, storage_options, path, **kwargs) as ds:
                yield ds
            return
        if store is None:
            fs, path = fsspec.core.url_to_fs(url, **storage_options)
            store = FileBytes(fs, path)
        with (remote.guarded_reads(),
              _open_allowed(url, storage_options, store.path, opener=FileOpener(store), **kwargs) as ds):
            store.keep = None  # what the header held is kept; pixels go to the decoded-block cache
            yield ds


def _gdal_reads(url: str) -> bool:
    """Whether GDAL reads ``url`` itself: a local path or a GDAL ``/vsi`` path."""
    return fsspec.utils.get_protocol(url) in ("file", "local") or url.startswith("/vsi")


def _open_bytes(url: str, storage_options: dict[str, Any]) -> FileBytes | None:
    """Bytes of ``url`` for one open, starting with those the format guess read."""
    if _gdal_reads(url):
        return None
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    return FileBytes(fs, path, seed=probe.first_block(url))


def _task_bytes(url: str, storage_options: dict[str, Any], token: str | None) -> FileBytes | None:
    """Bytes of ``url`` for a task's open: those read while opening (its header) are kept in the
    process's block cache under the run's ``token`` and the file's version (ETag, or size and
    mtime: one request), so later tasks' opens of the same file do not fetch them, and a file
    replaced meanwhile is read whole again, never its new pixels through its old header. A
    store that reports no version keeps nothing."""
    if _gdal_reads(url):
        return None
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    info = fs.info(path)
    stamp = versions.file_stamp(info)
    keep = None if stamp is None else ("geotiff-bytes", token, url, stamp)
    return FileBytes(fs, path, keep=keep, size=info.get("size"))


class FileBytes:
    """One file's bytes, fetched in :data:`~geoseg.io.remote.READ_BLOCK` blocks each at most once
    (a run of missing blocks in one range request), for every file object GDAL opens on it.

    ``seed``: the file's first block (all of a shorter file), already read. ``keep``: a key under
    which blocks read are also kept in the process's block cache (and looked for there) until
    ``keep`` is set to ``None``. ``size``: the file's, when known. Used by one thread at a time."""

    def __init__(self, fs: Any, path: str, *, seed: bytes | None = None,
                 keep: Hashable | None = None, size: int | None = None) -> None:
        self.fs, self.path, self.keep = fs, path, keep
        self._blocks: dict[int, bytes] = {}
        self._size: int | None = None if size is None else int(size)
        if seed is not None:
            self._blocks[0] = seed[:remote.READ_BLOCK]
            if len(seed) < remote.READ_BLOCK:  # the whole file
                self._size = len(seed)

    @property
    def size(self) -> int:
        if self._size is None:
            self._size = int(self.fs.size(self.path))
        return self._size

    def read(self, start: int, stop: int) -> bytes:
        """Bytes ``start`` to ``stop`` (fewer at the end of the file)."""
        stop = min(stop, self.size)
        if start >= stop:
            return b""
        step = remote.READ_BLOCK
        first, last = start // step, (stop - 1) // step
        missing = [i for i in range(first, last + 1) if not self._held(i)]
        for _, run in itertools.groupby(enumerate(missing), lambda pair: pair[1] - pair[0]):
            ids = [i for _, i in run]
            begin, end = ids[0] * step, min((ids[-1] + 1) * step, self.size)
            data = bytes(self.fs.cat_file(self.path, start=begin, end=end))
            if len(data) > end - begin:  # a whole file sent for a range
                raise remote.whole_files(self.fs.unstrip_protocol(self.path))
            if len(data) < end - begin:  # shorter than it was when its size was taken
                raise CorruptInputError(
                    f"{public_url(self.fs.unstrip_protocol(self.path))}: {len(data)} bytes came "
                    f"back for bytes {begin} to {end}; the file is shorter than when it was opened, "
                    "so it changed (or was truncated) while it was read. Run again once it is "
                    "complete.")
            for i in ids:
                part = data[(i - ids[0]) * step:(i - ids[0] + 1) * step]
                self._blocks[i] = part
                self._keep(i, np.frombuffer(part, np.uint8))
        data = b"".join(self._blocks[i] for i in range(first, last + 1))
        return data[start - first * step:stop - first * step]

    def _held(self, i: int) -> bool:
        if i in self._blocks:
            return True
        kept = self._cached(i)
        if kept is not None:
            self._blocks[i] = kept.tobytes()
        return kept is not None

    def _cached(self, part: Hashable) -> np.ndarray | None:
        return None if self.keep is None else blockcache.process_cache().peek((self.keep, part))

    def _keep(self, part: Hashable, value: np.ndarray) -> None:
        if self.keep is not None:
            blockcache.process_cache().put((self.keep, part), value)


class _File:
    """A file object on a :class:`FileBytes`."""

    def __init__(self, store: FileBytes) -> None:
        self._store, self._pos = store, 0

    def read(self, size: int = -1) -> bytes:
        stop = self._store.size if size is None or size < 0 else self._pos + size
        data = self._store.read(self._pos, stop)
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = offset + (self._pos if whence == 1 else self._store.size if whence == 2 else 0)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FileOpener(remote.GuardedContainer):
    """rasterio's opener for one file: its reads go through a :class:`FileBytes`, and any other
    path rasterio or GDAL asks about is answered as absent without asking the store (rasterio
    checks a new opener with ``size("test")``: on S3 a signed request to a bucket named ``test``,
    somebody else's; sidecar files are never looked for, see :mod:`~geoseg.io.allow`)."""

    def __init__(self, store: FileBytes) -> None:
        super().__init__(store.fs)
        self.store = store

    def _ours(self, path: str) -> bool:
        return path.rstrip("/") == self.store.path.rstrip("/")

    def open(self, path: str, mode: str = "rb", **kwds: Any) -> Any:
        if not self._ours(path) or "r" not in mode or self._quietly(
                lambda _: self.store.size, path, default=None) is None:
            return super().open(path, mode, **kwds)  # which raises (and keeps) its own error
        return remote.GuardedFile(_File(self.store))

    def isfile(self, path: str) -> bool:
        return self._ours(path) and self._quietly(lambda _: self.store.size, path, default=None) is not None

    def isdir(self, path: str) -> bool:
        return False

    def ls(self, path: str) -> list[str]:
        return []

    def mtime(self, path: str) -> int:
        return super().mtime(path) if self._ours(path) else 0

    def size(self, path: str) -> int:
        if not self._ours(path):
            return 0
        return int(self._quietly(lambda _: self.store.size, path, default=0) or 0)


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
