"""The instance stage of a job: instance labels, object table and polygons beside a class mask.

Reads a finished output's ``classes`` (a geoseg output group), and writes into
the same group::

    instances                 (y, x) or (z, y, x) uint32/uint64, 0 outside objects
    manifest_instances_sha256 one sha256 per instances chunk (:mod:`geoseg.io.stages`)
    instances.parquet         the object table
    polygons.parquet          GeoParquet, one feature per instance (2D outputs)
    polygons.geojson          the same as GeoJSON (RFC 7946: on WGS 84)

``attrs["geoseg"]["instances"]`` records the settings, the count, the files'
sha256 and ``status``: ``complete`` only once everything is written, so a
rerun with the same settings skips the stage and any other state redoes it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import dask.array as da
import numpy as np

from geoseg import budgets
from geoseg.core.classes import short_list
from geoseg.core.urls import public_url
from geoseg.errors import InstanceError, OutputExistsError
from geoseg.instances.components import label, stacked
from geoseg.instances.table import object_table, write_table
from geoseg.instances.watershed import decoded, distance_watershed
from geoseg.io.georef import GeoRef
from geoseg.io.output import INSTANCE_FILES, OutputTarget
from geoseg.io.stages import (
    file_sha256,
    file_url,
    lost_since_written,
    mark_stage,
    stage_record,
    store_hashed,
)

METHODS = ("auto", "components", "watershed", "decode")
FILES = INSTANCE_FILES
log = logging.getLogger("geoseg.instances")


@dataclass(frozen=True)
class InstanceSettings:
    """What the stage does; the job spec's ``instances`` section.

    ``method``: ``decode`` (an instance-aware model's interior and boundary
    classes, as its ``decoding`` declares), ``components`` (connected components
    of ``classes``), ``watershed`` (a distance-transform watershed of each of
    ``classes``), or ``auto``: ``decode`` when the model declares a decoding,
    else ``components``. ``classes``: class names or ids that are objects
    (default: every class but the nodata class; for ``decode`` the declared
    ones). ``halo``: pixels around each chunk a watershed sees (default 16 for
    ``decode``, 32 for ``watershed``, whatever the objects' size); a watershed
    equals the whole image's when the halo is at least the largest object's
    extent, and warns, naming that extent, when an object reached the edge of
    its window. ``halo`` and ``h`` do nothing for ``components`` (a warning says so).
    """

    method: str = "auto"
    classes: tuple[str | int, ...] | None = None
    connectivity: int = 1
    halo: int | None = None
    h: float = 2.0
    table: bool = True
    polygons: bool = True

    def record(self) -> dict[str, Any]:
        data = asdict(self)
        data["classes"] = None if self.classes is None else list(self.classes)
        return data


@dataclass(frozen=True)
class Route:
    """One way to objects: ``kind`` with class ids; ``decode`` also names interior and boundary."""

    kind: str
    classes: tuple[int, ...]
    interior: int | None = None
    boundary: tuple[int, ...] = ()


def routes(settings: InstanceSettings, class_names: Sequence[str], nodata_class: int | None,
           decoding: Sequence[dict[str, Any]] = (), *, ndim: int | None = None,
           background: int | None = None) -> list[Route]:
    """The routes ``settings`` ask for, with class names resolved to ids (pure).

    Every setting is checked here, before anything is computed or written: ``ndim`` (the
    mask's spatial axes, when known) bounds ``connectivity``. The default classes are every
    class but ``nodata_class``, ``background`` (a mask's 0 beside a declared nodata) and a
    class named ``background``: the ground objects stand on is no object."""
    method = check_settings(settings, ndim=ndim, decoding=decoding)
    if method == "decode":
        return _decode_routes(settings, class_names, decoding)
    ids = (_class_ids(settings.classes, class_names) if settings.classes is not None
           else tuple(i for i, name in enumerate(class_names)
                      if i not in (nodata_class, background) and name.lower() != "background"))
    if method == "components":
        return [Route("components", ids)]
    return [Route("watershed", (i,)) for i in ids]


def check_settings(settings: InstanceSettings, *, ndim: int | None = None,
                   decoding: Sequence[dict[str, Any]] = ()) -> str:
    """Refuse settings the stage would fail on only after its compute; returns the method
    ``auto`` resolves to."""
    if settings.method not in METHODS:
        raise InstanceError(f"instances.method: received {settings.method!r}; expected one of "
                            f"{', '.join(METHODS)}.")
    method = settings.method
    if method == "auto":
        method = "decode" if decoding else "components"
    most = 3 if ndim is None else ndim
    connectivity = settings.connectivity
    if isinstance(connectivity, bool) or not isinstance(connectivity, int) \
            or not 1 <= connectivity <= most:
        where = "" if ndim is None else f" for a {ndim}D mask"
        raise InstanceError(
            f"instances.connectivity: received {connectivity!r}; expected an integer from 1 "
            f"(faces only) to {most} (faces, edges and corners){where}. Give 1 or {most}.")
    halo = settings.halo
    if halo is not None:
        least = 1 if method == "watershed" else 0
        if isinstance(halo, bool) or not isinstance(halo, int) or halo < least:
            default = "" if method == "components" else f" ({16 if method == 'decode' else 32})"
            raise InstanceError(
                f"instances.halo: received {halo!r}; expected a whole number of pixels >= {least} "
                f"for method {method} (about the largest object's extent), or leave it out for "
                f"the default{default}.")
    h = settings.h
    if isinstance(h, bool) or not isinstance(h, (int, float)) or not math.isfinite(h) or h <= 0:
        raise InstanceError(
            f"instances.h: received {h!r}; expected a depth in pixels greater than 0 (default "
            "2.0): a larger h merges more maxima into one object.")
    if settings.classes is not None and len(settings.classes) == 0:
        raise InstanceError(
            "instances.classes: received an empty list; expected at least one class name or id. "
            "Leave it out for every class but nodata.")
    return method


def _decode_routes(settings: InstanceSettings, class_names: Sequence[str],
                   decoding: Sequence[dict[str, Any]]) -> list[Route]:
    if not decoding:
        raise InstanceError(
            "instances.method: decode needs a model that declares its instance decoding (interior "
            "and boundary classes, as builtin:demo-instances does); this output's model declares "
            "none. Use method components or watershed.")
    wanted = None if settings.classes is None else set(map(str, settings.classes))
    found = []
    for entry in decoding:
        if wanted is not None and entry["class"] not in wanted:
            continue
        interior, *boundary = _class_ids([entry["interior"], *_listed(entry["boundary"])],
                                         class_names)
        found.append(Route("decode", (interior, *boundary), interior, tuple(boundary)))
    return found


def _listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _class_ids(classes: Sequence[str | int], class_names: Sequence[str]) -> tuple[int, ...]:
    """The ids of ``classes`` (names or ids); every one that is no class is named at once."""
    names = list(class_names)
    ids, unknown = [], []
    for c in classes:
        if isinstance(c, int) and 0 <= c < len(names):
            ids.append(c)
        elif str(c) in names:
            ids.append(names.index(str(c)))
        else:
            unknown.append(c)
    if unknown:
        what = ", ".join(repr(c) for c in unknown)
        raise InstanceError(
            f"instances.classes: received {what}, which {'is' if len(unknown) == 1 else 'are'} "
            f"not a class of this output; expected {_expected_classes(names)}.")
    return tuple(ids)


def _expected_classes(names: list[str]) -> str:
    """What ``classes`` may name: the output's class names, or only ids when its classes are
    unnamed (a mask's ``"0"``, ``"1"``, ...: listing them would list made-up names)."""
    ids = f"an id from 0 to {len(names) - 1}"
    if all(name in (str(k), "nodata") for k, name in enumerate(names)):
        return f"{ids}: this mask has no class names, give class ids"
    return f"a name ({short_list(names)}) or {ids}"


def _halo(settings: InstanceSettings, kind: str) -> int:
    return settings.halo if settings.halo is not None else (16 if kind == "decode" else 32)


def keep_other_instances(target: OutputTarget, settings: InstanceSettings,
                         overwrite: bool) -> None:
    """Refuse to replace finished instances made with other settings unless ``overwrite``."""
    done = stage_record(target, "instances")
    before, now = done.get("settings") or {}, settings.record()
    if overwrite or done.get("status") != "complete" or before == now:
        return
    changed = settings_difference(before, now)
    raise OutputExistsError(
        f"{public_url(target.url)} already holds {done.get('count')} instance(s) made with other "
        f"settings ({changed}); nothing was changed. Pass --overwrite (overwrite=True) to "
        "replace them, or rerun with the same settings.")


def settings_difference(before: dict[str, Any], now: dict[str, Any]) -> str:
    """The keys whose values differ between the recorded settings and the requested ones, each
    as ``key old -> new``: keys only in the record (one an earlier or later version knows) are
    shown ``-> (not set)``, keys only requested ``(not set) -> new``."""
    def shown(settings: dict[str, Any], key: str) -> str:
        return repr(settings[key]) if key in settings else "(not set)"

    keys = [*now, *(k for k in before if k not in now)]
    return ", ".join(f"{k} {shown(before, k)} -> {shown(now, k)}" for k in keys
                     if (k in before, before.get(k)) != (k in now, now.get(k)))


def instance_labels(classes: da.Array, route_list: Sequence[Route],
                    settings: InstanceSettings) -> tuple[da.Array, int]:
    """Instance ids of ``classes`` by every route, numbered one after another from 1."""
    labels, count, _ = routed_labels(classes, route_list, settings)
    return labels, count


def routed_labels(classes: da.Array, route_list: Sequence[Route], settings: InstanceSettings
                  ) -> tuple[da.Array, int, list[tuple[int, int]]]:
    """:func:`instance_labels`, and for decoded objects their owners: (last id, interior class)
    per decoding, in id order. Decodings that share a class grow in one watershed
    (:func:`~geoseg.instances.watershed.decoded`): a later one would take the earlier one's
    shared outlines."""
    parts, owners, offset = [], [], 0
    for group in route_groups(route_list):
        route = group[0]
        if route.kind == "components":
            parts.append(label(classes, classes=route.classes, connectivity=settings.connectivity))
        elif route.kind == "watershed":
            parts.append(distance_watershed(classes == route.classes[0], h=settings.h,
                                            halo=_halo(settings, "watershed"),
                                            connectivity=settings.connectivity))
        else:
            labels, counts = decoded(classes, [(r.interior, r.boundary) for r in group],
                                     halo=_halo(settings, "decode"),
                                     connectivity=settings.connectivity)
            parts.append((labels, sum(counts)))
            last = offset
            for r, count in zip(group, counts):
                last += count
                owners.append((last, r.interior))
        offset += parts[-1][1]
    return (*stacked(parts, classes), owners)


def route_groups(route_list: Sequence[Route]) -> list[list[Route]]:
    """The routes in groups: decodings that share a class (directly or through another) in one,
    every other route alone; groups in the order of their first route."""
    groups: list[list[int]] = []
    for i, route in enumerate(route_list):
        joined = [g for g in groups if any(_share(route, route_list[j]) for j in g)]
        groups = [g for g in groups if all(g is not h for h in joined)]
        groups.append(sorted([*itertools.chain(*joined), i]))
    return [[route_list[j] for j in g] for g in sorted(groups)]


def _share(a: Route, b: Route) -> bool:
    return a.kind == b.kind == "decode" and bool(set(a.classes) & set(b.classes))


def object_classes(classes: da.Array, route_list: Sequence[Route], labels: da.Array | None = None,
                   owners: Sequence[tuple[int, int]] = ()) -> da.Array:
    """The class each pixel of an object counts for in its table and polygons (the most frequent
    one): a decode route's boundary pixels count for its interior class, as the object they
    outline is one of that class (a small building has more outline than inside). A boundary
    class decodings share counts, with ``labels`` and their ``owners``
    (:func:`routed_labels`), for the interior class of the object that took the pixel."""
    out = classes
    for route in route_list:
        if route.kind == "decode" and route.boundary:
            out = da.where(da.isin(classes, list(route.boundary)), classes.dtype.type(route.interior), out)
    shared = shared_boundary(route_list)
    if shared and labels is not None and owners:
        tops = np.array([last for last, _ in owners], dtype=np.uint64)
        interiors = np.array([interior for _, interior in owners], dtype=classes.dtype)
        owner = da.map_blocks(_owner_class, labels.rechunk(classes.chunks), tops, interiors,
                              dtype=classes.dtype)
        out = da.where(da.isin(classes, shared), owner, out)
    return out


def shared_boundary(route_list: Sequence[Route]) -> list[int]:
    """Boundary classes of more than one decode route."""
    listed = [b for r in route_list if r.kind == "decode" for b in set(r.boundary)]
    return sorted({b for b in listed if listed.count(b) > 1})


def _owner_class(labels: np.ndarray, tops: np.ndarray, interiors: np.ndarray) -> np.ndarray:
    """The interior class of each pixel's object: ids up to ``tops[i]`` are ``interiors[i]``'s."""
    index = np.searchsorted(tops, labels.astype(np.uint64), side="left")
    return interiors[np.minimum(index, tops.size - 1)]




@dataclass
class InstanceReport:
    """What the stage wrote: counts, seconds, files and their sha256."""

    count: int
    seconds: float
    routes: list[dict[str, Any]]
    files: dict[str, str] = field(default_factory=dict)
    skipped: bool = False

    def record(self) -> dict[str, Any]:
        return asdict(self)


def label_output(target: OutputTarget, settings: InstanceSettings, *,
                 georef: GeoRef | None = None, overwrite: bool = False) -> InstanceReport:
    """Run the instance stage on a written output group (skipped when already complete).

    Finished instances made with other settings are refused unless ``overwrite``; a stage
    that fails is recorded ``failed`` (with the error's type), never left ``running``."""
    attrs = target.attrs()
    done = stage_record(target, "instances")
    if done.get("status") == "complete" and done.get("settings") == settings.record():
        lost = lost_since_written(target, "instances")
        if not lost:
            return InstanceReport(done["count"], 0.0, done["routes"], done["files"], skipped=True)
        log.warning("%s: the instances written with these settings lost %s since they were written: "
                    "labelling again", public_url(target.url), short_list(lost))
    classes = stored_array(target, "classes")
    route_list = routes(settings, attrs["class_names"], attrs.get("nodata_class"),
                        attrs.get("instances_decoding", ()), ndim=classes.ndim,
                        background=attrs.get("background_class"))
    keep_other_instances(target, settings, overwrite)
    warn_ignored(settings, route_list)
    t0 = time.perf_counter()
    mark_stage(target, "instances", {"status": "running", "settings": settings.record()})
    try:
        return _label(target, settings, classes, route_list, georef, t0)
    except BaseException as exc:
        with contextlib.suppress(Exception):  # the store itself may be what failed
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            mark_stage(target, "instances", {"status": status, "settings": settings.record(),
                                             "error": type(exc).__name__})
        raise


def warn_ignored(settings: InstanceSettings, route_list: Sequence[Route]) -> None:
    """Say that ``halo`` and ``h`` do nothing for connected components (they shape a watershed),
    rather than let a user believe they took effect."""
    if not route_list or any(r.kind != "components" for r in route_list):
        return
    given = [f"{name} {value!r}" for name, value, default in
             (("halo", settings.halo, None), ("h", settings.h, 2.0)) if value != default]
    if given:
        log.warning("instances: %s apply to method watershed (and halo to decode) only; method "
                    "components ignores them. Leave them out, or use --method watershed.",
                    " and ".join(given))


def warn_absent(classes: da.Array, settings: InstanceSettings, route_list: Sequence[Route],
                class_names: Sequence[str]) -> None:
    """Warn about classes asked for by name or id that no pixel has: they give no objects,
    which a mistyped id would otherwise give silently (one pass over the classes, only when
    ``classes`` were given)."""
    if settings.classes is None:
        return
    asked = sorted({c for r in route_list for c in r.classes})
    # unoptimized, as the labelling passes after it build their graphs: the same keys, the
    # same tasks (an optimized graph would alias them, and the scheduler warns of the change)
    present = set(da.unique(classes).compute(optimize_graph=False).tolist()) if asked else set()
    absent = [c for c in asked if c not in present]
    if absent:
        shown = ", ".join(f"{c} ({class_names[c]!r})" if class_names[c] != str(c) else str(c)
                          for c in absent)
        log.warning("instances.classes: no pixel of class %s was found in the mask; %s no "
                    "objects. Check the class ids (geoseg info) or leave --classes out.",
                    shown, "it gives" if len(absent) == 1 else "they give")


def stored_array(target: OutputTarget, name: str) -> da.Array:
    """The output's array ``name`` (``classes``: its spatial axes; ``probabilities``: class
    first), lazily, one task per stored chunk. Each chunk is read through the output's raster
    source, as ``geoseg export`` reads it: a chunk that does not decode raises
    :class:`~geoseg.errors.CorruptInputError` naming the window and the chunk's storage key."""
    from geoseg.io.readers import open_source, source_to_dataarray

    source = open_source(target.url, target.storage_options, variable=name)
    data = source_to_dataarray(source, chunks=source.chunks).data
    return data[0] if name == "classes" else data


def _label(target: OutputTarget, settings: InstanceSettings, classes: da.Array,
           route_list: list[Route], georef: GeoRef | None, t0: float) -> InstanceReport:
    _remove_files(target)  # none of the last labels' files may stay beside the new labels
    warn_absent(classes, settings, route_list, target.attrs()["class_names"])
    labels, count, owners = routed_labels(classes, route_list, settings)
    hashes = store_hashed(target, "instances", labels)
    stored = da.from_zarr(target.open_group(mode="r")["instances"])
    files = _write_files(target, stored, count, object_classes(classes, route_list, stored, owners),
                         settings, georef)
    report = InstanceReport(count, time.perf_counter() - t0, [asdict(r) for r in route_list],
                            files)
    mark_stage(target, "instances", {"status": "complete", "settings": settings.record(), "count": count,
                   "routes": report.routes, "files": files, "chunks_sha256": hashes})
    return report


def _remove_files(target: OutputTarget) -> None:
    """Delete the table and polygon files an earlier instance stage wrote."""
    import fsspec

    for name in FILES.values():
        fs, path = fsspec.core.url_to_fs(file_url(target, name), **(target.storage_options or {}))
        if fs.exists(path):
            fs.rm(path)


def _write_files(target: OutputTarget, labels: da.Array, count: int, classes: da.Array,
                 settings: InstanceSettings, georef: GeoRef | None) -> dict[str, str]:
    """Table and polygons beside the arrays; returns each file's sha256 by name."""
    written = []
    if settings.table or (settings.polygons and labels.ndim == 2):
        budgets.check_objects(count, f"{public_url(target.url)}'s instances")
    group = target.open_group(mode="r")
    if settings.table:
        probabilities = stored_array(target, "probabilities") if "probabilities" in group else None
        table = object_table(labels, count=count, classes=classes, probabilities=probabilities,
                             georef=georef)
        write_table(table, file_url(target, FILES["table"]), storage_options=target.storage_options)
        written.append("table")
    if settings.polygons and labels.ndim == 2:
        # geopandas and shapely load only here: jobs without polygons run where they are absent
        from geoseg.instances.polygons import instance_polygons, write_polygons

        polygons = instance_polygons(labels, georef, classes=classes)
        for name, fmt in (("polygons", "geoparquet"), ("geojson", "geojson")):
            write_polygons(polygons, file_url(target, FILES[name]), fmt,
                           storage_options=target.storage_options)
            written.append(name)
    return {FILES[name]: file_sha256(file_url(target, FILES[name]), target.storage_options)
            for name in written}
