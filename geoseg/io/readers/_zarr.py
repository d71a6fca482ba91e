"""Zarr v2/v3: an array, or a group holding one, whose axes are named or read in a default order.

Named dimensions (Zarr v3 ``dimension_names``, xarray's ``_ARRAY_DIMENSIONS``, or GeoZarr's
``spatial:dimensions``) decide which axis is which; unnamed arrays are read as ``(y, x)``,
``(band, y, x)`` or ``(band, z, y, x)``. The georeference comes from a CF ``spatial_ref``
variable, GeoZarr attributes (:mod:`geoseg.io.geozarr`), plain ``crs``/``transform``
attributes, or for volumes a ``voxel_affine`` or ``spacing``.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import zarr

from geoseg.core.nodata import NODATA_ATTRS, exact_number
from geoseg.core.segmenter import bands_last
from geoseg.core.text import brief
from geoseg.core.urls import public_url
from geoseg.errors import CorruptInputError, RasterNotFoundError, UnsupportedFormatError
from geoseg.io import missing
from geoseg.io.blockcache import read_blocks
from geoseg.io.chunkguard import guarded
from geoseg.io.georef import GeoRef, coords_transform, uneven
from geoseg.io.geozarr import affine_attribute, geozarr_dimension_names, geozarr_georef
from geoseg.io.metaguard import open_store
from geoseg.io.readers import probe
from geoseg.io.readers.base import (
    BAND,
    DROP,
    SPACE,
    RasterSource,
    Reader,
    band_indexes,
    refuse_level,
)

OPEN_KEPT = 8  # arrays a process keeps open for the runs reading them (ZarrSource.open_array)
_OPEN: dict[tuple[str, str, str], zarr.Array] = {}
_OPEN_LOCK = threading.Lock()
MARKERS = ("zarr.json", ".zarray", ".zgroup")  # a store's metadata documents (v3, v2 array, v2 group)
_COORD_NAMES = {"x", "y", "band", "spatial_ref", "lat", "lon", "latitude", "longitude", "time"}
_SPATIAL_NAMES = ("z", "y", "x")
_BAND_NAMES = ("band", "bands", "c", "channel", "channels")
_TIME_NAMES = ("t", "time")
# attributes declaring the nodata of the stored values, in rioxarray's order (``rio.nodata``):
# CF's _FillValue (xarray writes it as an attribute of Zarr v3 arrays, and as the fill_value of
# Zarr v2 arrays: see xarray_v2_fill_value), missing_value, then the fill_value and nodata
# attributes. Zarr's own fill_value metadata otherwise declares no nodata: it is what zarr reads
# where a chunk is absent, 0 unless the writer chose another.


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
        """The array, its chunks read through the decode guard. A source named for a run (a
        job's or a ``segment()`` graph's tasks: :meth:`for_run`) is opened once per process for
        that run: opened per task, its metadata was read again by every task (``zarr.json``,
        with ``.zarray`` and ``.zattrs`` probed beside it: three requests each on an object
        store)."""
        if self.run is None:
            return self._opened()
        key = (self.url, self.array_path, self.run)
        with _OPEN_LOCK:
            array = _OPEN.pop(key, None)
        if array is None:
            array = self._opened()
        with _OPEN_LOCK:
            _OPEN[key] = array  # the most recently used last
            while len(_OPEN) > OPEN_KEPT:
                _OPEN.pop(next(iter(_OPEN)))
        return array

    def _opened(self) -> zarr.Array:
        store = open_store(self.url, self.storage_options)
        return guarded(zarr.open_array(store, mode="r", path=self.array_path), self.url)

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


class ZarrReader(Reader):
    name = "zarr"
    description = "a Zarr v2/v3 array, or a group holding one"
    priority = 10

    def guess_can_open(self, url: str, storage_options: dict[str, Any]) -> bool:
        """By its metadata documents: a web server may have no page for the store's folder."""
        return any(probe.has_key(url, storage_options, key) for key in MARKERS)

    def open(self, url: str, storage_options: dict[str, Any], *, variable: str | None = None,
             bands: Sequence[int] | None = None, level: int | None = None) -> RasterSource:
        store = open_store(url, storage_options)
        node = zarr.open(store, mode="r")
        group = node if isinstance(node, zarr.Group) else None
        refuse_level(url, level, "a plain Zarr array")
        if group is not None:
            _refuse_unfinished_conversion(group, url)
        array_path = _pick_variable(node, url, variable) if group is not None else ""
        arr = own_metadata(store, array_path) if group is not None else node
        roles = axis_roles(arr.shape, geozarr_dimension_names(arr, group, _dimension_names(arr)), url)
        return zarr_array_source(url, storage_options, arr, array_path, roles, bands,
                                 _zarr_georef(arr, group, roles, url))


