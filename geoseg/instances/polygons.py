"""One polygon feature per instance of a 2-D label raster, however many chunks it spans.

Each chunk is polygonised on its own (:func:`rasterio.features.shapes`, 4-connected) in
global pixel coordinates: the chunk's transform is a translation by its offset, so every
vertex is an exact integer and pieces of one instance cut by a chunk border share their
edges exactly. Pieces of the same id are then dissolved (:func:`shapely.union_all` of those
at chunk borders, only for ids with more than one piece) and the raster's affine transform is applied once, at the
end. An instance that is 8- but not 4-connected comes out as one MultiPolygon feature.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import warnings
from typing import IO, Any, Literal

import dask
import dask.array as da
import geopandas as gpd
import numpy as np
import pyogrio.errors
import rasterio.features
import shapely
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

from geoseg.errors import InstanceError
from geoseg.instances.table import (
    aligned_classes,
    check_ids,
    check_labels,
    chunk_offsets,
    delayed_partial,
    georef_or_none,
    majority_class,
    run_starts,
)
from geoseg.io import remote
from geoseg.io.files import write_whole
from geoseg.io.georef import GeoRef

FORMATS = ("geoparquet", "geojson")
FEATURE_ID = "geoseg_feature_id"  # a copy of "id", which GDAL takes out of the properties
log = logging.getLogger("geoseg.instances")
INT32_MIN, INT32_MAX = np.iinfo(np.int32).min, np.iinfo(np.int32).max


def chunk_pieces(block: np.ndarray, offset: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, polygons)``: each 4-connected part of each id in one chunk, in global pixel
    coordinates (``x`` = column, ``y`` = row, pixel corners at integers). A chunk without
    pixels (a zero-length chunk, an empty raster) has none, where GDAL refuses its size."""
    if block.size == 0:
        return np.zeros(0, np.uint64), np.empty(0, dtype=object)
    local, ids = _as_int32(block)
    transform = Affine.translation(offset[1], offset[0])
    with warnings.catch_warnings():  # the first chunk's transform is the identity
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        found = list(rasterio.features.shapes(local, mask=block > 0, transform=transform,
                                              connectivity=4))
    values = np.array([value for _, value in found], dtype=np.int64)
    geoms = _polygons([geom["coordinates"] for geom, _ in found])
    return (values if ids is None else ids[values]).astype(np.uint64), geoms


def _polygons(rings: list[list[list[tuple[float, float]]]]) -> np.ndarray:
    """Shapely polygons from GeoJSON-like ring lists, built in one vectorised call."""
    coords: list[tuple[float, float]] = []
    ring_ends, polygon_ends = [0], [0]
    for polygon in rings:
        for ring in polygon:
            coords.extend(ring)
            ring_ends.append(len(coords))
        polygon_ends.append(len(ring_ends) - 1)
    points = np.array(coords, dtype=np.float64).reshape(-1, 2)
    return shapely.from_ragged_array(shapely.GeometryType.POLYGON, points,
                                     (np.array(ring_ends), np.array(polygon_ends)))


