"""Touching objects: seeds with global ids grown by a watershed inside a mask, chunk by chunk.

Seeds are labelled over the whole raster first (:func:`~geoseg.instances.components.label`),
so a seed keeps its id in every chunk whose halo reaches it, and the growth,
run in windows of one chunk plus ``halo``, needs no merging: a pixel takes the
id of the seed that floods it. When each object fits in ``halo`` around any of
its pixels, every window holds the whole object and the result equals the
same watershed on the whole image. Mask pixels no seed reaches (objects too
small to have an interior) become objects of their own, labelled like any
component.

Two routes use it:

- :func:`instances_from_classes`: an instance-aware network's interior and
  boundary classes (seeds are interior components, grown over the boundary by
  distance to the seeds);
- :func:`distance_watershed`: a classical split of a binary mask, seeds at the
  maxima of the distance to the background, grown down that distance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import dask.array as da
import numpy as np
from scipy import ndimage as ndi
from skimage import morphology, segmentation

from geoseg.errors import InstanceError
from geoseg.instances.components import checked_mask, label, label_dtype

Elevation = Callable[[np.ndarray, np.ndarray], np.ndarray]


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
    if seeds.shape != mask.shape:
        raise InstanceError(f"seeds {seeds.shape} and mask {mask.shape} differ in shape.")
    if halo < 0:
        raise InstanceError(f"halo must be >= 0 pixels; got {halo}.")
    mask = mask.rechunk(seeds.chunks)
    return da.map_overlap(watershed_whole, seeds, mask, depth=overlap_depth(seeds.shape, halo),
                          boundary="none", dtype=seeds.dtype, elevation=elevation)


def complete(grown: da.Array, mask: da.Array, count: int, *,
             connectivity: int = 1) -> tuple[da.Array, int]:
    """Give mask pixels no seed reached ids of their own, after ``count``."""
    leftovers, extra = label(mask.astype(bool) & (grown == 0), connectivity=connectivity)
    total = count + extra
    dtype = label_dtype(total)
    shifted = da.where(leftovers > 0, leftovers.astype(dtype) + dtype.type(count), 0)
    return da.where(grown > 0, grown.astype(dtype), shifted).astype(dtype), total


def instances_from_classes(classes: da.Array, *, interior: int, boundary: Sequence[int],
                           halo: int = 16) -> tuple[da.Array, int]:
    """Instances from an interior/boundary class raster: interior components grown over the boundary.

    Parameters
    ----------
    classes
        Class ids from an instance-aware network (2D or 3D, chunked).
    interior
        The class whose 4-connected (6 in 3D) components are the seeds.
    boundary
        Classes the seeds grow into (the object's outline, shared walls).
    halo
        Pixels around each chunk the growth may look at; at least the
        boundary's thickness.
    """
    seeds, count = label(classes, classes=[interior])
    mask = da.isin(classes, [interior, *boundary])
    return complete(grow(seeds, mask, halo=halo), mask, count)


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
    if halo < 1:
        raise InstanceError(f"halo must be >= 1 pixel for a distance watershed; got {halo}. "
                            "Pass halo of at least the largest object's extent (default 32).")
    peaks = da.map_overlap(distance_seeds, mask, depth=overlap_depth(mask.shape, halo),
                           boundary="none", dtype=bool, h=h)
    seeds, count = label(peaks, connectivity=mask.ndim)
    grown = grow(seeds, mask, halo=halo, elevation=depth_in_mask)
    return complete(grown, mask, count, connectivity=connectivity)