def _refuse_unfinished_conversion(group: zarr.Group, url: str) -> None:
    """Refuse a group that ``geoseg convert`` created and has not marked complete: a conversion
    killed where it could not clean up (SIGKILL, out of memory, a machine stopped), or still
    running. The chunks it had not written read as the fill value, so a job on it wrote a
    complete-looking mask of mostly no data, silently."""
    mark = group.attrs.get("geoseg")
    if not isinstance(mark, dict) or "converted_from" not in mark or \
            mark.get("status") != "converting":
        return
    raise CorruptInputError(
        f"{public_url(url)}: geoseg convert has not finished writing it (from "
        f"{brief(str(mark['converted_from']), 200)}; its status is 'converting'): the conversion "
        "was stopped where it could not clean up (killed, out of memory, the machine stopped), "
        "or is still running, and the chunks it has not written would read as no data. Wait for "
        "a running conversion to end; otherwise run geoseg convert again with --overwrite.")


def own_metadata(store: Any, path: str) -> zarr.Array:
    """The array at ``path`` of a group's ``store`` as its own metadata describes it, which its
    chunks are read with (:meth:`ZarrSource.read`), not as the group's consolidated copy says:
    a stale copy (256 x 256 where the array is 128 x 128) failed every read."""
    return zarr.open_array(store, mode="r", path=path)


def zarr_array_source(url: str, so: dict[str, Any], arr: zarr.Array, array_path: str,
                      roles: tuple[str, ...], bands: Sequence[int] | None, georef: GeoRef,
                      band_names: Sequence[str] | None = None) -> ZarrSource:
    """A :class:`ZarrSource` for ``arr`` whose axes play ``roles``."""
    _check_chunks(arr, url, array_path)
    spatial = [i for i, r in enumerate(roles) if r == SPACE]
    band_axis = roles.index(BAND) if BAND in roles else None
    n_bands = 1 if band_axis is None else arr.shape[band_axis]
    indexes = band_indexes(bands, n_bands, url)
    names = list(band_names) if band_names is not None else _zarr_band_names(arr, n_bands)
    return ZarrSource(
        url=url,
        shape=(len(indexes), *(arr.shape[i] for i in spatial)),
        dtype=str(arr.dtype),
        chunks=tuple(arr.chunks[i] for i in spatial),
        georef=georef,
        band_names=tuple(names[i] for i in indexes),
        storage_options=so,
        stored_chunk=tuple(arr.chunks),  # a shard's inner chunk when sharded: what a read decodes
        array_path=array_path,
        band_indexes=None if bands is None or band_axis is None else tuple(indexes),
        roles=roles,
    )


def _check_chunks(arr: zarr.Array, url: str, array_path: str) -> None:
    """Refuse chunk sizes < 1: zarr opens such metadata, and every read or plan of it then
    divides by zero."""
    if all(int(c) >= 1 for c in arr.chunks):
        return
    where = f"{array_path}/" if array_path else ""
    field = (f"chunk_grid.configuration.chunk_shape in {where}zarr.json"
             if arr.metadata.zarr_format == 3 else f"chunks in {where}.zarray")
    raise CorruptInputError(
        f"Zarr array {public_url(url)} declares chunks {tuple(arr.chunks)} ({field}); every chunk "
        "size must be >= 1. Its metadata is corrupt: re-write the array, or fix that field.")


def _pick_variable(group: zarr.Group, url: str, variable: str | None) -> str:
    arrays = {name: a for name, a in group.arrays()}
    if variable is not None:
        if variable not in arrays:
            raise RasterNotFoundError(
                f"Zarr group {url} has no array {variable!r}; it has: {', '.join(sorted(arrays)) or 'none'}."
            )
        return variable
    candidates = sorted(n for n, a in arrays.items() if a.ndim in (2, 3, 4) and n not in _COORD_NAMES)
    if not candidates:
        held = (f"no raster-like array (2 to 4 dimensions, not a coordinate), only "
                f"{', '.join(f'{n} ({a.ndim}-d)' for n, a in sorted(arrays.items()))}"
                if arrays else "no arrays (it may still be being written, or be the wrong path)")
        raise UnsupportedFormatError(f"Zarr group {url} holds {held}; give the URL of the Zarr "
                                     "array, or of the group, that holds the raster.")
    if len(candidates) != 1:
        raise UnsupportedFormatError(
            f"Zarr group {url} holds {len(candidates)} raster-like arrays ({', '.join(candidates) or 'none'}); "
            "name the one to read: input.variable in a job spec, --variable on the command line "
            "(--pred-variable or --ref-variable for geoseg eval), variable= in Python."
        )
    return candidates[0]


