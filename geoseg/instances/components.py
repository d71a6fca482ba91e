"""Connected components of a chunked mask: one id per object over the whole raster.

Three steps, each bounded by one chunk (or one chunk's border) in memory:

1. **Local.** Each chunk is labelled on its own with ``cc3d`` (multi-label, so
   pixels of different classes never join). A task keeps the chunk's border
   slices and its label count; the labels themselves are dropped.
2. **Equivalences.** For each pair of chunks that touch (by a face, or also by
   an edge or corner under full connectivity) the two border slices give pairs
   of local ids that are one object. One union-find
   (:func:`scipy.sparse.csgraph.connected_components`) over these pairs, on the
   client, gives each object a representative; its size is the number of
   border ids, not pixels.
3. **Relabel.** Each chunk is labelled again (``cc3d`` is deterministic) and
   mapped through its own lookup table to final ids, contiguous from 1, in
   ``uint32`` (``uint64`` beyond 2**32 - 1 objects).

The result is the same partition of pixels as :func:`scipy.ndimage.label` on
the whole array, whatever the chunking and however large the objects.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from scipy import sparse
from scipy.sparse import csgraph

from geoseg.core.text import as_whole
from geoseg.errors import InstanceError

# cc3d's connectivity for (ndim, scipy-style rank): 1 = faces only, ndim = faces, edges, corners
CC3D_CONNECTIVITY = {(2, 1): 4, (2, 2): 8, (3, 1): 6, (3, 2): 18, (3, 3): 26}
Offset = tuple[int, ...]


# -- planning: which chunks touch, and along which offsets pixels connect ------------------


def neighbour_offsets(ndim: int, connectivity: int) -> list[Offset]:
    """Pixel offsets in ``{-1, 0, 1}^ndim`` that connect, half of them (first nonzero is +1).

    Same neighbourhood as ``scipy.ndimage.generate_binary_structure(ndim, connectivity)``.
    """
    check_connectivity(ndim, connectivity)
    return [o for o in itertools.product((-1, 0, 1), repeat=ndim)
            if 0 < sum(map(abs, o)) <= connectivity and o[next(i for i, v in enumerate(o) if v)] > 0]


def class_id(value: Any, name: str, what: str) -> int:
    """``value`` as one class id (a whole number; not a bool), refused with an
    :class:`~geoseg.errors.InstanceError` naming the argument ``name`` and saying ``what`` it is."""
    number = as_whole(value)
    if number is None:
        raise InstanceError(
            f"{name}: received {value!r} ({type(value).__name__}); expected {what}, a class id "
            f"(a whole number, the value of its pixels in the class raster), e.g. {name}=1.")
    return number


def class_ids(values: Any, name: str, what: str) -> list[int]:
    """``values`` as a list of class ids: one whole number is one class, as ``bands`` takes one
    band; anything but whole numbers is refused (:func:`class_id`)."""
    items = [values] if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__") \
        else values
    try:
        return [class_id(v, name, what) for v in items]
    except InstanceError:
        raise InstanceError(
            f"{name}: received {values!r}; expected {what}, a list of class ids (whole numbers, "
            f"the values of their pixels in the class raster), e.g. {name}=[1, 2] (or one id "
            f"for one class).") from None


def check_connectivity(ndim: int, connectivity: int) -> None:
    if (ndim, connectivity) not in CC3D_CONNECTIVITY:
        raise InstanceError(
            f"connected components need a 2D or 3D mask and a connectivity from 1 (faces) to "
            f"the number of dimensions (faces, edges and corners); got a {ndim}D mask and "
            f"connectivity={connectivity}."
        )


def touching_blocks(numblocks: Sequence[int], connectivity: int) -> list[tuple[Offset, Offset]]:
    """Pairs ``(block, neighbour - block)`` of chunk indices whose pixels can connect."""
    ndim = len(numblocks)
    pairs = []
    for offset in neighbour_offsets(ndim, connectivity):
        for block in np.ndindex(*numblocks):
            other = tuple(b + o for b, o in zip(block, offset))
            if all(0 <= v < n for v, n in zip(other, numblocks)):
                pairs.append((tuple(block), offset))
    return pairs


# -- execution ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Border:
    """A chunk's label count and its first and last slice along each axis (ids and classes)."""

    count: int
    first: tuple[tuple[np.ndarray, np.ndarray], ...]
    last: tuple[tuple[np.ndarray, np.ndarray], ...]


def objects_of(block: np.ndarray, classes: Sequence[int] | None) -> np.ndarray:
    """Values that connect: nonzero pixels (``classes=None``), or class codes (:func:`class_codes`)."""
    if block.dtype == bool:
        block = block.astype(np.uint8)
    if classes is not None:
        return class_codes(block, classes)
    # cc3d reads some uint64 values as C longs, which fail from 2**63 on; the same bits as
    # int64 keep equal values equal and 0 at 0, all that connecting needs
    return block.view(np.int64) if block.dtype == np.uint64 else block


