"""GeoZarr-style georeferencing attributes on a Zarr array or its group.

The Zarr conventions ``proj:`` and ``spatial:`` (zarr-conventions/geo-proj and
zarr-conventions/spatial) put the CRS and the grid in plain attributes:

- ``proj:code`` (``"EPSG:32618"``), ``proj:wkt2`` or ``proj:projjson`` (an object or its JSON);
- ``spatial:transform``: the affine ``[a, b, c, d, e, f]`` (rasterio's order; 9 values with the
  last row ``0, 0, 1`` are accepted) from ``(column, row)`` to ``(x, y)``, where
  ``spatial:registration`` is ``"pixel"`` (the default: ``(0, 0)`` is the corner of the first
  pixel) or ``"node"`` (``(0, 0)`` is its centre); ``spatial:transform_type`` other than
  ``"affine"`` is ignored;
- ``spatial:dimensions``: the names of the y and x (or z, y and x) dimensions, e.g. ``["Y", "X"]``.

Older drafts and STAC-like writers are read too: ``proj:epsg`` (an integer), ``proj:transform``,
and a ``geo`` mapping holding ``proj: {code, wkt2, projjson, transform, spatial_dimensions}``.
An array's own attributes win over its group's. A ``spatial_ref`` variable (CF, rioxarray)
still wins over all of these (see ``geoseg.io.readers``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import zarr

from geoseg.errors import UnsupportedFormatError
from geoseg.io.georef import GeoRef, checked_transform, parse_crs

_CRS_KEYS = ("wkt2", "projjson", "code", "epsg")


def geozarr_georef(
    array_attrs: dict[str, Any], group_attrs: dict[str, Any], nodata: Any = None
) -> GeoRef | None:
    """CRS and transform from GeoZarr-style attributes, or ``None`` when there are none."""
    crs = _crs(array_attrs) or _crs(group_attrs)
    transform = _transform(array_attrs) or _transform(group_attrs)
    if crs is None and transform is None:
        return None
    return GeoRef.from_crs(crs, transform, None if nodata is None else float(nodata))


def geozarr_dimension_names(
    arr: zarr.Array, group: zarr.Group | None, dims: Sequence[str | None] | None
) -> tuple[str | None, ...] | None:
    """``dims`` with the dimensions ``spatial:dimensions`` names renamed to z, y and x, so that an
    array with dimensions ``("band", "Y", "X")`` and ``spatial:dimensions: ["Y", "X"]`` reads."""
    named = _spatial_dimensions(dict(arr.attrs))
    if named is None and group is not None:
        named = _spatial_dimensions(dict(group.attrs))
    if named is None:
        return None if dims is None else tuple(dims)
    _check_spatial_dimensions(named, dims)
    rename = dict(zip(named, ("z", "y", "x")[-len(named) :]))
    return tuple(rename.get(d, d) if d is not None else None for d in dims)


def _check_spatial_dimensions(named: list[str], dims: Sequence[str | None] | None) -> None:
    """Refuse ``spatial:dimensions`` that do not name 2 or 3 distinct dimensions of the array:
    ignored, they would leave the array read in a default axis order it may not have."""
    if len(named) in (2, 3) and len(set(named)) == len(named) and dims and set(named) <= set(dims):
        return
    has = f"dimensions {tuple(dims)}" if dims else "no dimension names"
    raise UnsupportedFormatError(
        f"The Zarr attribute spatial:dimensions = {_short(named)} does not name the array's "
        f"spatial dimensions: the array has {has}. Expected the names of its y and x (or z, y "
        "and x) dimensions, each once, e.g. [\"Y\", \"X\"]. Fix the attribute "
        "(and the array's dimension names), or remove it.")


def _proj(attrs: dict[str, Any]) -> dict[str, Any]:
    """Convention keys without their prefix: ``proj:code`` and ``geo.proj.code`` give ``code``."""
    nested = attrs.get("geo", {}).get("proj", {}) if isinstance(attrs.get("geo"), dict) else {}
    flat = {k.removeprefix("proj:"): v for k, v in attrs.items() if k.startswith("proj:")}
    return {**(nested if isinstance(nested, dict) else {}), **flat}


def _crs(attrs: dict[str, Any]) -> str | None:
    """The CRS as WKT, from the first of wkt2, projjson, code and epsg that is set; several set
    to different CRSs are refused (which one the writer meant cannot be told)."""
    proj = _proj(attrs)
    keys = [k for k in _CRS_KEYS if proj.get(k) not in (None, "")]
    if not keys:
        return None
    found = {key: _parsed_crs(key, proj[key]) for key in keys}
    first = keys[0]
    other = next((k for k in keys[1:] if found[k] != found[first]), None)
    if other is not None:
        raise UnsupportedFormatError(
            f"The Zarr attributes proj:{first} = {_short(proj[first])} and proj:{other} = "
            f"{_short(proj[other])} name different CRSs; expected one CRS. Remove the attribute "
            "that is wrong (or make them agree).")
    return found[first].to_wkt()


def _parsed_crs(key: str, value: Any) -> Any:
    """The CRS the attribute ``proj:{key}`` holds, refused naming it when PROJ knows none."""
    text = (
        json.dumps(value)
        if isinstance(value, dict)
        else f"EPSG:{value}"
        if key == "epsg"
        else str(value)
    )
    try:
        return parse_crs(text)
    except ValueError as exc:  # CRSError, or rasterio's int() of "EPSG:abc" before PROJ is asked
        raise UnsupportedFormatError(
            f"The Zarr attribute proj:{key} = {_short(value)} is not a CRS PROJ knows ({exc}); "
            "expected an authority code such as 'EPSG:32618', WKT2 text or a PROJJSON object. Fix "
            "the attribute (or remove it to read the array without a CRS)."
        ) from None


def _transform(attrs: dict[str, Any]) -> tuple[float, ...] | None:
    """The affine (a, b, c, d, e, f) of pixel corners, from spatial:transform or proj:transform."""
    if attrs.get("spatial:transform") is not None:
        if attrs.get("spatial:transform_type", "affine") != "affine":
            return None
        affine = affine_attribute(attrs["spatial:transform"], "spatial:transform")
        return _node_to_pixel(affine) if _registration(attrs) == "node" else affine
    value = _proj(attrs).get("transform")
    return None if value is None else affine_attribute(value, "proj:transform")


def affine_attribute(value: Any, key: str) -> tuple[float, ...]:
    """The affine a Zarr attribute ``key`` holds, refused unless it is 6 (or 9) finite numbers
    of a non-singular transform."""
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) not in (6, 9) or (len(numbers) == 9 and numbers[6:] != [0.0, 0.0, 1.0]):
        raise UnsupportedFormatError(
            f"The Zarr attribute {key} = {_short(value)} is not an affine transform; expected 6 "
            "numbers [a, b, c, d, e, f] in rasterio's order (or 9, ending 0, 0, 1), e.g. "
            "[10.0, 0.0, 500000.0, 0.0, -10.0, 4500000.0]."
        )
    return checked_transform(numbers[:6], f"The Zarr attribute {key} = {_short(value)}")


def _registration(attrs: dict[str, Any]) -> str:
    """``spatial:registration``: ``"pixel"`` (the default) or ``"node"``; anything else is
    refused, since reading it as either would shift the grid by half a pixel unseen."""
    value = attrs.get("spatial:registration", "pixel")
    if value in ("pixel", "node"):
        return value
    raise UnsupportedFormatError(
        f"The Zarr attribute spatial:registration = {_short(value)} is not a registration; "
        "expected \"pixel\" (the transform places the first pixel's corner, the default) or "
        "\"node\" (its centre). Fix the attribute, or remove it for \"pixel\".")


def _node_to_pixel(affine: tuple[float, ...]) -> tuple[float, ...]:
    """A node-registered transform (origin at the first pixel's centre) moved to its corner."""
    a, b, c, d, e, f = affine
    return a, b, c - (a + b) / 2, d, e, f - (d + e) / 2


def _spatial_dimensions(attrs: dict[str, Any]) -> list[str] | None:
    names = attrs.get("spatial:dimensions") or _proj(attrs).get("spatial_dimensions")
    return [str(n) for n in names] if isinstance(names, list) and names else None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
