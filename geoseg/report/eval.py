"""Score a segmentation against reference labels at raster scale, chunk by chunk.

Semantic scores come from one confusion matrix summed over chunks
(:func:`geoseg.metrics.confusion_matrix_dask`: a small matrix per chunk pair, tree-summed),
never from a whole array in memory. Both label sets are first mapped into one list of
scored classes (:class:`ClassMap`): reference pixels whose label is ignored, or where either
side holds its nodata value, are not scored; a predicted label outside the list counts as
wrong (the matrix's last column, ``other``).

Instance scores match objects across the whole raster: each chunk reports its objects'
areas and the overlaps of (reference, predicted) object pairs; the tables are merged in a
tree and matched by :mod:`geoseg.instances.panoptic` (PQ, SQ, RQ, TP/FP/FN per class and
IoU threshold), so an object split by chunk borders is scored whole.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dask
import dask.array as da
import numpy as np

from geoseg.core.classes import is_label_dtype, repeated_names
from geoseg.core.text import json_kind
from geoseg.core.urls import public_url
from geoseg.errors import EvaluationError
from geoseg.instances.panoptic import DEFAULT_THRESHOLDS, _Overlaps, _Side
from geoseg.io.georef import GeoRef, grid_difference
from geoseg.metrics import confusion_matrix_dask, dice_per_class, iou_per_class

if TYPE_CHECKING:
    from geoseg.io.output import OutputTarget
    from geoseg.io.readers import RasterSource

log = logging.getLogger("geoseg.report")

__all__ = ["ClassMap", "Labels", "check_grid", "confusion", "evaluate", "instance_scores",
           "open_labels", "region_slices", "scores", "scores_problem"]


@dataclass(frozen=True)
class ClassMap:
    """The scored classes (``names``, in matrix order) and how each side's labels map to them."""

    names: tuple[str, ...]
    ref: dict[int, int]
    pred: dict[int, int]

    @property
    def other(self) -> int:
        """Column of predicted labels outside the scored classes."""
        return len(self.names)

    @property
    def dropped(self) -> int:
        """Value of pixels that are not scored (out of the matrix's range)."""
        return len(self.names) + 1

    @classmethod
    def build(cls, pred_names: Sequence[str] | None, ref_names: Sequence[str] | None,
              n_ids: int, mapping: dict[int, int] | None = None, *,
              ids: Sequence[int] | None = None) -> ClassMap:
        """Classes named by the prediction (else the reference, else the label ``ids`` found,
        else ids ``0..n_ids-1``).

        Reference labels map by ``mapping`` (reference id -> predicted id) when given, else by
        name when both sides name their classes (reference-only names become extra classes,
        scored 0 where predicted never), else by id. A ``mapping`` leaves the ids it does not
        name as they are: each scored class's id stays that class."""
        named = pred_names or ref_names
        if named:
            ids = range(len(named))
        elif ids is None:
            ids = range(n_ids)
        ids = [int(i) for i in ids]
        names = list(named) if named else [str(i) for i in ids]
        pred = {v: k for k, v in enumerate(ids)}
        if mapping:
            ref = {v: pred[mapping.get(v, v)] for v in set(ids) | set(mapping)
                   if mapping.get(v, v) in pred}
        elif pred_names and ref_names and list(pred_names) != list(ref_names):
            for name in ref_names:
                if name not in names:
                    names.append(name)
            ref = {i: names.index(name) for i, name in enumerate(ref_names)}
        else:
            ref = dict(pred)
        return cls(tuple(names), ref, pred)

    def without(self, ignored: Sequence[int]) -> ClassMap:
        """The classes less those only ignored reference labels map to: never in the reference's
        scored pixels, they are no class to score (a prediction of one counts as ``other``)."""
        ignored = {int(i) for i in ignored}
        kept_by_ref = {c for v, c in self.ref.items() if v not in ignored}
        gone = {c for v, c in self.ref.items() if v in ignored} - kept_by_ref
        if not gone:
            return self
        keep = [c for c in range(len(self.names)) if c not in gone]
        index = {c: k for k, c in enumerate(keep)}
        return ClassMap(tuple(self.names[c] for c in keep),
                        {v: index[c] for v, c in self.ref.items() if c in index},
                        {v: index[c] for v, c in self.pred.items() if c in index})


@dataclass(frozen=True)
class Labels:
    """A lazily read label raster: its dask array and what its store says about it."""

    data: da.Array
    names: tuple[str, ...] | None = None
    nodata: int | None = None
    transform: tuple[float, ...] | None = None
    url: str = ""
    colors: tuple[tuple[int, ...], ...] | None = field(default=None, repr=False)
    source: RasterSource | None = field(default=None, repr=False, compare=False)  # as opened


