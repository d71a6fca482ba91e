"""One row per instance: size, bounding box, centroid, class and confidence, from chunks.

:func:`object_table` never loads the label raster whole. Each chunk gives per-id partial
sums (pixel count, sum, minimum and maximum of each index, a class histogram, per-class
probability sums) computed by sorting the chunk's labelled pixels once and reducing runs
with ``ufunc.reduceat``; a tree of :func:`dask.delayed` merges adds the partials up. A
task holds one chunk plus arrays as long as the ids it has seen; only the root holds one
entry per instance, which is the table itself.

Coordinates follow scikit-image's ``regionprops``: pixel indices, bounding boxes with an
exclusive maximum, centroids as mean indices. World coordinates put a pixel's centre at
``transform * (col + 0.5, row + 0.5)`` for images; a volume's ``voxel_affine`` maps the
voxel index ``(z, y, x, 1)`` itself (NIfTI's convention, voxel centres) to world
``(x, y, z)``, the columns ``x, y, z`` (world axes, which need not follow the array's).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
from dask.delayed import Delayed

from geoseg.core.text import brief
from geoseg.errors import InstanceError
from geoseg.io import remote
from geoseg.io.files import write_whole
from geoseg.io.georef import WORLD_AXES, GeoRef, spanning

AXES = {2: ("y", "x"), 3: ("z", "y", "x")}
SPLIT_EVERY = 8  # partials merged per task in the tree reduction
INT64_MAX = np.iinfo(np.int64).max


@dataclass(frozen=True)
class Partial:
    """Per-id sums over some chunks; every array is in the order of ``ids`` (sorted).

    ``sums``, ``mins`` and ``maxs`` are ``(n, ndim)`` over global indices (``maxs``
    inclusive). The class histogram is sparse: ``hist_ids[k]`` had ``hist_counts[k]``
    pixels of class ``hist_values[k]``. ``prob_sums`` is ``(n, C)``: each class's
    probability summed over the id's pixels.
    """

    ids: np.ndarray
    counts: np.ndarray
    sums: np.ndarray
    mins: np.ndarray
    maxs: np.ndarray
    hist_ids: np.ndarray | None = None
    hist_values: np.ndarray | None = None
    hist_counts: np.ndarray | None = None
    prob_sums: np.ndarray | None = None


# --- per chunk ---------------------------------------------------------------------------------


def run_starts(*keys: np.ndarray) -> np.ndarray:
    """Where a run of equal values (over all ``keys`` together) starts in sorted arrays."""
    if keys[0].size == 0:
        return np.zeros(0, dtype=np.intp)
    change = np.zeros(keys[0].size, dtype=bool)
    change[0] = True
    for key in keys:
        change[1:] |= key[1:] != key[:-1]
    return np.flatnonzero(change)


def chunk_partial(labels: np.ndarray, offset: Sequence[int], classes: np.ndarray | None = None,
                  probabilities: np.ndarray | None = None) -> Partial:
    """Per-id sums of one chunk whose first pixel has global index ``offset``.

    Only ids above 0 are instances: 0 and negative values are background, as for the
    polygons, so a table and the polygons of the same labels list the same ids.
    """
    flat = labels.reshape(-1)
    where = np.flatnonzero(flat > 0)
    keys = flat[where]
    values = None if classes is None else classes.reshape(-1)[where]
    order = np.argsort(keys, kind="stable") if values is None else np.lexsort((values, keys))
    where, keys = where[order], keys[order]
    starts = run_starts(keys)
    counts = np.diff(np.append(starts, keys.size)).astype(np.int64)
    sums, mins, maxs = _index_stats(where, starts, counts, labels.shape, offset)
    hist = (None, None, None) if values is None else _histogram(keys, values[order])
    probs = None if probabilities is None else _probability_sums(probabilities, where, starts)
    return Partial(keys[starts].astype(np.uint64), counts, sums, mins, maxs, *hist, probs)


def _index_stats(where: np.ndarray, starts: np.ndarray, counts: np.ndarray,
                 shape: tuple[int, ...], offset: Sequence[int]) -> tuple[np.ndarray, ...]:
    """Sum, minimum and maximum of each global index over runs of pixels (flat positions)."""
    n, ndim = starts.size, len(shape)
    sums, mins, maxs = (np.zeros((n, ndim), dtype=np.int64) for _ in range(3))
    if n == 0:
        return sums, mins, maxs
    strides = np.cumprod((*shape[1:], 1)[::-1])[::-1]
    for axis in range(ndim):
        index = (where // strides[axis]) % shape[axis]
        sums[:, axis] = np.add.reduceat(index, starts) + counts * offset[axis]
        mins[:, axis] = np.minimum.reduceat(index, starts) + offset[axis]
        maxs[:, axis] = np.maximum.reduceat(index, starts) + offset[axis]
    return sums, mins, maxs


def _histogram(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, ...]:
    """(id, class, pixels) per distinct pair, from pixels sorted by id then class."""
    starts = run_starts(keys, values)
    counts = np.diff(np.append(starts, keys.size)).astype(np.int64)
    return keys[starts].astype(np.uint64), values[starts].astype(np.int64), counts


def _probability_sums(probabilities: np.ndarray, where: np.ndarray,
                      starts: np.ndarray) -> np.ndarray:
    """``(n, C)``: each class's probability summed over runs of pixels (flat positions)."""
    n_classes = probabilities.shape[0]
    sums = np.zeros((starts.size, n_classes), dtype=np.float64)
    if starts.size:
        for c in range(n_classes):
            picked = probabilities[c].reshape(-1)[where].astype(np.float64)
            sums[:, c] = np.add.reduceat(picked, starts)
    return sums


