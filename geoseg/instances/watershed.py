"""Touching objects: seeds with global ids grown by a watershed inside a mask, chunk by chunk.

Seeds are labelled over the whole raster first (:func:`~geoseg.instances.components.label`),
so a seed keeps its id in every chunk whose halo reaches it, and the growth,
run in windows of one chunk plus ``halo``, needs no merging: a pixel takes the
id of the seed that floods it. When each object fits in ``halo`` around any of
its pixels, every window holds the whole object and the result equals the
same watershed on the whole image; an object that reaches the outer border of
its window (where that border is not the raster's edge) may not, and
:func:`distance_watershed` logs a warning naming how many did (:class:`Seams`).
For the distance watershed, mask pixels no seed reaches become objects of their
own, labelled like any component; for decoding, boundary pixels no interior
reaches are dropped (an outline without a building is no object).

Two routes use it:

- :func:`instances_from_classes`: an instance-aware network's interior and
  boundary classes (seeds are interior components, grown over the boundary by
  distance to the seeds); :func:`decoded` grows several decodings' seeds in one
  watershed, so decodings sharing a boundary class split it as that watershed does;
- :func:`distance_watershed`: a classical split of a binary mask, seeds at the
  maxima of the distance to the background, grown down that distance.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed
from scipy import ndimage as ndi
from skimage import morphology, segmentation

from geoseg.core.classes import repeated_names
from geoseg.core.text import as_whole
from geoseg.errors import InstanceError
from geoseg.instances.components import (
    checked_mask,
    class_id,
    class_ids,
    label,
    label_dtype,
    label_with,
    stacked,
)

Elevation = Callable[[np.ndarray, np.ndarray], np.ndarray]
log = logging.getLogger("geoseg.instances")


def distance_to_seeds(seeds: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Flood order for interior seeds: mask pixels go to the nearest seed."""
    return ndi.distance_transform_edt(seeds == 0)


