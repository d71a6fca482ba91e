"""``geoseg convert``: any input geoseg reads, and gzipped NIfTI, to an analysis-ready chunked Zarr.

The result is a Zarr v3 group that ``geoseg.open_raster``, ``xarray.open_zarr`` and
rioxarray read with the input's georeference::

    OUT.zarr/
      raster        (band, y, x) or (band, z, y, x), the input's dtype, regular chunks;
                    attrs band_names (and long_name), nodata; for volumes voxel_affine,
                    spacing, units (and nifti_codes, a NIfTI input's qform and sform
                    codes); for images grid_mapping -> spatial_ref; the input's value
                    scaling, if any (below)
      band          1..n, like rioxarray's band coordinate
      spatial_ref, x, y   CRS (crs_wkt) and GeoTransform, pixel centres (images)
      attrs["geoseg"]     converted_from (URL without credentials), input_format, status

Window-readable inputs are copied chunk by chunk by dask tasks on this process's threads,
each reading its own window and writing whole Zarr chunks, so no task holds more than a
chunk. A gzipped NIfTI file cannot be read by window: it is decompressed once, front to
back, a slab of planes at a time (nibabel's array proxy), and never held whole. A gzip stream that breaks off,
fails its checksum or ends before the voxels its header declares is refused as a truncated or
corrupt input (:class:`~geoseg.errors.CorruptInputError`), and the part-written output removed.

Stored values are copied as they are (geoseg segments them). Where the input declares how they
turn into physical values (a GeoTIFF band's scale, offset and units; a Zarr array's CF
``scale_factor``, ``add_offset`` and ``units``), the output declares it too:

- the same for every band: CF's ``scale_factor``, ``add_offset`` (neither written when 1 and 0)
  and ``units``, which ``xarray.open_zarr`` applies (``value * scale_factor + add_offset``) as
  rioxarray's ``open_rasterio(mask_and_scale=True)`` does the GeoTIFF's; with them
  ``_FillValue`` (the nodata), so no-data pixels decode to NaN, not to a physical value;
- different per band: ``band_scales``, ``band_offsets`` and ``band_units``, one per band like
  ``band_names``, and a warning that xarray does not apply them (CF has one ``scale_factor``
  per variable): ``xarray.open_zarr`` reads the stored values, and band ``i`` is
  ``value * band_scales[i] + band_offsets[i]``. A conversion is not refused for them: geoseg
  segments the stored values, which are exact, and no value or scaling is lost. Units differing
  where scale and offset do not are kept in ``band_units`` beside CF's scaling, without a
  warning.

``geoseg.open_raster`` on the output reads the stored values, as on the input. A NIfTI input's
``scl_slope`` and ``scl_inter`` are applied as it is read (floats), so it declares no scaling.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import gzip
import math
import struct
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import fsspec
import nibabel as nib
import numpy as np
import zarr

from geoseg import budgets
from geoseg.core.text import brief
from geoseg.core.urls import public_url
from geoseg.errors import (
    CorruptInputError,
    GeosegError,
    OutputExistsError,
    UnsupportedFormatError,
)
from geoseg.io.allow import overlapping
from geoseg.io.files import probe_local_folder
from geoseg.io.georef import GeoRef
from geoseg.io.nifti import (
    GZIP_MAGIC,
    HEAD_BYTES,
    check_dimensions,
    data_shape,
    declared,
    header_georef,
    is_nifti,
    is_scaled,
    parse_header,
    read_dtype,
    voxel_dtype,
)
from geoseg.io.output import SPATIAL_DIMS, output_exists, remove_output, write_georef
from geoseg.io.readers import open_source, source_to_dataarray
from geoseg.io.readers._geotiff import open_rasterio
from geoseg.io.readers.base import band_indexes
from geoseg.io.remote import check_writable, storage_errors, zarr_options
from geoseg.io.settled import compute_settled
from geoseg.io.sources import BAND, GeoTIFFSource, RasterSource, ZarrSource
from geoseg.tiling import INPUT_CHUNK, Layout
from geoseg.tiling.plan import ceil_div

ARRAY = "raster"


@dataclass(frozen=True)
class Converted:
    """What ``convert`` wrote."""

    url: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: str
    input_format: str


def convert(
    input_url: str,
    out_url: str,
    *,
    storage_options: dict[str, Any] | None = None,
    out_options: dict[str, Any] | None = None,
    chunks: int | Sequence[int] | None = None,
    level: int | None = None,
    bands: Sequence[int] | None = None,
    variable: str | None = None,
    overwrite: bool = False,
) -> Converted:
    """Copy the raster at ``input_url`` into a chunked Zarr v3 group at ``out_url``.

    Parameters
    ----------
    input_url
        Anything :func:`geoseg.open_raster` reads, or a gzipped NIfTI file (``.nii.gz``).
    out_url
        Where to write; refused if something exists there unless ``overwrite``.
    storage_options, out_options
        fsspec options for the input and the output; never written anywhere.
    chunks
        Spatial chunk size: one int for every axis or one per axis (default 512 for
        images, 128 for volumes, capped by the shape). All bands share a chunk.
    level, bands, variable
        As in :func:`geoseg.open_raster`: resolution level, 1-based bands, Zarr array.
    """
    reader = _open_input(
        input_url, dict(storage_options or {}), level=level, bands=bands, variable=variable
    )
    _refuse_output(input_url, storage_options, out_url, out_options, overwrite)
    sizes = Layout.create(reader.shape[1:], chunks, default=INPUT_CHUNK).chunks
    n_chunks = math.prod(ceil_div(n, c) for n, c in zip(reader.shape[1:], sizes))
    budgets.check_tasks(n_chunks, f"converting {public_url(input_url)} into chunks of "
                        f"{' x '.join(map(str, sizes))}", "Give larger --chunks (each chunk is a "
                        "file or object, written and later read one by one), or raise the limit.")
    scaling = _scaling_attrs(reader.scaling(), reader.georef.nodata, reader.dtype, input_url)
    if overwrite:
        remove_output(out_url, out_options)
    with _removed_on_failure(out_url, out_options):
        with _writing(out_url, out_options):
            group = _create_group(out_url, out_options, reader, sizes, input_url, scaling)
        with _writing(out_url, out_options, WRITE_ERRNOS):  # not the input's own read errors
            reader.copy_into(group[ARRAY], sizes)
        group.attrs["geoseg"] = {**group.attrs["geoseg"], "status": "complete"}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(group.store)
    return Converted(out_url, reader.shape, tuple(group[ARRAY].chunks), reader.dtype, reader.format)


# what writing the output meets (full, over quota, read-only, not permitted), not reading
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES})


@contextlib.contextmanager
def _writing(out_url: str, out_options: dict[str, Any] | None,
             errnos: frozenset[int] | None = None) -> Iterator[None]:
    """Storage errors inside (those of ``errnos`` only, when given) as geoseg errors about
    writing ``out_url``."""
    try:
        yield
    except OSError as exc:
        if errnos is not None and exc.errno not in errnos:
            raise
        with storage_errors(out_url, out_options, "Writing"):
            raise


@contextlib.contextmanager
def _removed_on_failure(url: str, options: dict[str, Any] | None) -> Iterator[None]:
    """Remove the output this conversion started if it fails: a part-written copy reads as
    the fill value where chunks are missing, and a rerun would be refused for it. Nothing was
    there when it started (refused, or removed with ``--overwrite``), so whatever is there now
    is this conversion's, even a group whose attributes were never written (a full disk)."""
    fs, path = fsspec.core.url_to_fs(url, **(options or {}))
    path = path.rstrip("/")
    started_empty = not fs.exists(path)
    try:
        yield
    except BaseException as exc:
        removed = False
        with contextlib.suppress(Exception):
            if started_empty and fs.exists(path):
                fs.rm(path, recursive=True)
            removed = not fs.exists(path)
        if isinstance(exc, GeosegError):
            left = ("the part-written output {} was removed" if removed else "the part-written "
                    "output {} could not be removed: delete it before a rerun")
            raise type(exc)(f"{exc} Nothing was converted: "
                            f"{left.format(public_url(url))}.") from None
        raise