def _dimension_names(arr: zarr.Array) -> tuple[str | None, ...] | None:
    if arr.metadata.zarr_format == 3:
        return arr.metadata.dimension_names
    dims = arr.attrs.get("_ARRAY_DIMENSIONS")
    return tuple(dims) if dims else None


def axis_roles(shape: Sequence[int], dims: Sequence[str | None] | None, url: str) -> tuple[str, ...]:
    """The role of each axis of an array: named dims decide; unnamed ones are read as
    ``(y, x)``, ``(band, y, x)`` or ``(band, z, y, x)``."""
    if dims and all(dims) and {"y", "x"} <= set(dims):
        _refuse_repeated(dims, url)
        return _named_roles(shape, [str(d) for d in dims], url)
    unnamed = {2: (SPACE, SPACE), 3: (BAND, SPACE, SPACE), 4: (BAND, SPACE, SPACE, SPACE)}
    if len(shape) not in unnamed:
        named = (f"dimension names {tuple(dims)}, which name no y and x axes" if dims and any(dims)
                 else "no dimension names")
        raise UnsupportedFormatError(
            f"Array at {url} has {len(shape)} dimension(s) and {named}; expected 2 (y, x), "
            "3 (band, y, x) or 4 (band, z, y, x). Name its dimensions (Zarr v3 dimension_names or "
            "xarray's _ARRAY_DIMENSIONS) so geoseg knows which axis is which."
        )
    if bands_last(shape):
        raise UnsupportedFormatError(
            f"Array at {url} has shape {tuple(shape)} and no dimension names, so it would read as "
            f"(band, y, x): {shape[0]} bands of {shape[1]} x {shape[2]} pixels. Its last axis looks "
            "like its bands: name its dimensions [\"y\", \"x\", \"band\"] (Zarr v3 dimension_names "
            "or xarray's _ARRAY_DIMENSIONS), or write it band first."
        )
    return unnamed[len(shape)]


def _refuse_repeated(dims: Sequence[str | None], url: str) -> None:
    """Refuse dimension names given twice (``["y", "y", "x"]``): read by name, the array would
    pass for a volume, or an axis for another."""
    repeated = sorted({str(d) for d in dims if list(dims).count(d) > 1})
    if repeated:
        raise UnsupportedFormatError(
            f"Array at {url} has dimension names {tuple(dims)}: {', '.join(map(repr, repeated))} "
            "named more than once; expected each dimension named once (e.g. (\"band\", \"y\", "
            "\"x\")). Fix its dimension_names (Zarr v3) or _ARRAY_DIMENSIONS (xarray).")


def _named_roles(shape: Sequence[int], dims: list[str], url: str) -> tuple[str, ...]:
    roles = []
    for name, size in zip(dims, shape):
        if name in _SPATIAL_NAMES:
            roles.append(SPACE)
        elif size == 1 and (name in _TIME_NAMES or BAND in roles or name not in _BAND_NAMES):
            roles.append(DROP)
        elif BAND not in roles and name not in _TIME_NAMES:  # a time axis is never the bands
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


def _zarr_band_names(arr: zarr.Array, n_bands: int) -> list[str]:
    names = arr.attrs.get("band_names")
    if isinstance(names, list) and len(names) == n_bands:
        return [str(n) for n in names]
    return [f"band_{i + 1}" for i in range(n_bands)]


def declared_nodata(arr: zarr.Array, url: str) -> float | None:
    """The nodata an array's attributes declare (:data:`NODATA_ATTRS`, the first one set), or
    ``None``. A float one may be base64-encoded as xarray writes it (8 bytes, little-endian).
    A Zarr v2 array xarray wrote keeps CF's ``_FillValue`` as its ``fill_value`` in ``.zarray``
    (:func:`xarray_v2_fill_value`), where a v3 one has the attribute: either is read."""
    attrs = dict(arr.attrs)
    if attrs.get("_FillValue") is None:
        attrs["_FillValue"] = xarray_v2_fill_value(arr)
    key = next((k for k in NODATA_ATTRS if attrs.get(k) is not None), None)
    if key is None:
        return None
    value = attrs[key]
    number = _attr_number(value)
    if number is None:
        raise CorruptInputError(
            f"Zarr array {public_url(url)} has the attribute {key}={value!r}; expected a number "
            "(its nodata: what xarray and rioxarray write there). Fix or delete that attribute.")
    _check_nodata_fits(number, np.dtype(arr.dtype), key, url)
    return number