def depth_in_mask(seeds: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Flood order for distance seeds: from the centres of objects outwards."""
    return -ndi.distance_transform_edt(mask)


def flood_order(elevation: np.ndarray) -> np.ndarray:
    """Ranks of ``elevation`` with ties broken by raster position: no two pixels flood at once.

    Watershed breaks ties between equal heights by its queue's internal order,
    which depends on everything else in the window; ranks make the flood depend
    only on heights and positions, so every window that holds an object floods
    it alike.
    """
    order = np.argsort(elevation, axis=None, kind="stable")
    rank = np.empty(order.size, np.float64)
    rank[order] = np.arange(order.size)
    return rank.reshape(elevation.shape)


def watershed_whole(seeds: np.ndarray, mask: np.ndarray,
                    elevation: Elevation = distance_to_seeds) -> np.ndarray:
    """The seeded watershed of one window (or of a whole image held in memory)."""
    mask = mask.astype(bool)
    if not mask.any() or not seeds.any():
        return np.zeros_like(seeds)
    heights = flood_order(elevation(seeds, mask))
    return segmentation.watershed(heights, markers=seeds, mask=mask).astype(seeds.dtype)


def overlap_depth(shape: Sequence[int], halo: int) -> tuple[int, ...]:
    """``halo`` on each axis, but no more than the axis's length.

    A window of a chunk plus its axis's length already holds the whole axis, so a
    larger halo sees nothing more; and dask refuses a depth beyond the array's
    side, which the default halos are on a thin strip or a volume of few slices.
    """
    return tuple(min(halo, n) for n in shape)


def grow(seeds: da.Array, mask: da.Array, *, halo: int,
         elevation: Elevation = distance_to_seeds) -> da.Array:
    """Watershed of globally labelled ``seeds`` inside ``mask``, in windows of chunk + ``halo``."""
    return grow_watched(seeds, mask, halo=halo, elevation=elevation)[0]


def grow_watched(seeds: da.Array, mask: da.Array, *, halo: int,
                 elevation: Elevation = distance_to_seeds) -> tuple[da.Array, list[Delayed]]:
    """:func:`grow`, and one lazy :class:`Seams` per window: computed with the labels (they
    share the windows' watershed), they say whether ``halo`` was wide enough."""
    if seeds.shape != mask.shape:
        raise InstanceError(f"seeds {seeds.shape} and mask {mask.shape} differ in shape.")
    halo = check_halo(halo, 0)
    mask = mask.rechunk(seeds.chunks)
    depth = overlap_depth(seeds.shape, halo)
    axes = dict(enumerate(depth))
    masks = da.overlap.overlap(mask, axes, "none")
    windows = da.map_blocks(watershed_whole, da.overlap.overlap(seeds, axes, "none"), masks,
                            dtype=seeds.dtype, elevation=elevation)
    grown = da.overlap.trim_internal(windows, axes, boundary="none")
    inner = inner_borders(windows.chunks, depth)
    # unoptimized, as the other passes over these windows build theirs: an optimized graph
    # would alias shared keys, and the scheduler warns of a key whose task changed
    blocks = zip(windows.to_delayed(optimize_graph=False).ravel(),
                 masks.to_delayed(optimize_graph=False).ravel(), inner)
    return grown, [dask.delayed(window_seams)(b, s, m) for b, m, s in blocks]


def check_halo(halo: Any, minimum: int, what: str = "") -> int:
    """``halo`` as a whole number of pixels >= ``minimum`` (one for every axis); anything else
    (a fraction, text, a bool) is refused, naming ``what`` needs it."""
    number = as_whole(halo)
    if number is None or number < minimum:
        raise InstanceError(
            f"halo: received {halo!r} ({type(halo).__name__}); expected a whole number of pixels "
            f">= {minimum}{what}, the same on every axis: at least the largest object's extent, "
            "e.g. halo=32.")
    return number


def inner_borders(chunks: tuple[tuple[int, ...], ...],
                  depth: Sequence[int]) -> list[tuple[tuple[int, int, bool, bool], ...]]:
    """For each window (C order) and axis: the halo on its low and high side (the core, its
    chunk, lies between), and whether each side lies inside the raster, not on its edge.
    Window ``i`` of an axis starts ``2 * depth * i`` before its place in the overlapped array
    (each seam between chunks adds ``depth`` on both sides)."""
    per_axis = []
    for sizes, d in zip(chunks, depth):
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        n, last = int(sum(sizes)) - 2 * d * (len(sizes) - 1), len(sizes) - 1
        raster = [int(s) - 2 * d * i for i, s in enumerate(starts)]
        per_axis.append([(d if i else 0, d if i < last else 0, lo > 0, lo + size < n)
                         for i, (lo, size) in enumerate(zip(raster, sizes))])
    return [tuple(sides) for sides in itertools.product(*per_axis)]


@dataclass(frozen=True)
class Seams:
    """Objects of a window that reach its outer border where that border is not the raster's edge:
    the window may not hold them whole, so their labels may differ from the whole image's.
    ``ids``: their (global) ids; ``unseeded``: pieces of mask no seed reached in the window
    that do the same; ``extent``: the widest of them, in pixels, as far as seen."""

    ids: np.ndarray
    extent: int
    unseeded: int = 0

    @property
    def count(self) -> int:
        return int(self.ids.size) + self.unseeded

    @staticmethod
    def merged(parts: Sequence[Seams]) -> Seams:
        ids = np.unique(np.concatenate([np.zeros(0, np.int64)] + [p.ids.astype(np.int64)
                                                                   for p in parts]))
        return Seams(ids, max((p.extent for p in parts), default=0),
                     sum(p.unseeded for p in parts))


def window_seams(labels: np.ndarray, sides: Sequence[tuple[int, int, bool, bool]],
                 mask: np.ndarray | None = None) -> Seams:
    """The :class:`Seams` of one window's labels: objects with pixels in its core (its chunk)
    that reach an outer border lying inside the raster (``sides``: :func:`inner_borders`);
    with the window's ``mask``, also the pieces of it no seed reached."""
    ids, extent = _reaching(labels, sides)
    unseeded = 0
    if mask is not None:
        pieces, _ = ndi.label(mask.astype(bool) & (labels == 0))
        found, more = _reaching(pieces, sides)
        unseeded, extent = int(found.size), max(extent, more)
    return Seams(ids.astype(np.int64), extent, unseeded)


def _reaching(labels: np.ndarray, sides: Sequence[tuple[int, int, bool, bool]]
              ) -> tuple[np.ndarray, int]:
    """Ids of ``labels`` in the core that reach an inner side, and the widest one's extent."""
    edges = [labels.take(i, axis=a) for a, (*_, low, high) in enumerate(sides)
             for i, on in ((0, low), (-1, high)) if on]
    ids = np.unique(np.concatenate([e.ravel() for e in edges])) if edges else np.zeros(0, int)
    core = labels[tuple(slice(lo, n - hi) for (lo, hi, *_), n in zip(sides, labels.shape))]
    ids = ids[(ids > 0) & np.isin(ids, core)]
    if ids.size == 0:
        return ids, 0
    where = np.nonzero(np.isin(labels, ids))
    _, which = np.unique(labels[where], return_inverse=True)
    extent = 0
    for coords in where:
        low = np.full(ids.size, np.iinfo(np.int64).max)
        high = np.full(ids.size, -1)
        np.minimum.at(low, which, coords)
        np.maximum.at(high, which, coords)
        extent = max(extent, int((high - low).max()) + 1)
    return ids, extent


def warn_seams(seams: Seams, halo: int, what: str) -> None:
    """Log a warning when objects reached the border of their window: the labels may then differ
    from the whole image's (objects split at chunk seams), and a wider halo fixes it."""
    if seams.count:
        log.warning("%s: %d object(s) reach the edge of their window (chunk + halo %d pixels) "
                    "and may be split at chunk seams or differ from the whole-image result; "
                    "the widest spans at least %d pixels (cut off by its window, maybe more): "
                    "rerun with a halo of at least that (--halo %d, instances.halo: %d) for "
                    "results equal to the whole image.",
                    what, seams.count, halo, seams.extent, seams.extent, seams.extent)


def complete(grown: da.Array, mask: da.Array, count: int, *, connectivity: int = 1,
             also: Sequence[Delayed] = ()) -> tuple[da.Array, int, list[Any]]:
    """Give mask pixels no seed reached ids of their own, after ``count``; ``also`` is computed
    with the leftovers' border pass (one pass over the windows' watershed), and returned."""
    leftovers, extra, found = label_with(mask.astype(bool) & (grown == 0),
                                         connectivity=connectivity, also=also)
    total = count + extra
    dtype = label_dtype(total)
    shifted = da.where(leftovers > 0, leftovers.astype(dtype) + dtype.type(count), 0)
    labels = da.where(grown > 0, grown.astype(dtype), shifted).astype(dtype)
    return labels, total, found


def instances_from_classes(classes: da.Array, *, interior: int, boundary: Sequence[int],
                           halo: int = 16, connectivity: int = 1) -> tuple[da.Array, int]:
    """Instances from an interior/boundary class raster: interior components grown over the boundary.

    Parameters
    ----------
    classes
        Class ids from an instance-aware network (2D or 3D, chunked).
    interior
        The class whose components are the seeds.
    boundary
        Classes the seeds grow into (the object's outline, shared walls); not ``interior``.
    halo
        Pixels around each chunk the growth may look at; at least the
        boundary's thickness (seeds are labelled over the whole raster, so an
        object larger than the halo keeps one id).
    connectivity
        Of the seeds: 1 joins interior pixels that share a face (4 neighbours in 2D, 6 in
        3D), up to the number of axes (8 in 2D, 26 in 3D), as in ``scipy.ndimage.label``.

    Boundary pixels no interior reaches (1-6 pixel specks of outline without a building) are
    dropped, not made objects of the boundary class: ids are those of the ``count`` seeds.
    """
    labels, counts = decoded(classes, [(interior, boundary)], halo=halo, connectivity=connectivity)
    return labels, counts[0]


def decoded(classes: da.Array, decodings: Sequence[tuple[int, Sequence[int]]], *, halo: int = 16,
            connectivity: int = 1) -> tuple[da.Array, list[int]]:
    """Instances of several decodings (interior, boundary classes) at once: the components of
    every interior are the seeds of one watershed over all their boundary classes, numbered
    interior by interior (``counts[i]`` ids for ``decodings[i]``). A boundary class two
    decodings share (one outline class for buildings and trees) goes to the nearest seed of
    either, as one seeded watershed of all the seeds assigns it."""
    checked = [_decoding(interior, boundary) for interior, boundary in decodings]
    interiors = [interior for interior, _ in checked]
    repeated = sorted(repeated_names(interiors))
    if repeated:
        raise InstanceError(
            f"decodings: received interior class(es) {repeated} in more than one decoding; "
            "expected each interior class in one decoding: its components are one set of seeds. "
            "Merge those decodings into one, listing all their boundary classes.")
    halo = check_halo(halo, 0)
    parts = [label(classes, classes=[interior], connectivity=connectivity) for interior in interiors]
    seeds, _ = stacked(parts, classes)
    mask = da.isin(classes, sorted({c for interior, boundary in checked
                                    for c in (interior, *boundary)}))
    return grow(seeds, mask, halo=halo), [count for _, count in parts]


def _decoding(interior: int, boundary: Sequence[int]) -> tuple[int, list[int]]:
    """``interior`` and ``boundary`` checked: class ids, the interior not among the boundary."""
    interior = class_id(interior, "interior", "the class of the objects' interiors")
    given, boundary = boundary, class_ids(boundary, "boundary", "the classes the interiors grow into")
    if interior in boundary:
        rest = [b for b in boundary if b != interior]
        fix = f": boundary={rest}" if rest else (
            " and name the boundary classes (the objects' outlines); for the components of the "
            f"interior class alone, use label(classes, classes={interior})")
        raise InstanceError(
            f"boundary: received {given!r}, which names the interior class {interior}; expected the "
            f"classes the interiors grow into, other than the interior: a class is either the "
            f"seeds or the area they grow over, not both. Leave {interior} out{fix}.")
    return interior, list(boundary)


def distance_seeds(mask: np.ndarray, h: float) -> np.ndarray:
    """Maxima of the distance to the background deeper than ``h`` pixels (a boolean image)."""
    distance = ndi.distance_transform_edt(mask)
    return morphology.h_maxima(distance, h).astype(bool) & mask


def _check_h(h: object) -> None:
    """Refuse an ``h`` that is not a finite number > 0 (scikit-image's ``h_maxima`` raises on 0
    and on negative values, and never returns on NaN)."""
    number = isinstance(h, (int, float, np.integer, np.floating)) and not isinstance(h, (bool, np.bool_))
    if not number or not np.isfinite(h) or h <= 0:
        raise InstanceError(
            f"h={h!r} ({type(h).__name__}); expected a finite number > 0, the least height (in pixels "
            "of distance) of a seed above its surroundings. Pass e.g. h=2.0 (the default); larger h "
            "merges more objects."
        )


def distance_watershed(mask: da.Array | np.ndarray, *, h: float = 2.0, halo: int = 32,
                       connectivity: int = 1) -> tuple[da.Array, int]:
    """Split touching objects of a binary mask: distance-transform watershed, chunk by chunk.

    The whole-image equivalent: ``edt = distance_transform_edt(mask)``, seeds the
    8-connected (26 in 3D) components of ``h_maxima(edt, h)``, then
    ``watershed(flood_order(-edt), seeds, mask=mask)``: ``-edt`` with ties broken
    by raster position (:func:`flood_order`), not plain ``-edt``, whose ties
    watershed breaks in an order that differs from window to window. Equal to it
    when ``halo`` is at least the largest object's extent. ``h`` (a finite number > 0, in
    pixels of distance) is the least height of a seed above its surroundings: larger ``h``
    merges more. ``mask`` is an integer or boolean Dask array (a NumPy one is taken in one
    chunk), as for :func:`label`.
    """
    _check_h(h)
    mask = checked_mask(mask, connectivity).astype(bool)
    halo = check_halo(halo, 1, " for a distance watershed")
    peaks = da.map_overlap(distance_seeds, mask, depth=overlap_depth(mask.shape, halo),
                           boundary="none", dtype=bool, h=h)
    seeds, count = label(peaks, connectivity=mask.ndim)
    grown, seams = grow_watched(seeds, mask, halo=halo, elevation=depth_in_mask)
    labels, total, found = complete(grown, mask, count, connectivity=connectivity, also=seams)
    warn_seams(Seams.merged(found), halo, "watershed")
    return labels, total