@dataclass(frozen=True)
class WindowedInput:
    """An input read window by window: dask tasks copy it chunk by chunk."""

    source: RasterSource

    @property
    def shape(self) -> tuple[int, ...]:
        return self.source.shape

    @property
    def dtype(self) -> str:
        return self.source.dtype

    @property
    def georef(self) -> GeoRef:
        return self.source.georef

    @property
    def band_names(self) -> tuple[str, ...]:
        return self.source.band_names

    @property
    def format(self) -> str:
        return self.source.format

    @property
    def band_chunk(self) -> int:
        return self.source.shape[0]

    def scaling(self) -> Scaling | None:
        """The value scaling the input declares for the bands read."""
        if isinstance(self.source, GeoTIFFSource):
            return _geotiff_scaling(self.source)
        if isinstance(self.source, ZarrSource):
            return _zarr_scaling(self.source)
        return None

    def copy_into(self, target: zarr.Array, sizes: tuple[int, ...]) -> None:
        data = source_to_dataarray(self.source, sizes).data
        # settled: a failed copy is removed only once no chunk write is under way
        compute_settled(da.store(data, target, lock=False, compute=False))


@dataclass(frozen=True)
class GzipNiftiInput:
    """A gzipped NIfTI file, decompressed front to back a slab of ``k`` planes at a time."""

    url: str
    shape: tuple[int, ...]  # (band, z, y, x) after band selection
    dtype: str
    georef: GeoRef
    band_names: tuple[str, ...]
    times: tuple[int, ...]  # 0-based t index of each band
    four_d: bool
    storage_options: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    format: str = "nifti.gz"
    band_chunk: int = 1  # bands are read one after the other

    def scaling(self) -> Scaling | None:
        """None: nibabel applies scl_slope and scl_inter as it reads (:meth:`copy_into`)."""
        return None

    def copy_into(self, target: zarr.Array, sizes: tuple[int, ...]) -> None:
        """Slabs of ``sizes[0]`` planes (fewer where that many pass the window budget: see
        :meth:`slab_depth`), band by band in file order (forward reads only)."""
        n_k = self.shape[1]
        with _gzip_image(self.url, self.storage_options) as image:
            scaled = is_scaled(image.header)  # nibabel scales to float64 (or wider)
            depth = self.slab_depth(sizes[0], np.float64 if scaled else image.dataobj.dtype)
            proxy = image.dataobj
            for t, band in sorted((t, b) for b, t in enumerate(self.times)):
                for k in range(0, n_k, depth):
                    ks = slice(k, min(k + depth, n_k))
                    slab = proxy[:, :, ks, t] if self.four_d else proxy[:, :, ks]
                    target[band, ks] = np.transpose(np.asarray(slab), (2, 1, 0)).astype(self.dtype)

    def slab_depth(self, depth: int, read_as: np.dtype) -> int:
        """How many planes to decompress at once: ``depth`` (the output chunk's), fewer when
        that many would hold more than ``GEOSEG_MAX_WINDOW_BYTES`` as read (scaled voxels come
        as float64) and copied into the output's dtype; refused when one plane would. What a
        header declares, not the file's size, decides a plane's bytes, so this bounds the
        memory a hostile header can ask for."""
        plane = math.prod(self.shape[2:]) * (np.dtype(read_as).itemsize + np.dtype(self.dtype).itemsize)
        budgets.check(plane, budgets.MAX_WINDOW_BYTES,
                      f"input {_shown(self.url)} has planes of {self.shape[3]} x {self.shape[2]} "
                      f"voxels, {budgets.size(plane)} ({budgets.figure(plane)} bytes) each as "
                      f"read and converted to {self.dtype}",
                      "A gzipped NIfTI file is decompressed a plane at a time at least; raise the "
                      "limit if this machine has the memory.")
        return max(1, min(depth, budgets.limit(budgets.MAX_WINDOW_BYTES) // plane))


@contextlib.contextmanager
def _gzip_image(url: str, storage_options: dict[str, Any]) -> Iterator[nib.Nifti1Image]:
    """The nibabel image of a gzipped NIfTI file, its data left in the file behind a proxy.
    What breaks while its voxels are decompressed (a truncated or corrupt gzip stream, fewer
    voxels than the header declares) raises :class:`~geoseg.errors.CorruptInputError`."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    with fs.open(path, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as stream:
        header = _gzip_header(stream, url)
        klass = nib.Nifti2Image if header.sizeof_hdr == 540 else nib.Nifti1Image
        stream.seek(0)
        holder = nib.FileHolder(fileobj=stream)
        try:
            yield klass.from_file_map({"image": holder, "header": holder}, keep_file_open=True)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise _broken_gzip(url, exc, fs.size(path),
                               f"Uncompressed, {declared(header, _shape(header))}.") from None
        except (ValueError, OSError) as exc:  # nibabel's words for a short read, by version
            if "not enough data" not in str(exc) and "could the file be damaged" not in str(exc):
                raise
            raise _short_gzip(url, stream.tell(), header) from None


def _shape(header: nib.Nifti1Header) -> tuple[int, ...]:
    return tuple(int(n) for n in header.get_data_shape())


def _broken_gzip(url: str, exc: BaseException, size: int | None, detail: str) -> CorruptInputError:
    """The error for a gzip stream of ``size`` compressed bytes that cannot be decompressed;
    ``detail``, a sentence, says what the NIfTI header declares (or where the stream broke)."""
    if isinstance(exc, EOFError):
        fault = "truncated: its gzip stream breaks off before its end marker"
    elif "CRC check failed" in str(exc):
        fault = "corrupt: its gzip checksum (CRC) does not match the decompressed bytes"
    else:
        fault = f"corrupt: its gzip data does not decompress ({type(exc).__name__}: {exc})"
    held = "" if size is None else f" The file holds {int(size):,} compressed bytes."
    return CorruptInputError(
        f"NIfTI file {_shown(url)} is {fault}.{held} {detail} Re-download or re-export the file, "
        "then convert it again.")


def _short_gzip(url: str, size: int, header: nib.Nifti1Header) -> CorruptInputError:
    """The error for a gzipped NIfTI file that decompresses to ``size`` bytes, fewer than its
    header declares."""
    return CorruptInputError(
        f"NIfTI file {_shown(url)} is truncated or corrupt: it decompresses to {size:,} bytes, "
        f"but {declared(header, _shape(header))}. Re-download or re-export the file, then "
        "convert it again.")


def _gzip_header(stream: gzip.GzipFile, url: str) -> nib.Nifti1Header:
    """The header as stored (nibabel's image moves the scaling out of its own header copy),
    with its extensions up to the voxel offset, at most ``MAX_HEADER_BYTES`` decompressed
    (:func:`~geoseg.io.nifti.parse_header`): nibabel reads the same extensions again when it
    opens the image, and never more than this check did."""
    head = stream.read(HEAD_BYTES)
    try:
        return parse_header(head, stream.read, url)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise _broken_gzip(url, exc, None, "It breaks within the header extensions, before "
                           "the voxels.") from None


def _open_input(
    url: str,
    so: dict[str, Any],
    *,
    level: int | None,
    bands: Sequence[int] | None,
    variable: str | None,
) -> WindowedInput | GzipNiftiInput:
    if _is_gzip_nifti(url, so):
        if level or variable:
            raise UnsupportedFormatError(
                f"{_shown(url)} is a gzipped NIfTI file: it has one resolution "
                "and no variables; drop level and variable."
            )
        return _gzip_nifti_input(url, so, bands)
    return WindowedInput(open_source(url, so, variable=variable, bands=bands, level=level))


def _is_gzip_nifti(url: str, so: dict[str, Any]) -> bool:
    """Whether ``url`` is a gzip file holding a NIfTI volume. A gzip file whose stream breaks
    before 540 bytes (a NIfTI-2 header; what :func:`_gzip_header` reads) decompress, or one
    named ``.nii.gz`` that holds no NIfTI header, is refused as truncated or corrupt."""
    fs, path = fsspec.core.url_to_fs(url, **so)
    if not fs.isfile(path):
        return False
    with fs.open(path, "rb") as f:
        if f.read(2) != GZIP_MAGIC:
            return False
        f.seek(0)
        try:
            with gzip.GzipFile(fileobj=f, mode="rb") as stream:
                head = stream.read(540)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise _broken_gzip(url, exc, fs.size(path), "It breaks within the first 540 "
                               "decompressed bytes, where the NIfTI header is.") from None
    if is_nifti(head):
        return True
    if url.rstrip("/").endswith(".nii.gz"):
        raise CorruptInputError(
            f"NIfTI file {_shown(url)} is truncated or corrupt: it decompresses to "
            f"{'only ' + str(len(head)) + ' bytes' if len(head) < 348 else 'data'} without a "
            f"NIfTI-1/2 header (it starts with {head[:8]!r}; expected magic 'n+1' or 'n+2'). "
            "Re-download or re-export the file, then convert it again.")
    return False


def _gzip_nifti_input(url: str, so: dict[str, Any], bands: Sequence[int] | None) -> GzipNiftiInput:
    fs, path = fsspec.core.url_to_fs(url, **so)
    with fs.open(path, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as stream:
        header = _gzip_header(stream, url)
    shape = data_shape(header, url)
    check_dimensions(shape, url)
    n_i, n_j, n_k = shape[:3]
    n_t = shape[3] if len(shape) == 4 else 1
    budgets.check_bands(n_t, f"input {_shown(url)}", "volumes (header dim[4])")
    names = tuple(f"volume_{t + 1}" for t in range(n_t)) if n_t > 1 else ("intensity",)
    times = tuple(band_indexes(bands, n_t, url))
    stored = voxel_dtype(header, url)  # refuses RGB voxels
    dtype = read_dtype(header, stored)
    return GzipNiftiInput(
        url=url,
        shape=(len(times), n_k, n_j, n_i),
        dtype=dtype,
        georef=header_georef(header, url),
        band_names=tuple(names[t] for t in times),
        times=times,
        four_d=len(shape) == 4,
        storage_options=so,
    )


def _refuse_output(
    input_url: str,
    in_options: dict[str, Any] | None,
    out_url: str,
    out_options: dict[str, Any] | None,
    overwrite: bool,
) -> None:
    """Refuse writing over the input, outside the allowed places, or over anything without
    ``overwrite``."""
    check_writable(out_url)  # not http(s); no '..', allowed schemes and buckets (geoseg.io.allow)
    if overlapping(input_url, in_options, out_url, out_options):
        raise OutputExistsError(
            f"The output {_shown(out_url)} is the input {_shown(input_url)} itself, or one lies "
            "inside the other; nothing was written. Choose an output URL apart from the input."
        )
    if not overwrite and output_exists(out_url, out_options):
        raise OutputExistsError(
            f"Output {_shown(out_url)} already exists; nothing was written. Choose "
            "another output URL, or pass --overwrite (overwrite=True) to replace it."
        )
    probe_local_folder(out_url)  # a folder that takes no new files (read-only, /proc) is refused


def _create_group(
    url: str,
    options: dict[str, Any] | None,
    reader: WindowedInput | GzipNiftiInput,
    sizes: tuple[int, ...],
    input_url: str,
    scaling: dict[str, Any],
) -> zarr.Group:
    """The output group with its empty raster (with the ``scaling`` attributes), band and
    georeference arrays."""
    group = zarr.open_group(url, mode="w-", zarr_format=3, **zarr_options(url, options))
    spatial = reader.shape[1:]
    nodata = reader.georef.nodata
    group.create_array(
        ARRAY,
        shape=reader.shape,
        chunks=(reader.band_chunk, *sizes),
        dtype=reader.dtype,
        fill_value=_fill_value(nodata, reader.dtype),
        dimension_names=["band", *SPATIAL_DIMS[len(spatial)]],
        attributes={**_raster_attrs(reader.georef, reader.band_names, len(spatial)), **scaling},
    )
    band = group.create_array(
        "band", shape=(reader.shape[0],), dtype="int64", dimension_names=["band"]
    )
    band[:] = np.arange(1, reader.shape[0] + 1)
    if len(spatial) == 2:
        write_georef(group, reader.georef, spatial)
    group.attrs["geoseg"] = {
        "converted_from": _shown(input_url),
        "input_format": reader.format,
        "status": "converting",
    }
    return group


def _raster_attrs(georef: GeoRef, band_names: Sequence[str], ndim: int) -> dict[str, Any]:
    attrs: dict[str, Any] = {"band_names": list(band_names), "long_name": list(band_names)}
    if georef.nodata is not None:
        attrs["nodata"] = georef.nodata
    if ndim == 3:
        attrs.update(georef.volume_attrs())
    elif georef.crs_wkt or georef.transform:
        attrs.update(grid_mapping="spatial_ref", coordinates="spatial_ref")
    return attrs


@dataclass(frozen=True)
class Scaling:
    """Per band read: stored value * scale + offset is the physical value, in units ('': none)."""

    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    units: tuple[str, ...]

    @property
    def uniform(self) -> bool:
        """Whether every band has the same scale and offset."""
        return len(set(self.scales)) == 1 and len(set(self.offsets)) == 1


def _geotiff_scaling(source: GeoTIFFSource) -> Scaling:
    """The GeoTIFF bands' scales, offsets and units, from the full-resolution dataset (they
    belong to the band, and its overviews are the same values, resampled)."""
    with open_rasterio(source.url, source.storage_options) as ds:
        picked = [i - 1 for i in source.band_indexes]
        scales, offsets, units = ([values[i] for i in picked]
                                  for values in (ds.scales, ds.offsets, ds.units))
    where = f"GeoTIFF {_shown(source.url)}"
    return Scaling(_numbers(scales, f"{where} band scale"),
                   _numbers(offsets, f"{where} band offset"), tuple(u or "" for u in units))


def _zarr_scaling(source: ZarrSource) -> Scaling:
    """A Zarr array's per-band ``band_scales``, ``band_offsets`` and ``band_units`` (what a
    conversion writes), else its CF ``scale_factor``, ``add_offset`` and ``units`` for every
    band; a volume's ``units`` are its voxel spacing's, not its values'."""
    array = source.open_array()
    attrs = dict(array.attrs)
    n = array.shape[source.roles.index(BAND)] if BAND in source.roles else 1
    image_units = attrs.get("units") if len(source.shape) == 3 else ""
    where = f"Zarr array {_shown(source.url)}"
    scales, offsets, units = (_band_values(attrs, key, n, default, where) for key, default in (
        ("band_scales", attrs.get("scale_factor", 1.0)), ("band_offsets", attrs.get("add_offset", 0.0)),
        ("band_units", image_units)))
    picked = source.band_indexes if source.band_indexes is not None else range(n)
    return Scaling(_numbers([scales[i] for i in picked], f"{where} scale_factor (or band_scales)"),
                   _numbers([offsets[i] for i in picked], f"{where} add_offset (or band_offsets)"),
                   tuple(units[i] if isinstance(units[i], str) else "" for i in picked))


def _band_values(attrs: dict[str, Any], key: str, n: int, default: Any, where: str) -> list[Any]:
    """The attribute ``key``, a list of one value per band of ``n``; ``default`` for every band
    where it is absent."""
    values = attrs.get(key)
    if values is None:
        return [default] * n
    if not isinstance(values, list) or len(values) != n:
        raise CorruptInputError(
            f"{where} has the attribute {key}={brief(values, 60)}; expected a list of {n} values, one per "
            "band. Fix or remove it, then convert again.")
    return values


def _numbers(values: Sequence[Any], what: str) -> tuple[float, ...]:
    """``values`` as floats; a value that is no finite number is refused."""
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, float))
           or not math.isfinite(v)]
    if bad:
        raise CorruptInputError(
            f"{what} is {bad[0]!r}; expected a finite number (stored value * scale + offset is "
            "the physical value). Fix or remove it, then convert again.")
    return tuple(float(v) for v in values)