# --- merging -----------------------------------------------------------------------------------


def merge(parts: Sequence[Partial]) -> Partial:
    """One partial holding the sums of ``parts``."""
    ids = np.concatenate([p.ids for p in parts])
    order = np.argsort(ids, kind="stable")
    starts = run_starts(ids[order])

    def reduce(ufunc: np.ufunc, name: str) -> np.ndarray:
        stacked = np.concatenate([getattr(p, name) for p in parts])[order]
        return ufunc.reduceat(stacked, starts, axis=0) if starts.size else stacked

    hist = (None, None, None)
    if parts[0].hist_ids is not None:
        hist = _merge_histograms(parts)
    probs = None if parts[0].prob_sums is None else reduce(np.add, "prob_sums")
    return Partial(ids[order][starts], reduce(np.add, "counts"), reduce(np.add, "sums"),
                   reduce(np.minimum, "mins"), reduce(np.maximum, "maxs"), *hist, probs)


def _merge_histograms(parts: Sequence[Partial]) -> tuple[np.ndarray, ...]:
    ids = np.concatenate([p.hist_ids for p in parts])
    values = np.concatenate([p.hist_values for p in parts])
    counts = np.concatenate([p.hist_counts for p in parts])
    order = np.lexsort((values, ids))
    ids, values, counts = ids[order], values[order], counts[order]
    starts = run_starts(ids, values)
    summed = np.add.reduceat(counts, starts) if starts.size else counts
    return ids[starts], values[starts], summed


def tree_reduce(parts: list[Delayed], split_every: int = SPLIT_EVERY) -> Delayed:
    """Merge delayed partials ``split_every`` at a time until one is left."""
    while len(parts) > 1:
        parts = [dask.delayed(merge)(parts[i:i + split_every])
                 for i in range(0, len(parts), split_every)]
    return parts[0]


def chunk_offsets(chunks: tuple[tuple[int, ...], ...]) -> list[tuple[int, ...]]:
    """Global index of each block's first pixel, in C order of the block grid."""
    starts = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int).tolist() for c in chunks]
    return list(product(*starts))


def delayed_partial(labels: da.Array, classes: da.Array | None = None,
                    probabilities: da.Array | None = None, *,
                    blocks: np.ndarray | None = None) -> Delayed:
    """The whole raster's :class:`Partial`, as a tree of delayed merges over its chunks.

    ``blocks`` (``labels.to_delayed().ravel()``) lets another computation share the chunk tasks.
    """
    blocks = labels.to_delayed().ravel() if blocks is None else blocks
    per_class = [None] * blocks.size if classes is None else classes.to_delayed().ravel()
    per_prob = [None] * blocks.size if probabilities is None else probabilities.to_delayed().ravel()
    parts = [dask.delayed(chunk_partial)(block, offset, cls, prob)
             for block, offset, cls, prob in zip(blocks, chunk_offsets(labels.chunks),
                                                  per_class, per_prob)]
    return tree_reduce(parts)


# --- checks ------------------------------------------------------------------------------------


def check_labels(labels: da.Array, dims: tuple[int, ...] = (2, 3)) -> da.Array:
    """``labels`` as a Dask array of integer ids with an allowed number of dimensions."""
    labels = labels if isinstance(labels, da.Array) else da.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise InstanceError(
            f"Labels must hold integer instance ids (0 = background); got dtype {labels.dtype}. "
            "Label a mask first with geoseg.instances.label(mask).")
    if labels.ndim not in dims:
        raise InstanceError(
            f"Labels must have {' or '.join(map(str, dims))} dimensions "
            f"({', '.join('(' + ', '.join(AXES[d]) + ')' for d in dims)}); got shape {labels.shape}.")
    return labels


