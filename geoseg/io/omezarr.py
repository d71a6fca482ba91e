"""OME-Zarr (NGFF 0.4 and 0.5) images: pick a resolution level, honour axes, scale and translation.

NGFF 0.4 keeps ``multiscales`` in the group's attributes; 0.5 nests it under
``attributes["ome"]``. Each level's ``coordinateTransformations`` (a scale, then
an optional translation, then the multiscale's own) map an array index to
physical coordinates of the voxel's centre. Axes of type ``space`` become
geoseg's z/y/x, a ``channel`` axis becomes bands, and a ``time`` axis of length
one is dropped. A volume's ``voxel_affine`` maps ``(z, y, x, 1)`` indices to
physical ``(x, y, z, 1)``, x first like a NIfTI's scanner coordinates (see
:class:`~geoseg.io.georef.GeoRef`), so a NIfTI export of it is x-first too.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import zarr

from geoseg.core.text import brief
from geoseg.core.urls import public_url
from geoseg.errors import CorruptInputError, UnsupportedFormatError
from geoseg.io.georef import GeoRef, checked_transform
from geoseg.io.readers.base import BAND, DROP, SPACE


def multiscales(attrs: dict[str, Any]) -> list[Any] | None:
    """The ``multiscales`` list of an NGFF 0.4 or 0.5 group (one entry that is not a list: a
    list of it), else ``None``; :func:`image_of` checks what it holds."""
    ome = attrs.get("ome")
    holder = ome if isinstance(ome, dict) and "multiscales" in ome else attrs
    if "multiscales" not in holder:
        return None
    found = holder["multiscales"]
    return found if isinstance(found, list) else [found]


def ome_version(attrs: dict[str, Any]) -> str:
    ome = attrs.get("ome")
    if isinstance(ome, dict):
        return str(ome.get("version", "0.5"))
    return str(attrs["multiscales"][0].get("version", "0.4"))


def image_of(attrs: dict[str, Any], url: str) -> dict[str, Any]:
    """The first ``multiscales`` entry of a group's attributes, refused (naming the field and
    what NGFF expects there) unless it has ``axes`` and ``datasets`` each with a ``path``."""
    found = multiscales(attrs)
    if not found or not isinstance(found[0], dict):
        raise CorruptInputError(f"OME-Zarr image {public_url(url)}: its multiscales is "
                                f"{brief(found, 60)}; expected a list holding an image object "
                                f"(NGFF). {_FIX}")
    image = found[0]
    datasets, axes = image.get("datasets"), image.get("axes")
    if not (isinstance(datasets, list) and datasets
            and all(isinstance(d, dict) and isinstance(d.get("path"), str) for d in datasets)):
        raise CorruptInputError(f"OME-Zarr image {public_url(url)}: its multiscales datasets are "
                                f"{brief(datasets, 60)}; expected a list of levels, each an object "
                                f"with the path of its array. {_FIX}")
    if not (isinstance(axes, list) and axes and all(isinstance(a, dict | str) for a in axes)):
        raise CorruptInputError(f"OME-Zarr image {public_url(url)}: its multiscales axes are "
                                f"{brief(axes, 60)}; expected a list of axes, e.g. [{{\"name\": "
                                f"\"y\", \"type\": \"space\"}}, ...]. {_FIX}")
    return image


_FIX = "Fix the image's multiscales metadata (as an OME-Zarr writer writes it)."


def level_path(group: zarr.Group, level: int | None, url: str) -> tuple[str, dict[str, Any]]:
    """The array path of resolution ``level`` (0 = full resolution) and its multiscale entry."""
    image = image_of(dict(group.attrs), url)
    datasets = image["datasets"]
    index = 0 if level is None else int(level)
    if not 0 <= index < len(datasets):
        raise UnsupportedFormatError(
            f"OME-Zarr image {public_url(url)} has {len(datasets)} resolution level(s), 0 to "
            f"{len(datasets) - 1}; "
            f"received level={level}. Pick one of those (0 is full resolution).")
    return str(datasets[index]["path"]), image


def roles(image: dict[str, Any], shape: Sequence[int], url: str) -> tuple[str, ...]:
    """The geoseg role of each NGFF axis of a level array of ``shape``: one axis per dimension,
    else refused (zipped, a z, y, x array under c, z, y, x axes read its planes as bands)."""
    axes = _axes(image)
    if len(axes) != len(shape):
        names = [str(a.get("name")) for a in axes]
        raise CorruptInputError(
            f"OME-Zarr image {public_url(url)} declares {len(axes)} axes {names}, but its level "
            f"array has {len(shape)} dimensions {tuple(shape)}; expected one axis per dimension. "
            f"{_FIX}")
    out = []
    for axis, size in zip(_axes(image), shape):
        kind = axis.get("type")
        if kind == "space":
            out.append(SPACE)
        elif kind == "channel" and BAND not in out:
            out.append(BAND)
        elif size == 1:
            out.append(DROP)
        else:
            raise UnsupportedFormatError(
                f"OME-Zarr image {url} has a {kind or 'untyped'} axis {axis['name']!r} of length {size}; "
                "geoseg reads one channel axis plus 2 or 3 space axes (other axes must have length 1).")
    if out.count(SPACE) not in (2, 3):
        raise UnsupportedFormatError(f"OME-Zarr image {url} has {out.count(SPACE)} space axes; "
                                     "geoseg reads images (y, x) and volumes (z, y, x).")
    _check_axis_names(image, out, url)
    return tuple(out)


def _check_axis_names(image: dict[str, Any], axis_roles: Sequence[str], url: str) -> None:
    """Refuse axes named twice, and space axes named z, y, x in another order: they are read
    by position (the order NGFF recommends), so an x-first image would read transposed, its
    spacings swapped and a NIfTI export of it mirrored."""
    names = [str(a.get("name")) for a in _axes(image)]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UnsupportedFormatError(
            f"OME-Zarr image {url} has axes {names}: {', '.join(map(repr, repeated))} named more "
            "than once; expected each axis named once (e.g. ['c', 'z', 'y', 'x']). Fix the "
            "multiscales axes.")
    space = [n.lower() for n, r in zip(names, axis_roles) if r == SPACE]
    if set(space) <= {"z", "y", "x"} and space != [n for n in ("z", "y", "x") if n in space]:
        raise UnsupportedFormatError(
            f"OME-Zarr image {url} has its space axes in the order {space}; geoseg reads them in "
            f"the order {[n for n in ('z', 'y', 'x') if n in space]}, as NGFF recommends. "
            "Transpose the arrays (every level) and their axes and coordinateTransformations "
            "to that order first.")


def georef(image: dict[str, Any], level: int, axis_roles: Sequence[str], nodata: Any = None,
           url: str = "the OME-Zarr image", shape: Sequence[int] | None = None) -> GeoRef:
    """Physical placement of level ``level``: a voxel affine for volumes, a transform for images;
    a scale that places no voxel (zero, NaN, infinite; zero allowed along a space axis of
    ``shape``, the level's, of one voxel) is refused, naming the image at ``url``."""
    scale, translation = _scale_translation(image, level)
    space = [i for i, r in enumerate(axis_roles) if r == SPACE]
    s, t = np.asarray(scale)[space], np.asarray(translation)[space]
    named = [a.get("unit") for a, r in zip(_axes(image), axis_roles) if r == SPACE]
    unit, factors = one_unit(named, url)
    s, t = s * factors, t * factors
    if len(space) == 3:  # world rows x, y, z, as for NIfTI: see GeoRef
        return GeoRef.from_axis_scales(
            s, t, nodata, unit,
            source=f"level {level}'s coordinateTransformations (scale {s.tolist()}, translation "
                   f"{t.tolist()}) of OME-Zarr image {public_url(url)}",
            fix="Fix that level's scale and translation in the image's multiscales metadata",
            shape=None if shape is None else [shape[i] for i in space])
    (sy, sx), (ty, tx) = s, t  # NGFF places pixel centres; an affine transform, pixel corners
    transform = (float(sx), 0.0, float(tx - sx / 2), 0.0, float(sy), float(ty - sy / 2))
    where = f"The transform that level {level}'s scale {[float(sy), float(sx)]} (y, x) makes"
    return GeoRef(transform=checked_transform(transform, where),
                  nodata=None if nodata is None else float(nodata))


# NGFF's space units (UDUNITS-2 names it lists), in metres: axes in several of them are read
# in one (:func:`one_unit`), so spacings, volumes and exports compare like with like
LENGTH_UNITS = {name: Fraction(metres) for name, metres in {
    "angstrom": "1e-10", "attometer": "1e-18", "centimeter": "1e-2", "decimeter": "1e-1",
    "exameter": "1e18", "femtometer": "1e-15", "foot": "0.3048", "gigameter": "1e9",
    "hectometer": "1e2", "inch": "0.0254", "kilometer": "1e3", "megameter": "1e6", "meter": "1",
    "micrometer": "1e-6", "mile": "1609.344", "millimeter": "1e-3", "nanometer": "1e-9",
    "parsec": "30856775814913673", "petameter": "1e15", "picometer": "1e-12",
    "terameter": "1e12", "yard": "0.9144", "yoctometer": "1e-24", "yottameter": "1e24",
    "zeptometer": "1e-21", "zettameter": "1e21",
}.items()}  # exact: a factor between two of them is the nearest float to the true ratio


def one_unit(units: Sequence[Any], url: str = "the OME-Zarr image") -> tuple[str | None, np.ndarray]:
    """The one unit of the space axes whose units are ``units`` (``None`` where an axis names
    none) and the factor converting each axis's values into it. Axes in several NGFF length
    units (z in micrometer, y and x in nanometer) are converted into the finest of them, as
    dropping the units would leave a z:y spacing ratio of 4 where it is 4000; other units
    mixed (a name not in NGFF's list, or no unit, beside two that differ) are refused."""
    units = [u if u is None or isinstance(u, str) else repr(u) for u in units]  # JSON of any kind
    named = {u for u in units if u is not None}
    if len(named) <= 1:
        return (named.pop() if named else None), np.ones(len(units))
    if None in units:  # which unit the bare axis is in cannot be told: as read before, unitless
        warnings.warn(
            f"OME-Zarr image {public_url(url)}: its space axes are in units {list(units)}: "
            "one names none, so they cannot be put in one unit; the spacing is read as written, "
            "in no unit (a ratio between axes in different units is then not the voxels' shape). "
            "Give every space axis its unit in the image's multiscales axes.",
            UserWarning, stacklevel=3)
        return None, np.ones(len(units))
    unknown = [str(u) for u in units if u not in LENGTH_UNITS]
    if unknown:
        raise UnsupportedFormatError(
            f"OME-Zarr image {public_url(url)}: its space axes are in units {list(units)}, which "
            f"cannot be converted into one (not an NGFF length unit: "
            f"{', '.join(map(repr, unknown))}); expected one unit for every space axis, or NGFF length units (e.g. "
            f"'micrometer', 'nanometer'). Give every space axis a unit from NGFF's list in the "
            "image's multiscales axes, or one unit for all.")
    finest = min(named, key=LENGTH_UNITS.__getitem__)
    return finest, np.array([float(LENGTH_UNITS[u] / LENGTH_UNITS[finest]) for u in units])


def channel_names(attrs: dict[str, Any], n: int) -> list[str] | None:
    """Channel labels from ``omero`` metadata, when there is one per channel."""
    omero = attrs.get("omero") or (attrs.get("ome") or {}).get("omero") or {}
    labels = [c.get("label") for c in omero.get("channels", [])]
    return [str(x) for x in labels] if len(labels) == n and all(labels) else None


def _axes(image: dict[str, Any]) -> list[dict[str, Any]]:
    axes = image.get("axes") or []
    return [a if isinstance(a, dict) else {"name": a, "type": _type_of(a)} for a in axes]


def _type_of(name: str) -> str:
    return {"t": "time", "c": "channel"}.get(name, "space")


def _scale_translation(image: dict[str, Any], level: int) -> tuple[list[float], list[float]]:
    n = len(_axes(image))
    scale, translation = _apply([1.0] * n, [0.0] * n,
                                image["datasets"][level].get("coordinateTransformations"),
                                f"level {level}'s")
    return _apply(scale, translation, image.get("coordinateTransformations"), "the image's")


def _apply(scale: list[float], translation: list[float], transforms: Any,
           whose: str) -> tuple[list[float], list[float]]:
    for tr in transforms or []:
        kind = tr.get("type") if isinstance(tr, dict) else None
        if kind == "scale":
            values = _values(tr, "scale", len(scale), whose)
            scale = [a * b for a, b in zip(scale, values)]
            translation = [a * b for a, b in zip(translation, values)]
        elif kind == "translation":
            translation = [a + b for a, b in zip(translation, _values(tr, "translation",
                                                                      len(scale), whose))]
    return scale, translation


def _values(transform: dict[str, Any], key: str, n: int, whose: str) -> list[float]:
    """A scale's or translation's values, one number per axis; a transform that names a file
    of them (``path``) or holds another count is refused, not cut short by ``zip``."""
    values = transform.get(key)
    if values is None and "path" in transform:
        raise UnsupportedFormatError(
            f"OME-Zarr {whose} {key} is given by path ({brief(transform['path'], 60)}); geoseg "
            f"reads {key}s written inline. Write its {n} values in the metadata.")
    if not (isinstance(values, list) and len(values) == n and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values)):
        raise CorruptInputError(
            f"OME-Zarr {whose} {key} is {brief(values, 60)}; expected {n} numbers, one per "
            f"axis. {_FIX}")
    return [float(v) for v in values]


def check_levels(image: dict[str, Any], shapes: dict[int, Sequence[int]],
                 axis_roles: Sequence[str], url: str) -> None:
    """Refuse levels whose array shapes (``shapes``, by level) disagree with their scales: a
    level is level 0's extent at its own scale, give or take a voxel of rounding. Labels and
    reads placed by the scales would land elsewhere than the voxels the arrays hold."""
    first = shapes.get(0)
    base, _ = _scale_translation(image, 0)
    for level, shape in shapes.items():
        if level == 0 or first is None:
            continue
        scale, _ = _scale_translation(image, level)
        expected = [first[i] * base[i] / scale[i] if scale[i] else first[i]
                    for i in range(len(shape))]
        if len(shape) != len(first) or any(
                r == SPACE and abs(n - e) > 1 for n, e, r in zip(shape, expected, axis_roles)):
            raise CorruptInputError(
                f"OME-Zarr image {public_url(url)}: level {level} holds {tuple(shape)} voxels, "
                f"but its scale makes level 0's {tuple(first)} about "
                f"{tuple(round(e, 1) for e in expected)} of them; expected its array to cover "
                f"the extent of level 0. {_FIX}")