def open_labels(url: str, variable: str | None = None,
                storage_options: dict[str, Any] | None = None) -> Labels:
    """One band of integer labels: a geoseg output's ``classes`` (unless ``variable`` says
    otherwise), a ``geoseg convert`` output's ``raster``, a Zarr array or any single-band
    raster geoseg reads. Only a segmentation output (one with a manifest) is checked for lost
    chunks."""
    from geoseg.io.output import MANIFEST_DONE, OutputTarget, being_removed, half_deleted
    from geoseg.io.readers import open_source, source_to_dataarray

    target = OutputTarget(url, dict(storage_options or {}))
    attrs = target.attrs()
    if being_removed(attrs):  # its lost chunks would read as no-data
        raise EvaluationError(half_deleted(url, "nothing was scored"))
    arrays = _group_arrays(target) if attrs else set()
    if attrs.get("status") == "complete" and MANIFEST_DONE in arrays:
        from geoseg.io.integrity import damage  # a lost chunk would read as no-data

        problem = damage(target, attrs, "nothing was scored")
        if problem:
            raise EvaluationError(problem)
    if "classes" in arrays and variable is None:  # a segmentation output, not `geoseg convert`'s
        variable = "classes"
    source = open_source(url, storage_options, variable=variable)
    if source.shape[0] != 1 or not is_label_dtype(source.dtype):
        raise _not_labels(url, source)
    names = attrs.get("class_names") or _stored_names(source, variable, storage_options)
    nodata = attrs.get("nodata_class", source.georef.nodata)
    colors = attrs.get("class_colors")
    data = source_to_dataarray(source).data[0]
    return Labels(data.astype(np.uint8) if data.dtype == bool else data, tuple(names) if names else None,
                  None if nodata is None else int(nodata), source.georef.transform, url,
                  tuple(tuple(c) for c in colors) if colors else None, source)


def _group_arrays(target: OutputTarget) -> set[str]:
    """Names of the arrays in the Zarr group at ``target``: a segmentation output holds
    ``classes`` and its manifest, a ``geoseg convert`` output (or any plain Zarr) neither."""
    try:
        return set(target.open_group(mode="r").array_keys())
    except Exception:  # noqa: BLE001 - no group to list: not an output either
        return set()


def _stored_names(source: RasterSource, variable: str | None,
                  storage_options: dict[str, Any] | None) -> tuple[str, ...] | None:
    """Class names stored with labels: the tags of a COG ``geoseg export`` wrote, a Zarr array's
    ``class_names`` attribute."""
    if source.format == "geotiff":
        from geoseg.io.exports.cog import read_class_names

        return read_class_names(source)
    return _array_attr(source.url, variable, "class_names", storage_options)


def _array_attr(url: str, variable: str | None, key: str,
                storage_options: dict[str, Any] | None) -> Any:
    """An attribute of a Zarr array (``None`` for anything else)."""
    import zarr

    try:
        node = zarr.open(url, mode="r", storage_options=storage_options or None)
        if variable is not None:
            node = node[variable]
        return node.attrs.get(key)
    except Exception:  # noqa: BLE001 - not Zarr, or no such attribute: nothing to say
        return None


def region_slices(shape: Sequence[int], *, window: Sequence[int] | None = None,
                  bbox: Sequence[float] | None = None,
                  transform: Sequence[float] | None = None,
                  crs_wkt: str | None = None) -> tuple[slice, ...]:
    """The pixels to score: a ``window`` ``(row0, row1, col0, col1)``, or a ``bbox``
    ``(minx, miny, maxx, maxy)`` in the raster's CRS (needs its ``transform``; ``crs_wkt``
    names the CRS in errors), clipped to the raster; all without."""
    if window is not None and bbox is not None:
        raise EvaluationError("received both a window and a bbox; expected one of them.")
    full = tuple(slice(0, n) for n in shape)
    if bbox is not None:
        return (*full[:-2], *_bbox_slices(bbox, tuple(shape[-2:]), transform, crs_wkt))
    if window is None:
        return full
    r0, r1, c0, c1 = (int(v) for v in window)
    rows, cols = shape[-2:]
    if not (0 <= r0 < r1 <= rows and 0 <= c0 < c1 <= cols):
        raise EvaluationError(
            f"region: window rows {r0}:{r1}, cols {c0}:{c1} is empty or outside the raster of "
            f"{rows} x {cols} pixels; give 0 <= row0 < row1 <= {rows} and 0 <= col0 < col1 <= {cols}.")
    return (*full[:-2], slice(r0, r1), slice(c0, c1))


