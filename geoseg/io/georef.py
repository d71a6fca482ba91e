"""Georeferencing carried from input to output, in the conventions xarray users expect.

Images follow rioxarray/CF: a scalar ``spatial_ref`` coordinate whose attributes
hold ``crs_wkt`` and ``GeoTransform`` (GDAL order), ``x``/``y`` pixel-centre
coordinates for north-up grids, and the nodata value in ``attrs["nodata"]``.

Volumes carry a 4 x 4 ``voxel_affine`` instead: it maps the array index
``(z, y, x, 1)`` (the order geoseg stores volumes in) to the world point
``(x, y, z, 1)`` of the voxel's centre. Its columns follow the array axes, its rows the
world axes, x first: for a NIfTI input the world is scanner RAS+ (X = left to right,
Y = posterior to anterior, Z = inferior to superior; the file's own affine with its
columns reordered), for an OME-Zarr input the image's physical x, y and z (its
scale and translation, z in row 2). One convention for every volume, so a NIfTI
export, world columns of an object table and any other reader of the matrix need not
know where a volume came from. Voxel spacing is the length of its first three
columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geoseg.core import jsontext
from geoseg.core.nodata import NODATA_ATTRS, exact_number
from geoseg.errors import ParameterError, UnsupportedFormatError

INDEX_AXES = ("z", "y", "x")  # the columns of a voxel_affine: a volume's array axes
WORLD_AXES = ("x", "y", "z")  # its rows: the world axes (scanner RAS+ for NIfTI)


@dataclass(frozen=True)
class GeoRef:
    """CRS (as WKT), affine transform (rasterio order a, b, c, d, e, f) and nodata; for volumes
    a ``voxel_affine`` from array index ``(z, y, x, 1)`` to world ``(x, y, z, 1)``: rows x, y, z,
    x first for every input (NIfTI's scanner RAS+, OME-Zarr's physical x, y, z); for a volume read
    from NIfTI, ``nifti_codes``: the file's ``(qform_code, sform_code)``, the space its affine is in
    (``None`` for other inputs, and where the file says neither, ``(0, 0)``), and
    ``nifti_qform``: its qform in the ``voxel_affine`` convention, where the file has a coded
    qform of another matrix than its sform (``voxel_affine``)."""

    crs_wkt: str | None = None
    transform: tuple[float, ...] | None = None
    nodata: float | None = None
    voxel_affine: tuple[float, ...] | None = None  # 16 values, row-major; volumes only
    units: str | None = None  # of the world coordinates a voxel_affine maps to
    nifti_codes: tuple[int, int] | None = None  # (qform_code, sform_code); volumes only
    nifti_qform: tuple[float, ...] | None = None  # the file's qform where it is another matrix

    @classmethod
    def from_voxel_affine(cls, affine: Any, nodata: float | None = None,
                          units: str | None = None, nifti_codes: Any = None,
                          nifti_qform: Any = None, source: str | None = None,
                          fix: str = "Fix it where it is stored",
                          shape: Sequence[int] | None = None) -> GeoRef:
        """A volume's georeference from a 4 x 4 matrix mapping ``(z, y, x, 1)`` indices to
        world ``(x, y, z, 1)`` (see the module docstring), with the NIfTI xform codes of the file
        it came from, if any (see :func:`as_nifti_codes`), and its qform, in the same
        convention, where that is another matrix than ``affine`` (the sform's).

        An ``affine`` that places no voxel (a NaN or infinite term, or voxels of no volume along
        the axes of ``shape``, ``(z, y, x)``, longer than one voxel) is refused: as
        :class:`~geoseg.errors.UnsupportedFormatError` naming ``source`` (where a file's
        metadata held it) and saying ``fix``, else as a :class:`~geoseg.errors.ParameterError`
        (an affine passed in)."""
        qform = None if nifti_qform is None else _matrix16(nifti_qform, "a NIfTI qform")
        matrix = _matrix16(affine, "a voxel affine")
        if not places_voxels(matrix, shape):
            _refuse_voxel_affine(matrix, source, fix)
        return cls(voxel_affine=matrix,
                   nodata=None if nodata is None else exact_number(nodata), units=units,
                   nifti_codes=as_nifti_codes(nifti_codes), nifti_qform=qform)

    @classmethod
    def from_axis_scales(cls, scale: Sequence[float], translation: Sequence[float] = (0, 0, 0),
                         nodata: float | None = None, units: str | None = None,
                         source: str | None = None, fix: str = "Fix it where it is stored",
                         shape: Sequence[int] | None = None) -> GeoRef:
        """A volume's georeference from per-axis voxel sizes and voxel-centre offsets, both in
        ``(z, y, x)`` index order (as OME-Zarr's scale and translation list them): world
        ``x = scale[2] * x_index + translation[2]``, and so on, in rows x, y, z. A zero, NaN or
        infinite term is refused as :meth:`from_voxel_affine` says (``source``, ``fix``)."""
        rows = [WORLD_AXES.index(axis) for axis in INDEX_AXES]
        matrix = np.zeros((4, 4))
        matrix[rows, [0, 1, 2]] = scale
        matrix[rows, 3] = translation
        matrix[3, 3] = 1.0
        return cls.from_voxel_affine(matrix, nodata, units, source=source, fix=fix, shape=shape)

    @property
    def affine_matrix(self) -> np.ndarray | None:
        """The 4 x 4 voxel affine as an array, or ``None`` for images."""
        return None if self.voxel_affine is None else np.asarray(self.voxel_affine).reshape(4, 4)

    @property
    def spacing(self) -> tuple[float, float, float] | None:
        """Voxel size along ``(z, y, x)``, from the affine's columns."""
        matrix = self.affine_matrix
        if matrix is None:
            return None
        z, y, x = (float(np.linalg.norm(matrix[:3, i])) for i in range(3))
        return z, y, x

    @classmethod
    def from_crs(cls, crs: Any, transform: Any, nodata: float | None = None,
                 source: str = "The transform") -> GeoRef:
        """``source`` names where ``transform`` was read, for the error refusing it."""
        wkt = parse_crs(crs).to_wkt() if crs else None
        affine = None
        if transform is not None:
            affine = checked_transform([float(v) for v in tuple(transform)[:6]], source)
        return cls(wkt, affine, None if nodata is None else exact_number(nodata))

    @property
    def affine(self) -> Affine | None:
        return Affine(*self.transform) if self.transform else None

    def spatial_ref_attrs(self) -> dict[str, Any]:
        """Attributes of the ``spatial_ref`` variable (empty when there is no CRS)."""
        attrs: dict[str, Any] = {}
        if self.crs_wkt:
            attrs.update(crs_wkt=self.crs_wkt, spatial_ref=self.crs_wkt)
        if self.transform:
            a, b, c, d, e, f = self.transform
            attrs["GeoTransform"] = " ".join(repr(v) for v in (c, a, b, f, d, e))
        return attrs

    @classmethod
    def from_spatial_ref_attrs(cls, attrs: dict[str, Any], nodata: float | None = None) -> GeoRef:
        wkt = attrs.get("crs_wkt") or attrs.get("spatial_ref")
        transform = None
        if "GeoTransform" in attrs:
            c, a, b, f, d, e = _gdal_geotransform(attrs["GeoTransform"])
            transform = checked_transform([a, b, c, d, e, f],
                                          f"The spatial_ref attribute GeoTransform = "
                                          f"{str(attrs['GeoTransform'])[:80]!r}")
        return cls(wkt, transform, nodata)

    def coords(self, height: int, width: int) -> dict[str, Any]:
        """``x``/``y`` pixel-centre coordinates (north-up grids only) and ``spatial_ref``."""
        coords: dict[str, Any] = {}
        if self.crs_wkt or self.transform:
            coords["spatial_ref"] = ((), np.int64(0), self.spatial_ref_attrs())
        t = self.affine
        if t is not None and t.b == 0 and t.d == 0:
            coords["x"] = ("x", t.c + t.a * (np.arange(width) + 0.5))
            coords["y"] = ("y", t.f + t.e * (np.arange(height) + 0.5))
        return coords

    def attrs(self) -> dict[str, Any]:
        """Attributes for a DataArray: CRS, transform and nodata in plain JSON types."""
        out: dict[str, Any] = {}
        if self.crs_wkt:
            out["crs"] = self.crs_wkt
        if self.transform:
            out["transform"] = list(self.transform)
        if self.nodata is not None:
            out["nodata"] = self.nodata
        if self.voxel_affine is not None:
            out["voxel_affine"] = self.affine_matrix.tolist()
            out["spacing"] = list(self.spacing)
            if self.units:
                out["units"] = self.units
            if self.nifti_codes is not None:
                out["nifti_codes"] = list(self.nifti_codes)
            if self.nifti_qform is not None:
                out["nifti_qform"] = np.asarray(self.nifti_qform).reshape(4, 4).tolist()
        return out

    def volume_attrs(self) -> dict[str, Any]:
        """A volume's voxel affine, spacing, units and NIfTI xform codes, as array attributes
        (what a volume output or a converted volume stores; the Zarr reader reads them back)."""
        return {k: v for k, v in self.attrs().items() if k in VOLUME_ATTRS}


VOLUME_ATTRS = ("voxel_affine", "spacing", "units", "nifti_codes", "nifti_qform")


def _matrix16(values: Any, what: str) -> tuple[float, ...]:
    """A 4 x 4 matrix over ``(z, y, x, 1)`` indices as 16 floats, row-major."""
    matrix = np.asarray(values, dtype=float)
    if matrix.shape != (4, 4):
        raise ParameterError(f"{what} is a 4 x 4 matrix; got shape {matrix.shape}. Pass the "
                             "voxel-to-world matrix over (z, y, x, 1) indices.")
    return tuple(float(v) for v in matrix.ravel())


def places_voxels(matrix: Any, shape: Sequence[int] | None = None) -> bool:
    """Whether a voxel affine (16 values or 4 x 4) maps voxels to world boxes of some volume:
    every term finite, and its steps along the axes (of ``shape``, ``(z, y, x)``, those longer
    than one voxel: a single plane's step places nothing) independent."""
    m = np.asarray(matrix, dtype=float).reshape(4, 4)
    if not np.isfinite(m).all() or not _sizes_finite(m, shape):
        return False
    axes = [a for a in range(3) if shape is None or shape[a] > 1]
    return int(np.linalg.matrix_rank(m[:3, axes])) == len(axes)


def _sizes_finite(m: np.ndarray, shape: Sequence[int] | None) -> bool:
    """Whether the voxel sizes (the steps' lengths) and the far corner of ``shape`` stay finite:
    steps of 1e308 are finite terms whose lengths and positions overflow to infinity."""
    with np.errstate(over="ignore", invalid="ignore"):
        sizes = np.sqrt(np.square(m[:3, :3]).sum(axis=0))
        corner = m[:3, :3] @ np.asarray(shape if shape is not None else (1, 1, 1), float) + m[:3, 3]
    return bool(np.isfinite(sizes).all() and np.isfinite(corner).all())


def spanning(matrix: Any) -> np.ndarray:
    """A voxel affine (16 values or 4 x 4) as a 4 x 4 matrix whose zero steps (along axes of
    one voxel, which :func:`places_voxels` allows: a single plane's step places nothing) are
    unit steps across the others: what a NIfTI qform (rotation and voxel sizes) and a voxel's
    volume (a plane's voxels one unit thick) need. Unchanged without a zero step."""
    m = np.array(matrix, dtype=float).reshape(4, 4)
    zero = [a for a in range(3) if not np.any(m[:3, a])]
    if zero:
        kept = m[:3, [a for a in range(3) if a not in zero]]
        across = np.linalg.svd(kept if kept.size else np.zeros((3, 1)))[0][:, kept.shape[1]:]
        m[:3, zero] = across[:, : len(zero)]
    return m


def _refuse_voxel_affine(matrix: tuple[float, ...], source: str | None, fix: str) -> None:
    """Raise the error :meth:`GeoRef.from_voxel_affine` gives for an affine placing no voxel."""
    finite = all(math.isfinite(v) for v in matrix)
    m = np.asarray(matrix, dtype=float).reshape(4, 4)
    problem = ("it holds a NaN or infinite number" if not finite else
               "its voxel sizes or positions overflow to infinity" if not _sizes_finite(m, None) else
               "its voxels have no volume (its steps along the axes of more than one voxel do "
               "not span one: a zero voxel size, or two axes along one direction)")
    rows = "[" + ", ".join("[" + ", ".join(f"{v:.6g}" for v in row) + "]"
                           for row in np.asarray(matrix).reshape(4, 4)) + "]"
    said = (f"is not a usable voxel-to-world affine: {problem}; got {rows}. Expected a 4 x 4 "
            "matrix of finite numbers whose first three columns (the z, y, x voxel steps) span a "
            "volume, e.g. the voxel sizes on the diagonal")
    if source is None:
        raise ParameterError(f"The voxel affine {said}. Pass one that places every voxel.")
    raise UnsupportedFormatError(f"{source[:1].upper()}{source[1:]} {said}. {fix}.")


def as_nifti_codes(codes: Any) -> tuple[int, int] | None:
    """NIfTI ``(qform_code, sform_code)`` as two ints; ``None`` for none, and for ``(0, 0)``:
    a file that names no space for its affine says nothing a code could carry on."""
    if codes is None:
        return None
    try:
        qform, sform = (int(c) for c in codes)
    except (TypeError, ValueError):
        raise ParameterError(f"NIfTI xform codes are two integers (qform_code, sform_code); got "
                             f"{codes!r}. Pass them as read from a NIfTI header.") from None
    return (qform, sform) if qform or sform else None


def grid_difference(shape: tuple[int, ...], georef: GeoRef, other_shape: tuple[int, ...],
                    other: GeoRef) -> str | None:
    """How a raster's pixel grid differs from another's (``"shape (a) against (b)"``, then
    transform, then CRS, then a volume's voxel affine), or ``None`` when they are one grid. A
    side with no transform, CRS or voxel affine matches any: only the shape of a raster without
    a georeference can be checked."""
    if tuple(shape) != tuple(other_shape):
        return f"shape {tuple(shape)} against {tuple(other_shape)}"
    a, b = georef.transform, other.transform
    if a is not None and b is not None and not np.allclose(a, b, rtol=1e-9, atol=1e-9):
        return f"transform {list(a)} against {list(b)}"
    if georef.crs_wkt and other.crs_wkt:
        crs, other_crs = CRS.from_wkt(georef.crs_wkt), CRS.from_wkt(other.crs_wkt)
        if crs != other_crs:
            return f"CRS {crs.to_string()} against {other_crs.to_string()}"
    return voxel_grid_difference(georef, other)


def resample_hint(labels: GeoRef, target: GeoRef, name: str) -> str:
    """How to put labels onto ``name``'s grid (``target``) with nearest neighbour: nibabel for
    volumes (either side has a voxel affine), gdalwarp for georeferenced images."""
    if labels.voxel_affine is not None or target.voxel_affine is not None:
        return (f"nibabel.processing.resample_from_to(labels_img, {name}_img, order=0) "
                "(geoseg info shows each side's voxel affine)")
    return f"gdalwarp -r near, with the {name}'s CRS, extent and resolution"


AFFINE_TOLERANCE = 1e-6  # of a voxel's size and of each term: float32 NIfTI headers round both


def voxel_grid_difference(georef: GeoRef, other: GeoRef) -> str | None:
    """How two volumes' voxel affines differ (``"voxel affine ... against ..."``: orientation,
    spacing and origin of each), or ``None`` when they place every voxel at one world point, up to
    :data:`AFFINE_TOLERANCE`. A side with no voxel affine matches any."""
    a, b = georef.affine_matrix, other.affine_matrix
    if a is None or b is None or same_voxel_grid(a, b):
        return None
    return f"voxel affine {describe_voxel_grid(georef)} against {describe_voxel_grid(other)}"


def same_voxel_grid(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two 4 x 4 voxel affines agree term by term within :data:`AFFINE_TOLERANCE` of the
    larger voxel size plus that fraction of the term (float32 rounding of a far origin)."""
    voxel = max(float(np.linalg.norm(m[:3, i])) for m in (a, b) for i in range(3))
    limit = AFFINE_TOLERANCE * (voxel + np.maximum(np.abs(a), np.abs(b)))
    return bool(np.all(np.abs(a - b) <= limit))


def describe_voxel_grid(georef: GeoRef) -> str:
    """A volume's grid in words: the world axis each array axis runs along, its spacing and the
    world point of voxel ``(0, 0, 0)``, e.g. ``(z, y, x) along (+z, -y, -x), spacing (2.5, 0.7,
    0.7), origin (x, y, z) (40, 30, -50)``."""
    matrix = georef.affine_matrix
    if matrix is None:
        return "none"
    spacing = ", ".join(f"{v:.6g}" for v in georef.spacing)
    origin = ", ".join(f"{v:.6g}" for v in matrix[:3, 3])
    return (f"(z, y, x) along ({axis_directions(matrix)}), spacing ({spacing}), "
            f"origin (x, y, z) ({origin})")


def axis_directions(matrix: np.ndarray) -> str:
    """The world axis (with its sign) each index axis ``z, y, x`` of a voxel affine mostly runs
    along: ``+z, -y, -x`` for a volume stored LPS-like, ``+z, +y, +x`` for RAS."""
    words = []
    for column in matrix[:3, :3].T:
        row = int(np.argmax(np.abs(column)))
        words.append(f"{'+' if column[row] >= 0 else '-'}{WORLD_AXES[row]}")
    return ", ".join(words)


def _gdal_geotransform(text: Any) -> list[float]:
    """GDAL's six numbers ``"c a b f d e"`` of a CF ``GeoTransform`` attribute."""
    try:
        numbers = [float(v) for v in str(text).split()]
    except ValueError:
        numbers = []
    if len(numbers) != 6:
        raise UnsupportedFormatError(
            f"The spatial_ref attribute GeoTransform = {str(text)[:80]!r} is not a GDAL "
            "geotransform; expected 6 numbers \"c a b f d e\" (origin x, pixel width, row "
            "rotation, origin y, column rotation, pixel height), e.g. \"500000 10 0 4500000 0 "
            "-10\". Fix the attribute, or remove it to read the array without a transform.")
    return numbers


def checked_transform(values: Sequence[float], source: str) -> tuple[float, ...]:
    """``values`` (an affine ``a, b, c, d, e, f``) as a tuple, or an error saying why it places
    no pixel: a NaN or infinite term, or a singular matrix (``a*e - b*d == 0``, pixels of no
    area), which every coordinate, resampling and export would carry on silently."""
    a, b, c, d, e, f = values
    if not all(math.isfinite(v) for v in values):
        problem = "it holds a NaN or infinite number"
    elif a * e - b * d == 0:
        problem = "it is singular (a*e - b*d = 0: its pixels have no area)"
    else:
        return (a, b, c, d, e, f)
    raise UnsupportedFormatError(
        f"{source} is not a usable affine transform: {problem}. Expected 6 finite numbers "
        "[a, b, c, d, e, f] in rasterio's order with a*e - b*d != 0, e.g. [10.0, 0.0, 500000.0, "
        "0.0, -10.0, 4500000.0]. Fix it, or remove it to read the raster without a transform.")


def parse_crs(value: Any) -> CRS:
    """``CRS.from_user_input(value)`` inside a rasterio environment, whose error handler keeps
    GDAL from printing ``ERROR 1: PROJ: ...`` to stderr before geoseg's own message. A PROJJSON
    string nested too deeply for Python's decoder (which rasterio runs on it) is refused first."""
    if isinstance(value, str) and value.lstrip().startswith(("{", "[")) \
            and (levels := jsontext.levels(value)) > jsontext.MAX_LEVELS:
        raise UnsupportedFormatError(
            f"received a CRS written as PROJJSON that nests {levels} levels deep; expected a CRS "
            f"(an EPSG code, WKT, or PROJJSON of at most {jsontext.MAX_LEVELS} levels). Fix the "
            "raster's crs, or remove it to read the raster without one.")
    with rasterio.Env():
        return CRS.from_user_input(value)


# what describes an input's values or its bands, not its grid (CF, rioxarray, GDAL's
# STATISTICS_*): on a class map, xarray would decode class ids through scale_factor/add_offset
VALUE_ATTRS = frozenset({"scale_factor", "add_offset", "scales", "offsets", "units",
                         "valid_range", "valid_min", "valid_max", "actual_range", "long_name",
                         "standard_name", "flag_values", "flag_meanings", "flag_masks",
                         "_Unsigned", "description"})


def grid_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """An input raster's ``attrs`` a result computed from it keeps: all but its nodata
    (:data:`NODATA_ATTRS`) and what describes its values (:data:`VALUE_ATTRS`, ``STATISTICS_*``);
    a volume's ``units`` (of its voxel affine's world) stay."""
    volume = "voxel_affine" in attrs
    return {k: v for k, v in attrs.items()
            if k not in NODATA_ATTRS and not k.startswith("STATISTICS_")
            and (k not in VALUE_ATTRS or (volume and k == "units"))}
VOXEL_INDEX = "voxel index"  # long_name of a volume's z/y/x coordinates: the file's voxel indices


def voxel_index_coords(dims: Sequence[str], shape: Sequence[int]) -> dict[str, Any]:
    """A volume's coordinates: each axis's voxel indices in the file, so that a window cut
    from it (``.isel``) still says where it lies (:func:`window_affines`)."""
    return {d: (d, np.arange(n), {"long_name": VOXEL_INDEX}) for d, n in zip(dims, shape)}


PIXEL_INDEX = "pixel index"  # long_name of a rotated image's y/x coordinates: the file's pixels


def pixel_index_coords(georef: GeoRef, height: int, width: int) -> dict[str, Any]:
    """A rotated image's ``y``/``x`` coordinates: its pixel indices in the file (a rotated grid
    has no one-dimensional map coordinates), so that a window cut from it (``.isel``) still
    says where it lies (:func:`pixel_window_transform`); none for a north-up image."""
    t = georef.affine
    if t is None or (t.b == 0 and t.d == 0):
        return {}
    return {d: (d, np.arange(n), {"long_name": PIXEL_INDEX}) for d, n in (("y", height),
                                                                         ("x", width))}


def pixel_window_transform(transform: Affine, y: Any, x: Any) -> Affine | None:
    """The transform of a window of an image whose ``y``/``x`` coordinates are its pixel indices
    (:func:`pixel_index_coords`, then cut): ``transform`` scaled by the window's step about the
    centre of its first pixel, so that each window pixel's centre is the centre of the file pixel
    it holds, for any step (a strided or reversed axis, ``slice(90, 20, -2)``), as a north-up
    window's coordinates place it (:func:`coords_transform`). Scaled about the first pixel's
    corner instead, centres would move by ``(step - 1) / 2`` pixels. ``None`` when the
    coordinates are not such indices or not evenly spaced."""
    starts, steps = [], []
    for coord in (y, x):
        values = None if coord is None else np.asarray(coord.values)
        if values is None or coord.attrs.get("long_name") != PIXEL_INDEX \
                or values.dtype.kind not in "iu" or values.ndim != 1 or values.size == 0:
            return None
        step = int(values[1] - values[0]) if len(values) > 1 else 1
        if step == 0 or np.any(np.diff(values) != step):
            return None
        starts.append(int(values[0]))
        steps.append(step)
    # window pixel i (centre i + 0.5) holds file pixel start + step * i (centre that + 0.5)
    corner = [start + 0.5 - step / 2 for start, step in zip(starts, steps)]
    return transform @ Affine.translation(corner[1], corner[0]) @ Affine.scale(steps[1], steps[0])


def window_affines(attrs: dict[str, Any], coords: Sequence[Any]) -> dict[str, Any]:
    """The ``voxel_affine``, ``nifti_qform`` and ``spacing`` attributes of a window of a volume
    whose attributes are ``attrs``, from its z/y/x voxel-index coordinates (``coords``, as
    :func:`voxel_index_coords` made them, then cut): its first voxel's index and the step
    between voxels move and scale the affines, a negative step (a reversed axis,
    ``slice(None, None, -1)``) included: window voxel ``i`` is file voxel ``start + step * i``,
    so its column is the file's times ``step``. Empty when the coordinates are not voxel
    indices, evenly spaced, or say the window is the whole volume's grid."""
    steps, starts = [], []
    for coord in coords:
        values = None if coord is None else np.asarray(coord.values)
        if values is None or coord.attrs.get("long_name") != VOXEL_INDEX \
                or values.dtype.kind not in "iu" or values.ndim != 1 or values.size == 0:
            return {}
        step = int(values[1]) - int(values[0]) if len(values) > 1 else 1
        if step == 0 or np.any(np.diff(values.astype(np.int64)) != step):
            return {}
        steps.append(step)
        starts.append(int(values[0]))
    if starts == [0, 0, 0] and steps == [1, 1, 1]:
        return {}
    shift = np.diag([*steps, 1]).astype(float)
    shift[:3, 3] = starts
    out = {key: (np.asarray(attrs[key], float).reshape(4, 4) @ shift).tolist()
           for key in ("voxel_affine", "nifti_qform") if attrs.get(key) is not None}
    if "voxel_affine" in out and attrs.get("spacing") is not None:
        out["spacing"] = [float(v) * abs(s) for v, s in zip(attrs["spacing"], steps)]
    return out


def coords_transform(transform: Affine | None, y: np.ndarray, x: np.ndarray,
                     size: tuple[int, int] | None = None) -> Affine | None:
    """The transform of a north-up grid whose pixel centres are ``y`` and ``x``, as rioxarray's
    ``rio.transform()`` gives it: the origin from the coordinates, the resolution from
    ``transform`` (or from the coordinates, when evenly spaced by another step, as a strided
    selection gives); a window's origin on ``transform``'s grid is exactly
    ``rasterio.windows.transform``'s. A rotated ``transform`` is kept as is, and so is one the
    coordinates cannot place (one pixel with no transform, uneven steps with none)."""
    if transform is not None and (transform.b or transform.d):
        return transform
    for name, values in (("y", y), ("x", x)):
        if not np.all(np.isfinite(values)):
            raise UnsupportedFormatError(
                f"the {name} coordinates hold a value that is not a finite number "
                f"({np.asarray(values)[~np.isfinite(values)][0]}); expected the pixel centres "
                f"along {name}, from which the raster's place is read. Fix or delete the {name} "
                "coordinate array (the transform attributes then place the raster).")
    res_x = _axis_step(x, None if transform is None else transform.a, size and size[1])
    res_y = _axis_step(y, None if transform is None else transform.e, size and size[0])
    if res_x is None or res_y is None:
        return transform
    left, top = float(x[0]) - res_x / 2, float(y[0]) - res_y / 2
    if not all(math.isfinite(v) for v in (res_x, res_y, left, top)):
        raise UnsupportedFormatError(
            f"the x/y coordinates (from {float(x[0]):g}, {float(y[0]):g}) place the raster "
            f"beyond any finite number (pixel size {res_x:g} x {res_y:g}); expected pixel "
            "centres a transform can hold. Fix or delete the x/y coordinate arrays.")
    origin = _grid_origin(transform, res_x, res_y, left, top)
    return Affine(res_x, 0.0, origin[0], 0.0, res_y, origin[1])


def _evenly_spaced(values: np.ndarray, step: float | None = None) -> bool:
    """Whether ``values`` (a window's coordinates along one axis) are evenly spaced, by ``step``
    when given, within a millionth of it: what a transform can place. One value is."""
    values = np.asarray(values, dtype=np.float64)
    if step is None:
        if len(values) < 2:
            return True
        step = float(values[1] - values[0])
    with np.errstate(over="ignore", invalid="ignore"):  # steps past any float: refused after
        return bool(step != 0 and np.allclose(np.diff(values), step, rtol=1e-6, atol=0))


def _axis_step(values: np.ndarray, declared: float | None, n: int | None) -> float | None:
    """The pixel size along one axis: ``declared`` unless the coordinates are evenly spaced by
    another step (then that step); with nothing declared, the step between their ends when
    they are even within half a pixel (:func:`uneven`: coordinates stored rounded, lat/lon to
    six decimals); ``None`` when neither says (uneven, or one value, and no ``declared``).
    ``n`` is the axis length when ``values`` holds its ends only."""
    n = len(values) if n is None else n
    if n < 2:
        return declared
    step = (float(values[-1]) - float(values[0])) / (n - 1)
    sample = values[:-1] if len(values) < n else values
    if declared is None and n > 2 and step and not uneven(np.asarray(sample), abs(step), step=step):
        return step
    even = _evenly_spaced(sample, step)
    if not even or (declared is not None and math.isclose(step, declared, rel_tol=1e-6)):
        return declared
    return step


def uneven(values: np.ndarray, pixel: float, *, dtype: Any = None,
           step: float | None = None) -> bool:
    """Whether ``values`` (pixel centres along one axis, all of them or the first few) stray
    from one step (``step``, by default the one between their ends) by more than half a
    ``pixel`` anywhere, plus what ``dtype`` (by default theirs) cannot hold (float32 steps by
    0.25 near 4,000 km: 30 cm pixels there are stored 0.25 or 0.5 apart). Coordinates stored
    rounded (lat/lon to six decimals) are even; a list of picked pixels is not. Non-finite
    values are left to :func:`coords_transform`, which names them."""
    values = np.asarray(values)
    if len(values) < 2 or not pixel or not np.all(np.isfinite(values)):
        return False
    kind = np.dtype(values.dtype if dtype is None else dtype)
    top = np.abs(values).max().astype(kind) if kind.kind == "f" else None
    noise = 2 * float(np.spacing(top)) if top is not None else 0.0
    exact = values.astype(np.float64)
    if step is None:
        if len(exact) < 3:
            return False
        step = (exact[-1] - exact[0]) / (len(exact) - 1)
    return bool(np.max(np.abs(np.diff(exact) - step)) > pixel / 2 + noise)


def _grid_origin(transform: Affine | None, res_x: float, res_y: float, left: float, top: float
                 ) -> tuple[float, float]:
    """``(left, top)``, or the corner of the pixel of ``transform``'s grid there when it lies
    within a millionth of a pixel of one (so float noise in the coordinates does not move it)."""
    if transform is None:
        return left, top
    col, row = ~transform @ (left, top)
    if abs(col - round(col)) < 1e-6 and abs(row - round(row)) < 1e-6:
        return transform @ (round(col), round(row))
    return left, top