def aligned_classes(classes: da.Array | None, labels: da.Array) -> da.Array | None:
    """``classes`` checked against ``labels`` and chunked like them."""
    if classes is None:
        return None
    classes = classes if isinstance(classes, da.Array) else da.asarray(classes)
    if classes.shape != labels.shape:
        raise InstanceError(f"Classes have shape {classes.shape} but labels have shape "
                            f"{labels.shape}; pass the class raster the labels were made from.")
    if not np.issubdtype(classes.dtype, np.integer):
        raise InstanceError(f"Classes must hold integer class ids; got dtype {classes.dtype}.")
    return classes.rechunk(labels.chunks)


def aligned_probabilities(probabilities: da.Array | None, labels: da.Array) -> da.Array | None:
    """``probabilities`` ``(C, *labels.shape)`` checked and chunked like ``labels``, C whole."""
    if probabilities is None:
        return None
    probabilities = (probabilities if isinstance(probabilities, da.Array)
                     else da.asarray(probabilities))
    if probabilities.ndim != labels.ndim + 1 or probabilities.shape[1:] != labels.shape:
        raise InstanceError(
            f"Probabilities must have shape (classes, {', '.join(map(str, labels.shape))}) to "
            f"match the labels; got shape {probabilities.shape}.")
    return probabilities.rechunk(((probabilities.shape[0],), *labels.chunks))


def check_ids(ids: np.ndarray) -> None:
    """Refuse ids the ``int64`` id column of a table or polygon file cannot hold.

    Only ``uint64`` labels have them (2**63 and up); ``ids`` are sorted, as in a partial.
    """
    if ids.size and ids[-1] > INT64_MAX:
        raise InstanceError(
            f"Labels hold id {int(ids[-1])}, above {INT64_MAX} (2**63 - 1), the largest id an "
            "object table or polygon file holds (int64); renumber the instances from 1 first, "
            "e.g. with skimage.segmentation.relabel_sequential.")


def _check_count(ids: np.ndarray, count: int | None) -> None:
    if count is not None and ids.size and int(ids[-1]) > count:
        raise InstanceError(
            f"Labels hold id {int(ids[-1])} but count is {count}; pass the count that "
            "geoseg.instances.label returned with these labels (or count=None).")


# --- the table ---------------------------------------------------------------------------------


def object_table(labels: da.Array, *, count: int | None = None, classes: da.Array | None = None,
                 probabilities: da.Array | None = None,
                 georef: GeoRef | None = None) -> pd.DataFrame:
    """Per-instance measurements of a label raster, computed chunk by chunk.

    Parameters
    ----------
    labels
        Instance ids, ``(y, x)`` or ``(z, y, x)``, any integer dtype, up to 2**63 - 1 (the
        ``id`` column is int64); 0 (and negative values) is background.
    count
        The number of instances (as :func:`geoseg.instances.label` returns it); an id above it
        raises :class:`~geoseg.errors.InstanceError`. Ids with no pixels have no row.
    classes
        Class ids, same shape as ``labels``: adds ``class``, the most frequent class of the
        instance's pixels (ties go to the smallest class id).
    probabilities
        ``(C, *labels.shape)`` class probabilities: adds ``mean_probability``, the mean over the
        instance's pixels of the probability of its ``class`` (NaN pixels make it NaN). Without
        ``classes``, the class is the per-pixel arg-max of ``probabilities``.
    georef
        Adds ``area`` (pixel area ``|det|`` of ``transform``, or voxel volume ``|det|`` of
        ``voxel_affine``, in map units) and world centroids: ``x, y`` for images, ``x, y, z``
        for volumes (rows 0, 1, 2 of ``voxel_affine @ (z, y, x, 1)``: scanner X, Y, Z for a
        NIfTI input, physical x, y, z for an OME-Zarr one; see :class:`GeoRef`).

    Returns
    -------
    pandas.DataFrame
        One row per id present, sorted: ``id``, [``class``], ``area_px``, [``area``],
        ``min_[z_]y_x``/``max_...`` (bounding box in pixel indices; ``max_`` is exclusive,
        one past the object's last row/column/slice, as regionprops' ``bbox``),
        ``centroid_[z, ]y, x`` (pixel indices), [world coordinates], [``mean_probability``].
        ``attrs`` keep the CRS WKT, transform or voxel affine and units.
    """
    labels = check_labels(labels)
    _check_georef(georef, labels.ndim)
    probabilities = aligned_probabilities(probabilities, labels)
    if classes is None and probabilities is not None:
        classes = probabilities.argmax(axis=0)
    classes = aligned_classes(classes, labels)
    (partial,) = dask.compute(delayed_partial(labels, classes, probabilities))
    check_ids(partial.ids)
    _check_count(partial.ids, count)
    table = _measurements(partial, labels.ndim)
    if partial.hist_ids is not None:
        table.insert(1, "class", majority_class(partial))
    _add_world(table, georef, labels.ndim)
    if partial.prob_sums is not None:
        table["mean_probability"] = _mean_probability(partial, table["class"].to_numpy())
    table.attrs.update({} if georef is None else georef.attrs())
    return table