def _as_int32(block: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The block as int32 (what GDAL polygonises) and, when its ids do not fit in int32, the
    id of each int32 value (``None`` when the values are the ids)."""
    if block.size == 0 or (INT32_MIN <= block.min() and block.max() <= INT32_MAX):
        return block.astype(np.int32), None
    ids, local = np.unique(block, return_inverse=True)
    return local.reshape(block.shape).astype(np.int32), ids


def dissolve(ids: np.ndarray, geoms: np.ndarray,
             chunks: tuple[tuple[int, ...], tuple[int, ...]]) -> tuple[np.ndarray, np.ndarray]:
    """One geometry per id (sorted by id): the union of its pieces that reach a border between
    ``chunks`` (rows, columns), where a piece of the next chunk may share its edge, beside its
    other pieces as they are. Pieces of one chunk touch at corners at most (each is a whole
    4-connected part), so only those need a union, whose cost grew faster than the pieces: an
    8-connected checkerboard of 512^2 pixels, one id of 131,072 pieces, took 45 s in one
    union of them all."""
    order = np.argsort(ids, kind="stable")
    ids, geoms = ids[order], geoms[order]
    starts = run_starts(ids)
    ends = np.append(starts[1:], ids.size)
    merged = geoms[starts]
    several = np.flatnonzero(ends - starts > 1)
    if several.size:
        cut = _at_chunk_borders(shapely.bounds(geoms), chunks)
        for k in several:
            merged[k] = _pieces_joined(geoms[starts[k]:ends[k]], cut[starts[k]:ends[k]])
    return ids[starts], merged


def _at_chunk_borders(bounds: np.ndarray, chunks: tuple[tuple[int, ...], tuple[int, ...]]
                      ) -> np.ndarray:
    """Whether each piece's ``bounds`` (minx, miny, maxx, maxy) reach a border between two
    chunks: a row or column line inside the raster where one chunk ends and the next begins."""
    rows, columns = (np.cumsum(c)[:-1] for c in chunks)
    return (np.isin(bounds[:, 0], columns) | np.isin(bounds[:, 2], columns)
            | np.isin(bounds[:, 1], rows) | np.isin(bounds[:, 3], rows))


def _pieces_joined(pieces: np.ndarray, cut: np.ndarray) -> Any:
    """The union of the ``cut`` pieces (those at chunk borders) and the others beside it."""
    if cut.all():
        return shapely.union_all(pieces)
    joined = shapely.get_parts(shapely.union_all(pieces[cut])) if cut.any() else []
    return shapely.multipolygons([*joined, *pieces[~cut]])


def to_map(geoms: np.ndarray, georef: GeoRef | None) -> np.ndarray:
    """Pixel-coordinate geometries placed by ``georef``'s transform (unchanged without one);
    exterior rings counter-clockwise, as GeoJSON asks."""
    transform = None if georef is None else georef.affine
    if transform is not None:
        geoms = shapely.transform(geoms, lambda xy: _affine(transform, xy))
    if hasattr(shapely, "orient_polygons"):  # shapely >= 2.1
        geoms = shapely.orient_polygons(geoms, exterior_cw=False)
    return geoms


def _affine(t: Affine, xy: np.ndarray) -> np.ndarray:
    """``t`` applied to ``(n, 2)`` points (faster than a matrix product with a 2 x 2)."""
    out = np.empty_like(xy)
    x, y = xy[:, 0], xy[:, 1]
    out[:, 0] = t.a * x + t.b * y + t.c
    out[:, 1] = t.d * x + t.e * y + t.f
    return out


def instance_polygons(labels: da.Array, georef: GeoRef | None, *,
                      classes: da.Array | None = None) -> gpd.GeoDataFrame:
    """Polygons of the instances of a 2-D label raster, one feature per id.

    Parameters
    ----------
    labels
        Instance ids ``(y, x)``, any integer dtype, up to 2**63 - 1 (the ``id`` column is
        int64); 0 (and negative values) is background.
    georef
        The raster's CRS and transform. ``None`` (or no transform) gives pixel coordinates:
        ``x`` = column, ``y`` = row, the raster's top-left corner at ``(0, 0)``.
    classes
        Class ids, same shape as ``labels``: adds ``class``, the most frequent class of the
        instance's pixels (ties go to the smallest class id).

    Returns
    -------
    geopandas.GeoDataFrame
        Sorted by id: ``id``, [``class``], ``area_px`` (pixels), ``geometry`` (Polygon, or
        MultiPolygon for an instance whose parts touch only at corners), in ``georef``'s CRS.
    """
    georef = georef_or_none(georef)
    labels = check_labels(labels, dims=(2,))
    classes = aligned_classes(classes, labels)
    blocks = labels.to_delayed().ravel()
    tasks = [dask.delayed(chunk_pieces)(block, offset)
             for block, offset in zip(blocks, chunk_offsets(labels.chunks))]
    partial = None if classes is None else delayed_partial(labels, classes, blocks=blocks)
    pieces, partial = dask.compute(tasks, partial)
    ids, geoms = dissolve(*_concatenated(pieces), labels.chunks)
    check_ids(ids)
    columns: dict[str, Any] = {"id": ids.astype(np.int64)}
    if partial is not None:
        columns["class"] = majority_class(partial)
    columns["area_px"] = np.rint(shapely.area(geoms)).astype(np.int64)
    crs = georef.crs_wkt if georef is not None and georef.transform is not None else None
    return gpd.GeoDataFrame(columns, geometry=to_map(geoms, georef), crs=crs)


def _concatenated(pieces: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.concatenate([np.zeros(0, np.uint64)] + [i for i, _ in pieces])
    geoms = np.concatenate([np.empty(0, dtype=object)] + [g for _, g in pieces])
    return ids, geoms


def write_polygons(polygons: gpd.GeoDataFrame, url: str,
                   format: Literal["geoparquet", "geojson"] = "geoparquet", *,
                   storage_options: dict[str, Any] | None = None) -> None:
    """Write instance polygons to a path or fsspec URL, replacing any file there.

    Parameters
    ----------
    polygons
        What :func:`instance_polygons` returned.
    url
        Where to write.
    format
        ``"geoparquet"`` (GeoParquet, in the raster's CRS, as PROJJSON in its metadata) or
        ``"geojson"``: a FeatureCollection as RFC 7946 asks, on WGS 84 (:func:`write_geojson`).
        Each feature's ``id`` is the instance id.
    storage_options
        Passed to fsspec.
    """
    if format not in FORMATS:
        raise InstanceError(f"Polygon format {format!r} is not one geoseg writes; choose one of "
                            f"{', '.join(FORMATS)}.")
    remote.check_writable(url)
    content = (functools.partial(polygons.to_parquet, index=False) if format == "geoparquet"
               else functools.partial(write_geojson, polygons))
    write_whole(url, content, storage_options=storage_options, what="Writing instance polygons")


def geojson_text(polygons: gpd.GeoDataFrame) -> str:
    """What :func:`write_geojson` writes, as text."""
    buffer = io.BytesIO()
    write_geojson(polygons, buffer)
    return buffer.getvalue().decode()


def write_geojson(polygons: gpd.GeoDataFrame, file: IO[bytes]) -> None:
    """A GeoJSON FeatureCollection of ``polygons`` into ``file``, each feature's ``id`` the
    instance id (also a property, which readers that drop feature ids keep).

    Georeferenced polygons are written as RFC 7946 asks: longitude and latitude on WGS 84,
    7 decimals (a precision of about 1 cm; the datum shift is PROJ's best), exterior rings
    counter-clockwise, a polygon crossing the antimeridian cut in two, so that web maps place
    them. A CRS GDAL cannot transform to WGS 84 (a local engineering one) keeps its own
    coordinates, named in the 2008 GeoJSON ``"crs"`` member (:func:`crs_member`); pixel
    coordinates (no CRS) have none.

    GDAL's GeoJSON driver writes the features in every case: the text is held as bytes (GDAL's
    copy and Python's for a moment), never parsed into Python objects."""
    text, crs = None, None
    if polygons.crs is not None:
        text, reason = _on_wgs84(polygons)
        if text is None:
            log.warning("polygons in CRS %s cannot be put on WGS 84 (%s): their GeoJSON keeps "
                        "that CRS, named in a \"crs\" member", polygons.crs.name, reason)
            crs = crs_member(polygons.crs)
    if text is None:
        text = _gdal_geojson(polygons.set_crs(None, allow_override=True), rfc7946=False)
    view = text.getbuffer()
    at = 0 if crs is None else _features_at(view)
    file.write(view[:at])
    if crs is not None:
        file.write(b'"crs": ' + json.dumps(crs).encode() + b",\n")
    file.write(view[at:])


def _on_wgs84(polygons: gpd.GeoDataFrame) -> tuple[io.BytesIO | None, str]:
    """``(text, "")``, RFC 7946's GeoJSON, or ``(None, why)`` where GDAL cannot transform the
    polygons' CRS to WGS 84 (GDAL says why in a warning, which then is not the caller's)."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", RuntimeWarning)
        try:
            text, failed = _gdal_geojson(polygons, rfc7946=True), None
        except (pyogrio.errors.DataLayerError, pyogrio.errors.DataSourceError) as exc:
            text, failed = None, exc
    gdal = [w for w in said if failed is not None and issubclass(w.category, RuntimeWarning)]
    for w in said:  # the others are the caller's, as they would have been
        if w not in gdal:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return text, "; ".join(str(w.message) for w in gdal) or str(failed or "")


def _gdal_geojson(polygons: gpd.GeoDataFrame, *, rfc7946: bool) -> io.BytesIO:
    """GDAL's GeoJSON of ``polygons``, the feature ids from their ``id`` column, which stays a
    property; coordinates to 7 decimals on WGS 84 (``rfc7946``), else 17 significant digits,
    which read back as the same doubles."""
    precision = {"RFC7946": "YES"} if rfc7946 else {"SIGNIFICANT_FIGURES": "17"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # pixel coordinates have no CRS by design
        warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
        polygons.assign(**{FEATURE_ID: polygons["id"]}).to_file(
            buffer, driver="GeoJSON", engine="pyogrio",
            layer_options={"ID_FIELD": FEATURE_ID, "WRITE_NAME": "NO", **precision})
    return buffer


def _features_at(text: memoryview) -> int:
    """Where the ``"features"`` member begins in GDAL's GeoJSON (its second member)."""
    at = bytes(text[:100]).find(b'"features"')
    if at < 0:
        raise InstanceError(f"GDAL's GeoJSON begins {bytes(text[:100])!r}, without the "
                            "\"features\" member geoseg expected there; please report this "
                            "with your GDAL version (pyogrio.__gdal_version_string__).")
    return at


def crs_member(crs: Any) -> dict[str, Any]:
    """The 2008 GeoJSON ``"crs"`` member: an OGC URN when ``crs`` has an authority code, else
    its WKT (as GDAL reads either)."""
    authority = crs.to_authority()
    name = crs.to_wkt() if authority is None else "urn:ogc:def:crs:{}::{}".format(*authority)
    return {"type": "name", "properties": {"name": name}}