def _bbox_slices(bbox: Sequence[float], size: tuple[int, int], transform: Sequence[float] | None,
                 crs_wkt: str | None) -> tuple[slice, slice]:
    """The rows and columns of the pixels ``bbox`` touches, clipped to a raster of ``size``;
    an error naming the bbox, the CRS and the raster's bounds where it touches none."""
    if transform is None:
        raise EvaluationError("region: a bbox needs a georeferenced raster; this one has no "
                              "transform. Give a pixel window instead.")
    from affine import Affine

    inverse = ~Affine(*transform[:6])
    minx, miny, maxx, maxy = bbox
    xs, ys = zip(*(inverse @ (x, y) for x in (minx, maxx) for y in (miny, maxy)))
    rows, cols = size
    r0, r1 = max(0, math.floor(min(ys))), min(rows, math.ceil(max(ys)))
    c0, c1 = max(0, math.floor(min(xs))), min(cols, math.ceil(max(xs)))
    if r0 < r1 and c0 < c1:
        return slice(r0, r1), slice(c0, c1)
    raise EvaluationError(_bbox_outside(bbox, size, transform, crs_wkt))


def _bbox_outside(bbox: Sequence[float], size: tuple[int, int], transform: Sequence[float],
                  crs_wkt: str | None) -> str:
    """Why ``bbox`` selects no pixel: what was received, the raster's CRS and bounds, the fix."""
    from affine import Affine

    forward = Affine(*transform[:6])
    rows, cols = size
    xs, ys = zip(*(forward @ (c, r) for c in (0, cols) for r in (0, rows)))
    bounds = ",".join(f"{v:.10g}" for v in (min(xs), min(ys), max(xs), max(ys)))
    crs, geographic = _crs_text(crs_wkt)
    lonlat = all(-180 <= x <= 180 for x in bbox[::2]) and all(-90 <= y <= 90 for y in bbox[1::2])
    hint = (" It looks like longitude/latitude: transform it to the raster's CRS first (e.g. "
            f"gdaltransform -s_srs EPSG:4326 -t_srs {crs}).")
    return (f"region: the bbox minx,miny,maxx,maxy {','.join(f'{v:.10g}' for v in bbox)} does not "
            f"overlap the raster: its CRS is {crs} and its bounds in that CRS are {bounds} "
            f"(minx,miny,maxx,maxy). A bbox must be in the raster's CRS; give one that overlaps "
            f"those bounds.{hint if lonlat and not geographic else ''}")


def _crs_text(crs_wkt: str | None) -> tuple[str, bool]:
    """A short name of a CRS (``EPSG:32618``, else the start of its WKT) and whether it is
    geographic (longitude/latitude)."""
    if not crs_wkt:
        return "unknown (the raster names none)", False
    from rasterio.crs import CRS

    crs = CRS.from_wkt(crs_wkt)
    name = crs.to_string() if crs.to_epsg() else crs_wkt[:80] + "..."
    return name, bool(crs.is_geographic)


def _not_labels(url: str, source: Any) -> EvaluationError:
    """The refusal of a raster that is not one band of integer labels, with the fix for its kind."""
    received = (f"{public_url(url)}: received {source.shape[0]} band(s) of {source.dtype}; "
                "expected one band of integer labels.")
    if source.format in ("zarr", "ome-zarr"):
        return EvaluationError(f"{received} Name the label array with --pred-variable / --ref-variable.")
    if source.shape[0] == 1 and np.issubdtype(np.dtype(source.dtype), np.floating):
        return EvaluationError(
            f"{received} A mask stored as floating point (common for NIfTI masks) is not read as "
            "labels: save it with an integer dtype, e.g. with nibabel: img = nibabel.load(NAME); "
            "img.set_data_dtype(numpy.uint8); nibabel.save(img, 'mask.nii') (rasterio: "
            "dtype='uint8'), then give that file.")
    return EvaluationError(f"{received} Give a single-band label raster (or select one band).")