def _measurements(partial: Partial, ndim: int) -> pd.DataFrame:
    """Id, pixel count, bounding box and centroid columns. ``max_[z_]y_x`` are exclusive (one
    past the last pixel, as regionprops' ``bbox`` and Python slices): the object's rows are
    ``min_y`` to ``max_y - 1`` and ``table[max_y] - table[min_y]`` is its height in pixels."""
    axes = AXES[ndim]
    columns: dict[str, Any] = {"id": partial.ids.astype(np.int64), "area_px": partial.counts}
    columns.update({f"min_{a}": partial.mins[:, i] for i, a in enumerate(axes)})
    columns.update({f"max_{a}": partial.maxs[:, i] + 1 for i, a in enumerate(axes)})
    with np.errstate(invalid="ignore", divide="ignore"):
        centroid = partial.sums / partial.counts[:, None]
    columns.update({f"centroid_{a}": centroid[:, i] for i, a in enumerate(axes)})
    return pd.DataFrame(columns)


def majority_class(partial: Partial) -> np.ndarray:
    """Each id's most frequent class (the smallest on ties), in the order of ``partial.ids``."""
    ids, values, counts = partial.hist_ids, partial.hist_values, partial.hist_counts
    order = np.lexsort((values, -counts, ids))  # per id: most pixels first, then smallest class
    first = run_starts(ids[order])
    return values[order][first]


def _mean_probability(partial: Partial, classes: np.ndarray) -> np.ndarray:
    n_classes = partial.prob_sums.shape[1]
    inside = (classes >= 0) & (classes < n_classes)
    picked = np.full(classes.size, np.nan)
    rows = np.flatnonzero(inside)
    picked[rows] = partial.prob_sums[rows, classes[rows]]
    return picked / partial.counts


def georef_or_none(georef: Any) -> GeoRef | None:
    """``georef`` when it is a :class:`GeoRef` or ``None``; anything else (a CRS string, a dict
    of attributes) is refused, saying how to build one."""
    if georef is None or isinstance(georef, GeoRef):
        return georef
    raise InstanceError(
        f"georef: received {type(georef).__name__} {brief(georef)}; expected a GeoRef "
        "(geoseg.io.georef.GeoRef.from_crs(crs, transform) for an image, "
        "GeoRef.from_voxel_affine(affine) for a volume) or None for pixel coordinates.")


def _check_georef(georef: GeoRef | None, ndim: int) -> None:
    if georef_or_none(georef) is None:
        return
    if ndim == 2 and georef.voxel_affine is not None and georef.transform is None:
        raise InstanceError("2-D labels came with a volume's georeference (voxel_affine); pass "
                            "the image's GeoRef (CRS and transform).")
    if ndim == 3 and georef.transform is not None and georef.voxel_affine is None:
        raise InstanceError("3-D labels came with an image's georeference (transform); pass the "
                            "volume's GeoRef (GeoRef.from_voxel_affine).")


def _add_world(table: pd.DataFrame, georef: GeoRef | None, ndim: int) -> None:
    """``area`` and world centroid columns, when ``georef`` places the raster."""
    if georef is None:
        return
    axes = AXES[ndim]
    centroid = table[[f"centroid_{a}" for a in axes]].to_numpy()
    if ndim == 2 and georef.affine is not None:
        t = georef.affine
        cols, rows = centroid[:, 1] + 0.5, centroid[:, 0] + 0.5
        table.insert(table.columns.get_loc("area_px") + 1, "area",
                     table["area_px"] * abs(t.a * t.e - t.b * t.d))
        table["x"] = t.a * cols + t.b * rows + t.c
        table["y"] = t.d * cols + t.e * rows + t.f
    elif ndim == 3 and georef.affine_matrix is not None:
        matrix = georef.affine_matrix
        table.insert(table.columns.get_loc("area_px") + 1, "area",
                     table["area_px"] * abs(np.linalg.det(spanning(matrix)[:3, :3])))
        world = centroid @ matrix[:3, :3].T + matrix[:3, 3]
        for i, a in enumerate(WORLD_AXES):
            table[a] = world[:, i]


def write_table(table: pd.DataFrame, url: str, *,
                storage_options: dict[str, Any] | None = None) -> None:
    """Write ``table`` as Parquet (pyarrow) to a path or fsspec URL, replacing any file there.

    ``table.attrs`` (CRS, transform, units) travel in the file's pandas metadata.
    """
    remote.check_writable(url)
    write_whole(url, functools.partial(table.to_parquet, engine="pyarrow", index=False),
                storage_options=storage_options, what="Writing the object table")