def _check_nodata_fits(number: float, dtype: np.dtype, key: str, url: str) -> None:
    """Refuse a nodata no value of ``dtype`` can equal (1e40 on uint8, 0.5 or NaN on integers,
    1e40 on float32): it would mark no pixel, and nodata pixels would be segmented as data."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        fits = (isinstance(number, int) or (math.isfinite(number) and number.is_integer())) \
            and info.min <= number <= info.max
        holds = f"whole numbers from {info.min} to {info.max}"
    elif dtype.kind == "f":
        largest = float(np.finfo(dtype).max)
        fits = not math.isfinite(number) or abs(number) <= largest
        holds = f"numbers up to +-{largest:g}, NaN and infinities"
    else:
        return
    if not fits:
        raise CorruptInputError(
            f"Zarr array {public_url(url)} has the attribute {key}={number!r}, but its pixels are "
            f"{dtype} ({holds}): no pixel can equal it, so it would mark no pixel as nodata. "
            f"Expected a nodata value {dtype} can hold: fix the attribute, or delete it if the "
            "array has no nodata.")


def xarray_v2_fill_value(arr: zarr.Array) -> Any:
    """The CF ``_FillValue`` of a Zarr v2 array in xarray's encoding (its dimension names in
    ``_ARRAY_DIMENSIONS``), or ``None``. xarray and rioxarray write it there as the array's own
    ``fill_value`` (``null`` when there is none), and read every v2 fill_value back as it,
    where for Zarr v3 they keep a ``_FillValue`` attribute apart from the fill_value. A v2 array
    without xarray's encoding, like any v3 one, declares no nodata by its fill_value."""
    if arr.metadata.zarr_format != 2 or "_ARRAY_DIMENSIONS" not in arr.attrs:
        return None
    if np.dtype(arr.dtype).kind not in "iuf":  # a bool raster's False is no nodata; other
        return None  # dtypes are refused for what they are, not for a fill value
    value = arr.metadata.fill_value
    return value.item() if isinstance(value, np.generic) else value


def _attr_number(value: Any) -> float | None:
    """A number, a JSON name of one (``"NaN"``, ``"Infinity"``), or xarray's base64 of a
    little-endian double, as a float (an integer as itself); ``None`` for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return exact_number(value)
    if not isinstance(value, str):
        return None
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        pass
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return struct.unpack("<d", raw)[0] if len(raw) == 8 else None


def _space_shape(shape: Sequence[int], roles: Sequence[str]) -> tuple[int, ...]:
    """The sizes of the space axes (``z, y, x``) of an array of ``shape`` with these roles."""
    return tuple(n for n, role in zip(shape, roles) if role == SPACE)


def _zarr_georef(arr: zarr.Array, group: zarr.Group | None, roles: Sequence[str], url: str
                 ) -> GeoRef:
    attrs = dict(arr.attrs)
    nodata = declared_nodata(arr, url)
    if roles.count(SPACE) == 3:
        if attrs.get("voxel_affine") is not None:
            return GeoRef.from_voxel_affine(
                attrs["voxel_affine"], nodata, attrs.get("units"), attrs.get("nifti_codes"),
                attrs.get("nifti_qform"), source=f"the voxel_affine attribute of {public_url(url)}",
                fix="Fix the attribute, or remove it to read the volume on a unit grid",
                shape=_space_shape(arr.shape, roles))
        spacing = [float(s) for s in attrs.get("spacing") or (1.0, 1.0, 1.0)]  # (z, y, x)
        return GeoRef.from_axis_scales(
            spacing, nodata=nodata, units=attrs.get("units"),
            source=f"the spacing attribute {spacing} of {public_url(url)}",
            fix="Fix the attribute, or remove it to read the volume on a unit grid",
            shape=_space_shape(arr.shape, roles))
    return at_stored_coords(_declared_georef(arr, group, nodata), arr, group, roles, url)


def _declared_georef(arr: zarr.Array, group: zarr.Group | None, nodata: float | None) -> GeoRef:
    """An image's georeference as its metadata declares it: a CF ``spatial_ref`` variable,
    GeoZarr attributes, or plain ``crs``/``transform`` attributes."""
    attrs = dict(arr.attrs)
    mapping = attrs.get("grid_mapping", "spatial_ref")
    if group is not None and mapping in group:
        return GeoRef.from_spatial_ref_attrs(dict(group[mapping].attrs), nodata)
    geozarr = geozarr_georef(attrs, dict(group.attrs) if group is not None else {}, nodata)
    if geozarr is not None:
        return geozarr
    if "crs" in attrs or "transform" in attrs:
        transform = attrs.get("transform")
        if transform is not None:
            transform = affine_attribute(transform, "transform")
        return GeoRef.from_crs(attrs.get("crs"), transform, nodata)
    return GeoRef(nodata=None if nodata is None else exact_number(nodata))


MAX_COORD_READ = 1 << 20  # values of a 1-D coordinate read whole; beyond, its ends only (8 MiB)


def at_stored_coords(georef: GeoRef, arr: zarr.Array, group: zarr.Group | None,
                     roles: Sequence[str], url: str = "the Zarr input") -> GeoRef:
    """``georef`` with the transform the group's 1-D ``y``/``x`` coordinate arrays give, as
    rioxarray reads it (:func:`coords_transform`): a window written by xarray keeps its whole
    image's ``GeoTransform``, and its coordinates say where it lies. Coordinates that are not
    evenly spaced are refused (:func:`_refuse_uneven_coords`): no transform places them, and
    the output would lose them (or keep a CRS over a pixel grid) without a word."""
    coords = _stored_coords(arr, group, roles)
    if coords is None:
        return georef
    for name, values in zip(("y", "x"), coords):
        _refuse_uneven_coords(name, values, group[name], url, georef)
    transform = coords_transform(georef.affine, *coords, size=_yx_size(arr, roles))
    if transform is None or transform == georef.affine:
        return georef
    return replace(georef, transform=tuple(transform)[:6])


def _yx_size(arr: zarr.Array, roles: Sequence[str]) -> tuple[int, int]:
    """The sizes of an image array's y and x axes."""
    ny, nx = (n for n, role in zip(arr.shape, roles) if role == SPACE)
    return ny, nx