def check_grid(pred: Labels, ref: Labels) -> None:
    """Refuse a reference off the prediction's pixel grid (shape, transform, CRS, a volume's voxel
    affine; labels without a georeference on shape alone). Labels not opened by
    :func:`open_labels` are left to :func:`confusion`'s shape check."""
    if pred.source is None or ref.source is None:
        return
    differs = grid_difference(ref.source.shape[1:], ref.source.georef, pred.source.shape[1:],
                              pred.source.georef)
    if not differs:
        return
    georefs = (ref.source.georef, pred.source.georef)
    kind = "voxel" if any(g.voxel_affine is not None for g in georefs) else "pixel"
    raise EvaluationError(
        f"REF {ref.url} is not on the {kind} grid of PRED {pred.url} ({differs}, REF's first); "
        f"the scores compare {kind} with {kind}. "
        f"{_VOLUME_ADVICE + _unit_grid_hint(georefs) if kind == 'voxel' else _IMAGE_ADVICE}")


def _unit_grid_hint(georefs: Sequence[GeoRef]) -> str:
    """Where a side is on the grid geoseg gives a Zarr volume that names none, how to name one."""
    if not any(g.voxel_affine == GeoRef.from_axis_scales((1, 1, 1)).voxel_affine for g in georefs):
        return ""
    return (" A Zarr volume without voxel_affine or spacing attributes is read at spacing 1 from "
            "origin 0: if one side is such an array, give it the other's voxel_affine attribute.")


_IMAGE_ADVICE = ("Resample REF onto PRED's grid first (gdalwarp -r near, with PRED's CRS, extent "
                 "and resolution as gdalinfo shows them).")
_VOLUME_ADVICE = ("Resample REF onto PRED's voxel grid first with nearest neighbour, e.g. "
                  "nibabel.processing.resample_from_to(ref_img, pred_img, order=0) with PRED's "
                  "input volume (or `geoseg export PRED --nifti`) as the target; "
                  "`geoseg info` shows each side's voxel affine.")


def _remap(block: np.ndarray, table: dict[int, int], default: int) -> np.ndarray:
    """``table[v]`` for every value ``v`` of ``block``, ``default`` where it has none. Values
    are compared in the block's own integers (uint64 ids from 2**63 on would wrap as int64)."""
    wide = np.uint64 if block.dtype == np.uint64 else np.int64
    fits = sorted(k for k in table if np.iinfo(wide).min <= k <= np.iinfo(wide).max)
    keys = np.array(fits, dtype=wide)
    values = np.array([table[k] for k in fits], dtype=np.int64)
    flat = block.astype(wide, copy=False)
    at = np.clip(np.searchsorted(keys, flat), 0, max(len(keys) - 1, 0))
    hit = (keys[at] == flat) if len(keys) else np.zeros(flat.shape, bool)
    return np.where(hit, values[at] if len(keys) else default, default)


def _mapped_block(ref: np.ndarray, pred: np.ndarray, cmap: ClassMap, ignore: tuple[int, ...],
                  nodata: tuple[int | None, int | None], side: str) -> np.ndarray:
    """One side of a chunk in class indexes; unscored pixels get ``cmap.dropped``."""
    drop = np.isin(ref, ignore) if ignore else np.zeros(ref.shape, bool)
    if nodata[0] is not None:
        drop |= ref == nodata[0]
    if nodata[1] is not None:
        drop |= pred == nodata[1]
    if side == "ref":
        mapped = _remap(ref, cmap.ref, cmap.dropped)
    else:
        mapped = _remap(pred, cmap.pred, cmap.other)
    return np.where(drop, cmap.dropped, mapped)


def _mapped(ref: da.Array, pred: da.Array, cmap: ClassMap, ignore: tuple[int, ...],
            nodata: tuple[int | None, int | None]) -> tuple[da.Array, da.Array]:
    pred = pred.rechunk(ref.chunks)
    return tuple(da.map_blocks(_mapped_block, ref, pred, cmap=cmap, ignore=ignore, nodata=nodata,
                               side=side, dtype=np.int64) for side in ("ref", "pred"))


MAX_CLASSES = 2048  # rows of a confusion matrix: 32 MiB of counts per chunk pair


def confusion(ref: da.Array, pred: da.Array, cmap: ClassMap, *, ignore: Sequence[int] = (),
              nodata: tuple[int | None, int | None] = (None, None)) -> np.ndarray:
    """The ``(K+1, K+1)`` confusion matrix (reference rows, predicted columns) of ``K`` scored
    classes plus ``other`` (predicted labels outside them), summed over chunks.

    ``ignore``: reference labels not scored; ``nodata``: (reference, predicted) nodata values,
    pixels holding either are not scored."""
    if ref.shape != pred.shape:
        raise EvaluationError(f"the prediction has shape {pred.shape} but the reference has "
                              f"{ref.shape}; both must lie on one pixel grid. Crop or resample first.")
    if cmap.other + 1 > MAX_CLASSES:
        raise _too_many(f"{cmap.other:,}")
    t, p = _mapped(ref, pred, cmap, tuple(int(i) for i in ignore), nodata)
    return confusion_matrix_dask(t, p, cmap.other + 1)