def _scaling_attrs(scaling: Scaling | None, nodata: float | None, dtype: str,
                   input_url: str) -> dict[str, Any]:
    """The output array's attributes for ``scaling``: CF's when every band shares it, else one
    value per band, with a warning (see the module's docstring)."""
    if scaling is None:
        return {}
    attrs: dict[str, Any] = {}
    if len(set(scaling.units)) == 1 and scaling.units[0]:
        attrs["units"] = scaling.units[0]
    elif any(scaling.units):
        attrs["band_units"] = list(scaling.units)
    if not scaling.uniform:
        warnings.warn(
            f"{_shown(input_url)}: its bands have different scales {list(scaling.scales)} or "
            f"offsets {list(scaling.offsets)}. They are kept per band in the output's band_scales "
            "and band_offsets attributes, which xarray does not apply (CF has one scale_factor "
            "per variable): xarray.open_zarr reads the stored values, and band i's physical "
            "value is value * band_scales[i] + band_offsets[i].", UserWarning, stacklevel=3)
        return {**attrs, "band_scales": list(scaling.scales), "band_offsets": list(scaling.offsets)}
    scale, offset = scaling.scales[0], scaling.offsets[0]
    cf = {k: v for k, v, identity in (("scale_factor", scale, 1.0), ("add_offset", offset, 0.0))
          if v != identity}
    fill = _cf_fill_value(nodata, dtype)
    if cf and fill is not None:
        cf["_FillValue"] = fill
    return {**attrs, **cf}


def _cf_fill_value(nodata: float | None, dtype: str) -> Any:
    """``nodata`` as xarray writes a Zarr v3 array's ``_FillValue`` attribute: for floats the
    base64 of a little-endian double (NaN has no JSON number), else an integer; ``None`` where
    there is no nodata, or it is no whole number for an integer dtype."""
    if nodata is None:
        return None
    if np.dtype(dtype).kind == "f":
        return base64.standard_b64encode(struct.pack("<d", float(nodata))).decode()
    return int(nodata) if float(nodata).is_integer() else None


def _fill_value(nodata: float | None, dtype: str) -> Any:
    """The no-data value where the dtype holds it, else zero."""
    if nodata is None:
        return 0
    kind = np.dtype(dtype).kind
    if kind == "f" or (
        float(nodata).is_integer() and np.can_cast(np.min_scalar_type(int(nodata)), dtype)
    ):
        return np.dtype(dtype).type(nodata)
    return 0


def _shown(url: str) -> str:

    return public_url(url)