def class_codes(block: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """1 + the position of each pixel's class among the sorted listed ``classes``; 0 if unlisted.

    Positions, not the values: any integer class (negative, or beyond ``uint32``) gets a
    code of its own, and the codes are the same in every chunk. Classes the block's dtype
    cannot hold are in no pixel.
    """
    info = np.iinfo(block.dtype)
    listed = np.array(sorted({c for c in classes if info.min <= c <= info.max}), block.dtype)
    if listed.size == 0:
        return np.zeros(block.shape, np.uint32)
    index = np.searchsorted(listed, block)
    found = listed[np.minimum(index, listed.size - 1)] == block
    return np.where(found, index + 1, 0).astype(np.uint32)


def local_labels(block: np.ndarray, classes: Sequence[int] | None,
                 connectivity: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(objects, labels, count)`` of one chunk: cc3d's multi-label components, ids 1..count."""
    import cc3d  # here, not at the top: a semantic job (no instances) runs without cc3d installed

    # cc3d refuses a read-only buffer, which a contiguous block may be (dask's ones()), and
    # ascontiguousarray does not copy it
    objects = np.require(objects_of(block, classes), requirements=("C", "W"))
    if objects.size == 0:
        return objects, np.zeros(objects.shape, np.uint32), 0
    labels, count = cc3d.connected_components(
        objects, connectivity=CC3D_CONNECTIVITY[(objects.ndim, connectivity)], return_N=True,
        out_dtype=np.uint32)
    return objects, labels, int(count)


def border_of(block: np.ndarray, classes: Sequence[int] | None, connectivity: int) -> Border:
    objects, labels, count = local_labels(block, classes, connectivity)
    first = tuple((labels.take(0, axis=a), objects.take(0, axis=a)) for a in range(block.ndim))
    last = tuple((labels.take(-1, axis=a), objects.take(-1, axis=a)) for a in range(block.ndim))
    return Border(count, first, last)


def _facing(border: Border, offset: Offset, near: bool) -> tuple[np.ndarray, np.ndarray]:
    """The slice of a chunk that faces its neighbour at ``offset`` (``near``: the neighbour's side)."""
    axes = [a for a, v in enumerate(offset) if v]
    at_end = [(offset[a] > 0) != near for a in axes]  # this chunk's last slice along a?
    labels, objects = (border.last if at_end[0] else border.first)[axes[0]]
    for a, end in sorted(zip(axes[1:], at_end[1:]), reverse=True):
        index = a - 1  # axes[0] < a was removed from the slice
        labels, objects = labels.take(-1 if end else 0, axis=index), objects.take(-1 if end else 0,
                                                                                  axis=index)
    return labels, objects


def border_pairs(a: Border, b: Border, offset: Offset, connectivity: int) -> np.ndarray:
    """Unique ``(id in a, id in b)`` pairs of pixels that connect across the two chunks' border."""
    la, oa = _facing(a, offset, near=False)
    lb, ob = _facing(b, offset, near=True)
    spare = connectivity - sum(map(abs, offset))
    found = []
    for shift in itertools.product((-1, 0, 1), repeat=la.ndim):
        if sum(map(abs, shift)) > spare:
            continue
        sa = tuple(slice(max(0, -s), n - max(0, s)) for s, n in zip(shift, la.shape))
        sb = tuple(slice(max(0, s), n - max(0, -s)) for s, n in zip(shift, lb.shape))
        ia, ib, va, vb = la[sa], lb[sb], oa[sa], ob[sb]
        joined = (ia > 0) & (ib > 0) & (va == vb)
        found.append(np.stack([ia[joined], ib[joined]], axis=1))
    pairs = np.concatenate(found) if found else np.zeros((0, 2), np.uint32)
    return np.unique(pairs.astype(np.int64), axis=0)


@dataclass(frozen=True)
class Relabel:
    """Per-chunk lookup: ids not owning their object map through ``(borrowed, target)``;
    the others are numbered ``base + local - (borrowed ids below local)``."""

    base: int
    borrowed: np.ndarray  # local ids, sorted
    target: np.ndarray    # their final ids

    def apply(self, labels: np.ndarray, count: int, dtype: np.dtype) -> np.ndarray:
        local = np.arange(count + 1, dtype=np.int64)
        table = self.base + local - np.searchsorted(self.borrowed, local, side="left")
        table[self.borrowed] = self.target
        table[0] = 0
        return table.astype(dtype)[labels]


def relabel_plan(counts: np.ndarray, pairs: np.ndarray) -> tuple[list[Relabel], int]:
    """Final ids from per-chunk counts (chunks in C order) and provisional-id pairs.

    Provisional id of local id ``l`` in chunk ``i`` is ``offset[i] + l``. Each object's
    representative is its least provisional id; the chunk holding it owns the object.
    """
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    nodes = np.unique(pairs)
    if nodes.size:
        index = np.searchsorted(nodes, pairs)
        graph = sparse.coo_matrix((np.ones(len(pairs), np.int8), (index[:, 0], index[:, 1])),
                                  shape=(nodes.size, nodes.size))
        _, component = csgraph.connected_components(graph, directed=False)
        _, first = np.unique(component, return_index=True)  # nodes are sorted: first = least
        representative = nodes[first][component]
    else:
        representative = nodes
    borrowed = nodes[representative != nodes]
    chunk_of = np.searchsorted(offsets, borrowed, side="left") - 1
    owned = counts - np.bincount(chunk_of, minlength=len(counts))
    bases = np.concatenate([[0], np.cumsum(owned)]).astype(np.int64)

    def final(ids: np.ndarray) -> np.ndarray:
        chunk = np.searchsorted(offsets, ids, side="left") - 1
        below = np.searchsorted(borrowed, ids) - np.searchsorted(borrowed, offsets[chunk] + 1)
        return bases[chunk] + ids - offsets[chunk] - below

    target = final(representative[representative != nodes])
    plans = []
    for i in range(len(counts)):
        mine = chunk_of == i
        plans.append(Relabel(int(bases[i]), borrowed[mine] - offsets[i], target[mine]))
    return plans, int(owned.sum())


def label_dtype(count: int) -> np.dtype:
    return np.dtype(np.uint32 if count <= np.iinfo(np.uint32).max else np.uint64)


def stacked(parts: Sequence[tuple[da.Array, int]], like: da.Array) -> tuple[da.Array, int]:
    """Several label rasters over disjoint pixels as one, each after the previous ones' ids."""
    total = sum(count for _, count in parts)
    dtype = label_dtype(total)
    result, offset = da.zeros(like.shape, dtype=dtype, chunks=like.chunks), 0
    for labels, count in parts:
        shifted = labels.astype(dtype) + dtype.type(offset)
        result = da.where(labels > 0, shifted, result)
        offset += count
    return result, total


def _relabelled(block: np.ndarray, classes: Sequence[int] | None, connectivity: int,
                plan: Relabel, dtype: np.dtype) -> np.ndarray:
    _, labels, count = local_labels(block, classes, connectivity)
    return plan.apply(labels, count, dtype)


def label(mask: da.Array, *, connectivity: int = 1,
          classes: Sequence[int] | None = None) -> tuple[da.Array, int]:
    """Label the connected components of a chunked 2D or 3D mask; returns ``(labels, count)``.

    Parameters
    ----------
    mask
        Integer or boolean Dask array, or a DataArray such as :func:`geoseg.segment`
        gives. With ``classes=None`` every nonzero pixel belongs to an object and
        pixels of different values never join (so a semantic mask gives components
        per class, 0 being background); a DataArray's no-data class (its ``nodata``
        attribute) is background too.
    connectivity
        1: faces only (4 neighbours in 2D, 6 in 3D); ``mask.ndim``: faces, edges
        and corners (8 in 2D, 26 in 3D); 2 in 3D: faces and edges (18).
        As in :func:`scipy.ndimage.generate_binary_structure`.
    classes
        Class values that are objects; every other value is background.

    Returns
    -------
    labels
        Lazy ``uint32`` array (``uint64`` beyond 2**32 - 1 objects) with ids
        1..count, chunked like ``mask``; 0 outside objects.
    count
        Number of objects.

    The border pass runs now (on the current Dask scheduler); the labels are
    computed when ``labels`` is, labelling each chunk again.
    """
    if classes is None:
        mask = _nodata_as_background(mask)
    labels, count, _ = label_with(mask, connectivity=connectivity, classes=classes)
    return labels, count


def _nodata_as_background(mask: Any) -> Any:
    """``mask``'s data with its no-data class (a DataArray's ``nodata`` attribute, as
    :func:`geoseg.segment` sets it) turned into 0; anything else unchanged."""
    nodata = as_whole(getattr(mask, "attrs", {}).get("nodata"))
    if nodata is None or not hasattr(mask, "dims"):
        return mask
    data = mask.data if isinstance(mask.data, da.Array) else da.asarray(mask.data)
    return da.where(data == nodata, data.dtype.type(0), data) if nodata != 0 else data


def label_with(mask: da.Array, *, connectivity: int = 1, classes: Sequence[int] | None = None,
               also: Sequence[Delayed] = ()) -> tuple[da.Array, int, list[Any]]:
    """:func:`label`, computing ``also`` in the same call as the border pass: what they share
    with ``mask`` (a watershed's windows) is then computed once; returns their results last."""
    mask = checked_mask(mask, connectivity)
    if mask.size == 0:
        return da.zeros(mask.shape, dtype=np.uint32, chunks=mask.chunks), 0, \
            list(dask.compute(*also))
    chunks, mask = mask.chunks, without_empty_chunks(mask)
    classes = None if classes is None else class_ids(classes, "classes", "the object classes")
    shape = mask.numblocks
    touching = touching_blocks(shape, connectivity)
    (counts, found), *extra = dask.compute(_border_pass(mask, classes, connectivity, touching),
                                           *also)
    counts = np.asarray(counts, dtype=np.int64)
    plans, count = relabel_plan(counts, _provisional(found, touching, counts, shape))
    labels = _relabel_pass(mask, classes, connectivity, plans, label_dtype(count))
    return (labels if labels.chunks == chunks else labels.rechunk(chunks)), count, extra


def without_empty_chunks(mask: da.Array) -> da.Array:
    """``mask`` without its zero-length chunks (of a non-empty array).

    Every chunk then has a first and a last slice along each axis, and the chunks
    on either side of an empty one, whose pixels touch, are neighbours in the grid.
    """
    chunks = tuple(tuple(c for c in axis if c) for axis in mask.chunks)
    return mask if chunks == mask.chunks else mask.rechunk(chunks)


# Both passes are one graph layer each (a task per chunk or per touching pair): a Delayed per
# task would make dask cull one layer per task, quadratic in the number of chunks.


def _border_pass(mask: da.Array, classes: list[int] | None, connectivity: int,
                 touching: list[tuple[Offset, Offset]]) -> Delayed:
    """One task per chunk (its :class:`Border`), one per touching pair (their border pairs),
    and one collecting ``(counts in C order, pairs in touching order)``."""
    token = tokenize(mask, classes, connectivity)
    border, count, pair = (f"cc-{step}-{token}" for step in ("border", "count", "pairs"))
    graph: dict[Any, Any] = {}
    for b in np.ndindex(*mask.numblocks):
        graph[(border, *b)] = (border_of, (mask.name, *b), classes, connectivity)
        graph[(count, *b)] = (getattr, (border, *b), "count")
    for i, (b, o) in enumerate(touching):
        graph[(pair, i)] = (border_pairs, (border, *b), (border, *np.add(b, o).tolist()), list(o),
                            connectivity)
    collect = f"cc-collect-{token}"
    graph[collect] = (tuple, [[(count, *b) for b in np.ndindex(*mask.numblocks)],
                              [(pair, i) for i in range(len(touching))]])
    return Delayed(collect, HighLevelGraph.from_collections(collect, graph, dependencies=[mask]))


def _relabel_pass(mask: da.Array, classes: list[int] | None, connectivity: int,
                  plans: list[Relabel], dtype: np.dtype) -> da.Array:
    name = f"cc-relabel-{tokenize(mask, classes, connectivity, plans, dtype)}"
    graph = {(name, *b): (_relabelled, (mask.name, *b), classes, connectivity, plan, dtype)
             for b, plan in zip(np.ndindex(*mask.numblocks), plans)}
    layer = HighLevelGraph.from_collections(name, graph, dependencies=[mask])
    return da.Array(layer, name, chunks=mask.chunks, dtype=dtype,
                    meta=np.empty((0,) * mask.ndim, dtype))


def _provisional(found: list[np.ndarray], touching: list[tuple[Offset, Offset]],
                 counts: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    offsets = np.concatenate([[0], np.cumsum(counts)])
    rows = []
    for pairs, (b, o) in zip(found, touching):
        i = np.ravel_multi_index(b, shape)
        j = np.ravel_multi_index(tuple(np.add(b, o)), shape)
        rows.append(pairs + np.array([offsets[i], offsets[j]]))
    return np.concatenate(rows) if rows else np.zeros((0, 2), np.int64)


def checked_mask(mask: da.Array | np.ndarray, connectivity: int) -> da.Array:
    """``mask`` as a Dask array (a NumPy one in one chunk), refused unless it is an integer or
    boolean 2D or 3D mask of known chunk sizes."""
    if not isinstance(mask, da.Array):
        mask = da.asarray(mask)
    check_connectivity(mask.ndim, connectivity)
    if not (mask.dtype == bool or np.issubdtype(mask.dtype, np.integer)):
        raise InstanceError(
            f"connected components need an integer or boolean mask; got dtype {mask.dtype}. "
            "Threshold or round it first (e.g. mask > 0.5)."
        )
    if any(np.isnan(c) for cs in mask.chunks for c in cs):
        raise InstanceError("the mask has chunks of unknown size; call compute_chunk_sizes() first.")
    return mask