def _too_many(count: str) -> EvaluationError:
    """The refusal of ``count`` classes, more than a confusion matrix of :data:`MAX_CLASSES`
    rows holds."""
    return EvaluationError(
        f"received labels of {count} classes to score; expected at most {MAX_CLASSES - 1:,}: "
        "each chunk's confusion matrix holds (classes + 1)^2 counts. For object ids (one per "
        "instance) score them with --instances; otherwise merge classes with --map.")


def scores(matrix: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Per-class IoU, Dice/F1, precision, recall; overall accuracy, mIoU, frequency-weighted IoU.
    ``None`` where a class is absent from both sides (or a ratio has no denominator)."""
    k = len(names)
    tp = np.diag(matrix)[:k].astype(np.float64)
    ref_total, pred_total = matrix.sum(1)[:k], matrix.sum(0)[:k]
    total = int(matrix.sum())
    iou = iou_per_class(matrix)[:k]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(pred_total > 0, tp / pred_total, np.nan)
        recall = np.where(ref_total > 0, tp / ref_total, np.nan)
    present = ~np.isnan(iou)
    per_class = {name: {"iou": _num(iou[i]), "dice": _num(dice_per_class(matrix)[i]),
                        "f1": _num(dice_per_class(matrix)[i]), "precision": _num(precision[i]),
                        "recall": _num(recall[i]), "support": int(ref_total[i]),
                        "predicted": int(pred_total[i])} for i, name in enumerate(names)}
    return {
        "classes": list(names), "pixels_scored": total,
        "overall_accuracy": _num(tp.sum() / total) if total else None,
        "miou": _num(iou[present].mean()) if present.any() else None,
        "fwiou": _num((ref_total[present] * iou[present]).sum() / total) if total else None,
        "predicted_other": int(matrix[:, k].sum()) if matrix.shape[0] > k else 0,
        "per_class": per_class, "confusion": matrix[:k, :k].astype(np.int64).tolist(),
    }


SCORED = ("iou", "dice", "precision", "recall")  # per class: a number, or null where undefined


def scores_problem(found: Any) -> str | None:
    """What makes ``found`` unlike the scores :func:`scores` computes (as ``geoseg eval --json``
    writes them), in words; ``None`` when it is like them. A report draws what it reads."""
    if not isinstance(found, dict):
        return f"{json_kind(found)}, not an object"
    names = found.get("classes")
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        return "classes that are not a list of class names"
    if len(set(names)) != len(names):
        return "classes naming one class twice"
    per = found.get("per_class")
    if not isinstance(per, dict) or set(per) - set(names):
        return "per_class that is not an object of the classes' scores"
    for name, row in per.items():
        if not (isinstance(row, dict) and all(_score_value(row.get(k)) for k in SCORED)
                and _whole(row.get("support"))):
            return (f"per_class {name!r} without {', '.join(SCORED)} (numbers or null) and "
                    "support (a whole number)")
    matrix = found.get("confusion")
    if not (isinstance(matrix, list) and len(matrix) == len(names)
            and all(isinstance(r, list) and len(r) == len(names) and all(map(_whole, r))
                    for r in matrix)):
        return (f"confusion that is not {len(names)} rows of {len(names)} whole numbers >= 0, "
                "one per class")
    return None


def _score_value(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool)
                             and math.isfinite(value))


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _num(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 6)


def evaluate(pred: Labels, ref: Labels, *, ignore: Sequence[int] = (),
             mapping: dict[int, int] | None = None, window: Sequence[int] | None = None,
             bbox: Sequence[float] | None = None,
             instances: tuple[Labels, Labels] | None = None) -> dict[str, Any]:
    """Semantic scores of ``pred`` against ``ref`` over the whole raster or a region; with
    ``instances`` (predicted, reference instance labels), instance scores too."""
    check_grid(pred, ref)
    for labels in (pred, ref):
        _check_names(labels)
    region = region_slices(ref.data.shape, window=window, bbox=bbox,
                           transform=ref.transform or pred.transform, crs_wkt=_crs_wkt(ref, pred))
    r, p = ref.data[region], pred.data[region]
    ignored = tuple(int(i) for i in ignore)
    unscored = ignored + (() if ref.nodata is None else (ref.nodata,))
    ids = None
    if not (pred.names or ref.names):  # the labels found, never a no-data value or ignored one
        pred_ids, ref_ids = dask.compute(
            _values(p, () if pred.nodata is None else (pred.nodata,)), _values(r, unscored))
        if max(len(pred_ids), len(ref_ids)) >= MAX_CLASSES:  # each cut there: at least so many
            raise _too_many(f"at least {MAX_CLASSES:,}")
        ids = sorted(set(pred_ids.tolist())
                     | {int((mapping or {}).get(v, v)) for v in ref_ids.tolist()})
    _check_mapping(pred, ref, mapping, None if ids is None else (pred_ids, ref_ids))
    _warn_disjoint_names(pred, ref, mapping)
    cmap = ClassMap.build(pred.names, ref.names, 0, mapping, ids=ids).without(unscored)
    matrix = confusion(r, p, cmap, ignore=ignored, nodata=(ref.nodata, pred.nodata))
    if not matrix.sum():
        where = "" if region == tuple(slice(0, n) for n in ref.data.shape) else " in the region"
        raise EvaluationError(
            f"nothing to score: every reference pixel{where} of {ref.url} is no-data "
            f"({ref.nodata}) or an ignored label ({list(ignored) or 'none'}), or the prediction "
            f"{pred.url} holds its no-data ({pred.nodata}) there; expected reference labels to "
            "score against. Check REF (and --ref-variable), --ignore, --window / --bbox.")
    found = scores(matrix, cmap.names)
    found["region"] = [[s.start, s.stop] for s in region]
    found["ignored_labels"] = sorted(int(i) for i in ignore)
    found["nodata"] = {"reference": ref.nodata, "prediction": pred.nodata}
    if instances is not None:
        t, p = _mapped(r, p, cmap, ignored, (ref.nodata, pred.nodata))
        found["instances"] = _instance_summary(instance_scores(
            instances[1].data[region], instances[0].data[region], ref_classes=t, pred_classes=p,
            valid=t != cmap.dropped), cmap.names)
    return found


def _check_names(labels: Labels) -> None:
    """Refuse class names given twice: scores are keyed by name, so one class's row hid the
    other's while the mIoU counted both."""
    twice = sorted(repeated_names(list(labels.names or ())))
    if twice:
        raise EvaluationError(
            f"{labels.url or 'labels'}: received class names {list(labels.names or ())} with "
            f"{', '.join(map(repr, twice))} more than once; expected one name per class id, each "
            "once (scores are reported by name). Rename them in the store's class_names "
            "attribute, or merge the classes with --map.")


def _brief(values: Sequence[Any], shown: int = 6) -> str:
    """``a, b, c, ...`` : the first ``shown`` of ``values``, and how many more."""
    items = [str(v) for v in values]
    more = f", ... ({len(items) - shown} more)" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


def _warn_disjoint_names(pred: Labels, ref: Labels, mapping: dict[int, int] | None) -> None:
    """Warn when both sides name their classes, no name is shared and no ``--map`` pairs them:
    every reference pixel then lands on a class the prediction never holds (IoU 0 throughout)."""
    if mapping or not (pred.names and ref.names) or set(pred.names) & set(ref.names):
        return
    log.warning(
        f"PRED {pred.url or '(prediction)'} and REF {ref.url or '(reference)'} share no class "
        f"name (PRED: {_brief(pred.names)}; REF: {_brief(ref.names)}), so no reference pixel can "
        "be predicted right and every IoU is 0. If their ids mean the same classes, pair them "
        "with --map REF_ID=PRED_ID,... (e.g. --map 0=0,1=1; in Python, mapping={0: 0, 1: 1}).")


def _check_mapping(pred: Labels, ref: Labels, mapping: dict[int, int] | None,
                   found: tuple[np.ndarray, np.ndarray] | None) -> None:
    """Refuse a ``mapping`` onto an id that is no scored class (its reference pixels would go
    unscored); warn of pairs whose ids the labels never hold. ``found``: the (predicted,
    reference) label values read, when neither side names its classes."""
    if not mapping:
        return
    named = pred.names or ref.names
    if named:
        wrong = {v: t for v, t in mapping.items() if not 0 <= t < len(named)}
        if wrong:
            raise EvaluationError(
                f"--map: received {_pairs_text(wrong)}, onto predicted id(s) that are no class "
                f"of {pred.url if pred.names else ref.url or 'the labels'}: its classes are ids "
                f"0..{len(named) - 1} ({_brief(named)}); expected each REF_ID=PRED_ID pair to "
                "name one of those ids, or those reference pixels would silently go unscored. "
                "Fix the pair, or leave those reference labels out with --ignore.")
        unknown = [v for v in mapping if ref.names and not 0 <= v < len(ref.names)]
        if unknown:
            _warn_unused(mapping, unknown, f"is no class of REF {ref.url or '(reference)'} "
                         f"(its classes are ids 0..{len(ref.names) - 1})")
        return
    pred_ids, ref_ids = ({int(v) for v in ids.tolist()} for ids in found)
    unknown = [v for v in mapping if v not in ref_ids]
    if unknown:
        _warn_unused(mapping, unknown, f"is no scored label of REF {ref.url or '(reference)'} "
                     f"(it holds {_brief(sorted(ref_ids)) or 'none'})")
    absent = sorted({t for v, t in mapping.items() if t not in pred_ids and v not in unknown})
    if absent:
        log.warning(
            f"--map: PRED {pred.url or '(prediction)'} never holds the predicted id(s) "
            f"{_brief(absent)} that --map maps onto (it holds {_brief(sorted(pred_ids)) or 'none'}); "
            "those classes are scored with no pixel predicted right. Check the pairs "
            "(REF_ID=PRED_ID).")


def _warn_unused(mapping: dict[int, int], unknown: list[int], why: str) -> None:
    """Warn that the pairs of ``mapping`` from the reference ids ``unknown`` map no scored
    pixel, and ``why``."""
    log.warning(
        f"--map: {_pairs_text({v: mapping[v] for v in unknown})} will map no scored pixel: "
        f"reference id {_brief(unknown)} {why}. Check the pairs: each is REF_ID=PRED_ID, the "
        "reference's id first.")


def _pairs_text(pairs: dict[int, int]) -> str:
    """``{3: 7}`` as ``3=7``, as --map spells it."""
    return ",".join(f"{v}={t}" for v, t in sorted(pairs.items()))


def _crs_wkt(*labels: Labels) -> str | None:
    """The CRS of the first of ``labels`` opened from a store that names one."""
    for one in labels:
        if one.source is not None and one.source.georef.crs_wkt:
            return one.source.georef.crs_wkt
    return None


def _block_values(block: np.ndarray, unscored: tuple[int, ...]) -> np.ndarray:
    """The distinct values of one chunk but ``unscored``, at most :data:`MAX_CLASSES` of them:
    more than a confusion matrix holds already says there are too many."""
    values = np.unique(block)
    return (values[~np.isin(values, unscored)] if unscored else values)[:MAX_CLASSES]


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two chunks' distinct values as one set, in the labels' own integers (uint64 ids past
    2**53 went through float64 and merged), cut as :func:`_block_values` cuts."""
    return np.union1d(a, b)[:MAX_CLASSES]


def _values(labels: da.Array, unscored: tuple[int, ...]) -> Any:
    """The distinct values of ``labels`` but ``unscored`` (delayed): one small set per chunk,
    merged pairwise, never more than :data:`MAX_CLASSES` held at once (one id per pixel given
    by mistake would otherwise gather every pixel's value before being refused)."""
    items = [dask.delayed(_block_values)(b, unscored) for b in labels.to_delayed().ravel()]
    while len(items) > 1:
        items = [dask.delayed(_union)(*items[i:i + 2]) if i + 1 < len(items) else items[i]
                 for i in range(0, len(items), 2)]
    return items[0]


def _instance_summary(found: dict[int, dict[float, Any]], names: Sequence[str]) -> dict[str, Any]:
    """Per class: every threshold's counts and scores, and their mean over the thresholds."""
    out: dict[str, Any] = {}
    for cls, by_threshold in found.items():
        rows = {f"{t:.2f}": score.to_dict() for t, score in by_threshold.items()}
        mean = {k: round(float(np.mean([r[k] for r in rows.values()])), 6)
                for k in ("pq", "sq", "rq", "precision", "recall")}
        out[names[cls] if cls < len(names) else str(cls)] = {"thresholds": rows, "mean": mean}
    return out


# --- instances ------------------------------------------------------------------------------


def _keys(ids: np.ndarray) -> np.ndarray:
    """Object ids as int64 table keys, equal where the ids are: uint64 ids keep their bits
    (stacked with int64 columns they went through float64, and ids past 2**53 merged)."""
    return ids.view(np.int64) if ids.dtype == np.uint64 else ids.astype(np.int64)


def _side_table(ids: np.ndarray, cls: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Rows ``(id, class, valid pixels, ignored pixels)`` of the objects in one chunk."""
    objects = ids > 0
    pairs = np.stack([_keys(ids[objects]), cls[objects].astype(np.int64)], axis=1)
    keys, inverse = np.unique(pairs, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    area = np.bincount(inverse, weights=valid[objects], minlength=len(keys))
    total = np.bincount(inverse, minlength=len(keys))
    return np.column_stack([keys.reshape(-1, 2), area.astype(np.int64), total - area.astype(np.int64)])


def _pair_table(t: np.ndarray, p: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Rows ``(reference id, predicted id, overlapping valid pixels)``."""
    both = valid & (t > 0) & (p > 0)
    pairs = np.stack([_keys(t[both]), _keys(p[both])], axis=1)
    keys, counts = np.unique(pairs, axis=0, return_counts=True)
    return np.column_stack([keys.reshape(-1, 2), counts])


def _chunk_tables(t: np.ndarray, p: np.ndarray, tc: np.ndarray, pc: np.ndarray,
                  valid: np.ndarray) -> tuple[np.ndarray, ...]:
    t, p, tc, pc, valid = (np.asarray(a).reshape(-1) for a in (t, p, tc, pc, valid))
    return _side_table(t, tc, valid), _side_table(p, pc, valid), _pair_table(t, p, valid)


def _merge(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """Two chunks' tables as one: rows of one key summed."""
    return tuple(_sum_rows(np.concatenate([x, y])) for x, y in zip(a, b))


def _sum_rows(rows: np.ndarray, n_keys: int = 2) -> np.ndarray:
    keys, inverse = np.unique(rows[:, :n_keys], axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    sums = [np.bincount(inverse, weights=rows[:, c], minlength=len(keys)).astype(np.int64)
            for c in range(n_keys, rows.shape[1])]
    return np.column_stack([keys.reshape(-1, n_keys), *sums])


def _tree(items: list[Any]) -> Any:
    """Pairwise merges, ``log2(n)`` deep, as one dask graph."""
    while len(items) > 1:
        items = [dask.delayed(_merge)(*items[i:i + 2]) if i + 1 < len(items) else items[i]
                 for i in range(0, len(items), 2)]
    return items[0]


def _side(rows: np.ndarray) -> _Side:
    """One side's objects from its merged rows; an object whose pixels disagree on the class
    takes the class of most of them."""
    order = np.lexsort((-(rows[:, 2] + rows[:, 3]), rows[:, 0]))
    rows = rows[order]
    ids, first = np.unique(rows[:, 0], return_index=True)
    index = np.searchsorted(ids, rows[:, 0])
    area = np.bincount(index, weights=rows[:, 2], minlength=len(ids)).astype(np.int64)
    ignored = np.bincount(index, weights=rows[:, 3], minlength=len(ids)).astype(np.int64)
    return _Side(ids.astype(np.int64), area, ignored, rows[first, 1].astype(np.int64))


def instance_scores(ref_ids: da.Array, pred_ids: da.Array, *, ref_classes: da.Array | None = None,
                    pred_classes: da.Array | None = None, valid: da.Array | None = None,
                    thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict[int, dict[float, Any]]:
    """Matching of instance label rasters at each IoU threshold, per class, chunk by chunk:
    ``{class: {threshold: PanopticScore}}`` exactly as :func:`~geoseg.instances.match_scores`
    gives on the whole arrays (objects of class ``1`` without class rasters)."""
    ones = da.ones_like(ref_ids, dtype=np.int64)
    arrays = [ref_ids, pred_ids, ones if ref_classes is None else ref_classes,
              ones if pred_classes is None else pred_classes,
              da.ones_like(ref_ids, dtype=bool) if valid is None else valid]
    arrays = [a.rechunk(ref_ids.chunks) for a in arrays]
    blocks = zip(*(a.to_delayed().ravel() for a in arrays))
    tables = _tree([dask.delayed(_chunk_tables)(*b) for b in blocks])
    truth_rows, pred_rows, pair_rows = dask.compute(tables)[0]
    truth, pred = _side(truth_rows), _side(pred_rows)
    ti, pi = truth.lookup(pair_rows[:, 0]), pred.lookup(pair_rows[:, 1])
    inter = pair_rows[:, 2]
    overlaps = _Overlaps(truth, pred, ti, pi, inter / (truth.area[ti] + pred.area[pi] - inter))
    return {int(c): {float(t): overlaps.score(int(c), float(t)) for t in thresholds}
            for c in overlaps.classes()}