def _stored_coords(arr: zarr.Array, group: zarr.Group | None, roles: Sequence[str]
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """The ``y`` and ``x`` coordinate values stored beside a 2-D image ``arr`` (1-D arrays of
    its sizes, named as its axes), or ``None``."""
    dims = _dimension_names(arr)
    if group is None or roles.count(SPACE) != 2 or not dims or not {"y", "x"} <= set(dims):
        return None
    values = []
    for name in ("y", "x"):
        coord = group.get(name)
        size = arr.shape[list(dims).index(name)]
        if not isinstance(coord, zarr.Array) or coord.shape != (size,) or coord.dtype.kind not in "iuf":
            return None
        values.append(_coord_values(coord))
    return values[0], values[1]


def _coord_values(coord: zarr.Array) -> np.ndarray:
    """A 1-D coordinate's values as float64: whole up to :data:`MAX_COORD_READ` values, else its
    first two and its last (enough for :func:`coords_transform`)."""
    if coord.shape[0] <= MAX_COORD_READ:
        return np.asarray(coord[:], dtype=float)
    n = coord.shape[0]
    return np.asarray([coord[0], coord[1], coord[n - 1]], dtype=float)


def _refuse_uneven_coords(name: str, values: np.ndarray, coord: zarr.Array, url: str,
                          georef: GeoRef) -> None:
    """Refuse 1-D ``name`` coordinates (pixel centres: float64 ``values`` read from ``coord``,
    all of them or its first two and its last, :func:`_coord_values`) of a georeferenced raster
    (a CRS or a transform) that are not evenly spaced within half a pixel (:func:`uneven`, as
    ``segment()`` judges a window's): no transform places them, and the output lost its place
    without a word (a COG claimed the CRS over pixel indices). Coordinates stored rounded pass;
    a raster with no CRS and no transform is a pixel grid, with no place to lose."""
    n = coord.shape[0]
    if not (georef.crs_wkt or georef.transform) or n < 3 or not np.all(np.isfinite(values)):
        return
    sample = values if len(values) == n else values[:2]
    step = float(values[-1] - values[0]) / (n - 1)
    if not uneven(sample, abs(step), dtype=coord.dtype, step=step):
        return
    steps = np.diff(sample)
    worst = int(np.argmax(np.abs(steps - step)))
    raise UnsupportedFormatError(
        f"{public_url(url)}: its {name} coordinates are not evenly spaced: the steps between "
        f"neighbours run from {float(steps.min()):.10g} to {float(steps.max()):.10g} "
        f"({name}[{worst + 1}] - {name}[{worst}] = {float(steps[worst]):.10g}, where one step "
        f"of {step:.10g} would span their ends), yet it has a place (a CRS or a transform); "
        "expected pixel centres at one step, within half a pixel, which a transform can place. "
        f"Resample the raster onto a regular grid (e.g. xarray's .interp({name}=np.linspace("
        f"first, last, n)), or rioxarray's reproject), or delete the {name} coordinate array "
        "to read the raster as a pixel grid (without a place).")
