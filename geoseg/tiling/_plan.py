"""The :class:`Plan`: one frozen answer to what every task of a segmentation reads, computes and writes.

Built once, by :meth:`Plan.create`, from

* the raster's spatial shape, ``(y, x)`` or ``(z, y, x)``;
* the segmenter's :class:`Geometry` (halo, stride, global context, classes: plain values, so
  this module needs neither torch nor :mod:`geoseg.models`);
* the :class:`InferenceSettings` (tile, halo, blend, overlap, batch size; ``None`` = default);
* the output :class:`Layout` (Zarr chunks, and the unit a task writes whole).

Every per-axis value is coerced once, here, to a tuple of one int per spatial axis (as dask's
``coerce_depth`` does); the rest of geoseg reads tuples only. Defaults live here too: output
chunks by dimensionality, ``GEOSEG_TILE`` / ``GEOSEG_VOLUME_TILE``, the model's receptive field
as the halo, a Gaussian blend for models with global context. Pure arithmetic, no data.
"""

from __future__ import annotations

import math
import operator
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from geoseg import config
from geoseg.errors import PlanError
from geoseg.tiling.plan import (
    Tile,
    Tiling,
    ceil_div,
    coerce_per_axis,
    inference_cost,
    read_window,
    region_tiles,
    regions,
    round_up,
    task_region,
    tiling_cost,
)

DEFAULT_CHUNK = {2: 1024, 3: 128}  # output chunk per spatial axis, for images and volumes
INPUT_CHUNK = {2: 512, 3: 128}  # chunk of an input converted to Zarr (geoseg convert)
DEFAULT_OVERLAP = 0.5  # of neighbouring blended windows
MAX_COST = 1.25  # pixels inferred per pixel of one pass over the image, above which we warn
# Pixels one pass of the tiling infers per image pixel (halos, overlaps), above which we warn:
# twice what blended windows of the default overlap cost a volume (0.5 on three axes: 8x).
MAX_TILING_COST = 16.0

PerAxis = int | Sequence[int]


def default_chunks(shape: Sequence[int], table: Mapping[int, int] = DEFAULT_CHUNK) -> tuple[int, ...]:
    """The chunks of a raster of spatial ``shape`` when none are given (``table``: a size per
    number of axes, images' for fewer), clipped to it."""
    size = table.get(len(shape), table[2])
    return tuple(max(1, min(size, int(n))) for n in shape)


@dataclass(frozen=True)
class Layout:
    """The output's Zarr ``chunks`` and the ``shards`` a task writes whole (the chunks when not
    sharding), per spatial axis, clipped to the raster."""

    chunks: tuple[int, ...]
    shards: tuple[int, ...]

    @classmethod
    def create(cls, shape: Sequence[int], chunks: PerAxis | None = None,
               shards: PerAxis | None = None, *, like: Sequence[int] | None = None,
               default: Mapping[int, int] = DEFAULT_CHUNK) -> Layout:
        """``chunks`` (an int or one per axis; default: ``like``, the input's own chunks, else
        ``default``: 1024 per axis for images, 128 for volumes) and ``shards`` (whole chunks
        per axis)."""
        ndim = len(shape)
        wanted = like if chunks is None else chunks
        inner = default_chunks(shape, default) if wanted is None else coerce_per_axis(wanted, ndim, "chunks")
        _positive(inner, "chunks")
        inner = tuple(max(1, min(c, n)) for c, n in zip(inner, shape))
        if shards is None:
            return cls(inner, inner)
        outer = coerce_per_axis(shards, ndim, "shards")
        _positive(outer, "shards")
        return cls(inner, tuple(min(s, round_up(max(n, 1), c)) for s, n, c in zip(outer, shape, inner)))


@dataclass(frozen=True)
class Geometry:
    """What tiling needs to know of a segmenter: the context it needs per side (``halo``, its
    receptive radius), its total ``stride``, whether it pools over its whole input
    (``global_context``) and its number of classes (which sizes a task's buffers)."""

    halo: PerAxis = 0
    stride: PerAxis = 1
    global_context: bool = False
    n_classes: int = 1
    name: str = "the segmenter"

    @classmethod
    def of(cls, segmenter: Any) -> Geometry:
        """The geometry of any segmenter (deep model, classical method, ensemble, TTA)."""
        return cls(segmenter.halo, segmenter.stride, bool(segmenter.global_context),
                   int(segmenter.n_classes), str(segmenter.name))

    def per_axis(self, name: str, ndim: int) -> tuple[int, ...]:
        """``halo`` or ``stride`` for ``ndim`` axes; one value repeated on every axis (a
        pixel-wise method's ``(1, 1)``, say) applies to any number of axes."""
        value = getattr(self, name)
        if not isinstance(value, int) and len(set(value)) == 1 and len(value) != ndim:
            value = next(iter(value))
        return coerce_per_axis(value, ndim, f"the segmenter's {name}")


@dataclass(frozen=True)
class InferenceSettings:
    """What the user asked for (``None``: the default). ``tile`` and ``halo``: an int, or one
    per spatial axis. A ``halo`` together with a blend other than ``"crop"`` is an error (see
    :meth:`Plan.create`)."""

    tile: PerAxis | None = None
    halo: PerAxis | None = None
    blend: str | None = None
    overlap: float | None = None
    batch_size: int | None = None


@dataclass(frozen=True)
class Plan:
    """Tiles, halos, windows, task regions and output chunks of one segmentation, per axis.

    ``tiling`` cuts the image into network windows; ``region`` is what one task computes and
    writes (whole ``layout.shards``); ``batch_size`` tiles go through the network at once."""

    shape: tuple[int, ...]
    tiling: Tiling
    layout: Layout
    region: tuple[int, ...]
    batch_size: int

    @classmethod
    def create(cls, shape: Sequence[int], geometry: Geometry,
               inference: InferenceSettings | None = None, layout: Layout | None = None, *,
               min_pixels: int = 1) -> Plan:
        """The plan, every default filled in.

        A task computes a region of whole shards grown until halos and blended overlaps cost
        at most about 1.25x one pass over the image (:func:`~geoseg.tiling.plan.task_region`,
        bounded by ``GEOSEG_REGION_BYTES``); a warning gives the factor when it cannot grow
        enough; with ``min_pixels``, a region holds at least that many pixels where the image
        and that bound allow (whole shards still). Without a ``tile``, cropped tiles are ``GEOSEG_TILE`` (``GEOSEG_VOLUME_TILE``)
        long, or as long as the region when it is shorter (blended windows keep their size:
        it sets the blend).

        An explicit non-zero ``halo`` with a blend other than ``"crop"`` (given, or the default
        for a model with global context) raises :class:`~geoseg.errors.PlanError` rather than
        a warning: blended windows have no halo, so the halo would be dropped and the output
        would silently differ from what the halo promises (exactness at tile seams). A warning
        is easily lost in a cluster's logs, while ``geoseg validate`` reports the error before
        anything runs; the fix (drop the halo, or blend ``crop``) is one line.
        """
        shape = _shape(shape)
        inference = inference or InferenceSettings()
        layout = layout or Layout.create(shape)
        blend = _blend(geometry, inference, len(shape))
        tiling = _tiling(shape, geometry, inference, blend, None)
        region = task_region(tiling, layout.shards, max_cost=MAX_COST,
                             max_pixels=config.region_bytes() // (4 * geometry.n_classes + 16),
                             min_pixels=min_pixels)
        if inference.tile is None and blend == "crop":  # no tile longer than a region (two strides)
            tile = tuple(min(t, max(r, 2 * s)) for t, r, s in zip(tiling.tile, region, tiling.stride))
            tiling = _tiling(shape, geometry, inference, blend, tile)
        _warn_short_halo(tiling, geometry, region)
        _warn_recompute(tiling, layout.shards, region)
        _warn_tiling(tiling)
        return cls(shape, tiling, layout, region, inference.batch_size or config.batch_size())

    @property
    def tile(self) -> tuple[int, ...]:
        return self.tiling.tile

    @property
    def halo(self) -> tuple[int, ...]:
        return self.tiling.halo

    @property
    def chunks(self) -> tuple[int, ...]:
        """The output's Zarr chunks."""
        return self.layout.chunks

    @property
    def n_tasks(self) -> int:
        return math.prod(ceil_div(n, r) for n, r in zip(self.shape, self.region))

    def regions(self) -> Iterator[tuple[slice, ...]]:
        """Every task's region, in raster order (edge regions clipped)."""
        return regions(self.shape, self.region)

    def windows(self, region: Sequence[slice]) -> list[Tile]:
        """The network tiles of one region: each tile's window and the part it writes."""
        return region_tiles(self.tiling, region)

    def read_window(self, region: Sequence[slice]) -> tuple[slice, ...]:
        """The input window a task of ``region`` reads, clipped to the raster (the part of a
        window past the image end is padded, not read)."""
        window = read_window(self.windows(region))
        return tuple(slice(w.start, min(w.stop, n)) for w, n in zip(window, self.shape))


def _shape(shape: Sequence[int]) -> tuple[int, ...]:
    try:
        out = tuple(operator.index(n) for n in shape)
    except TypeError:
        raise PlanError(f"shape={shape!r}: expected one int per spatial axis, (y, x) or (z, y, x).") from None
    if not out or min(out) < 1:
        raise PlanError(f"shape={out}: expected a spatial shape of one or more axes, each >= 1.")
    return out


def _positive(values: tuple[int, ...], name: str) -> None:
    if any(v < 1 for v in values):
        raise PlanError(f"{name}={values}: expected sizes >= 1 on every axis.")


def _blend(geometry: Geometry, inference: InferenceSettings, ndim: int) -> str:
    blend = inference.blend or ("gaussian" if geometry.global_context else "crop")
    if geometry.global_context and blend == "crop":
        warnings.warn(f"{geometry.name} pools over its whole input (global context): cropped tiles cannot "
                      "equal whole-image inference; blend='gaussian' hides the seams.", stacklevel=4)
    halo = None if inference.halo is None else coerce_per_axis(inference.halo, ndim, "halo")
    if blend != "crop" and halo is not None and any(h > 0 for h in halo):
        why = "" if inference.blend else f" (the default for {geometry.name}, which has global context)"
        raise PlanError(
            f"halo={inference.halo!r} was given with blend={blend!r}{why}; blended windows overlap by "
            "the fraction overlap and use no halo, so this halo would be ignored. Drop the halo, or "
            "set blend='crop' (inference.blend: crop) to crop tile cores with it.")
    if blend == "crop" and inference.overlap:
        why = "" if inference.blend else f" (the default for {geometry.name})"
        raise PlanError(
            f"overlap={inference.overlap!r} was given with blend='crop'{why}; cropped tiles meet "
            "edge to edge and see their context through the halo, so this overlap would be "
            "ignored. Drop the overlap, or set a blend (inference.blend: gaussian) to blend "
            "overlapping windows.")
    return blend


def _warn_short_halo(tiling: Tiling, geometry: Geometry, region: Sequence[int]) -> None:
    """Warn when cropped tiles get less context than the segmenter's receptive field (a halo
    given below it, which trades exactness for speed) along an axis where tiles or task
    regions meet inside the image: pixels near those edges then differ from whole-image
    inference, and the output shows seams. One tile over the whole image has no such edge.
    Global context never matches anyway (:func:`_blend` says so)."""
    needed = geometry.per_axis("halo", len(tiling.shape))
    if tiling.blend != "crop" or geometry.global_context:
        return
    edges = [min(t, r) < n for t, r, n in zip(tiling.tile, region, tiling.shape)]
    if all(h >= n or not inside for h, n, inside in zip(tiling.halo, needed, edges)):
        return
    warnings.warn(
        f"halo {tiling.halo} is below {geometry.name}'s receptive field ({needed} pixels per "
        "side): pixels within that distance of a tile's edge differ from whole-image "
        "inference, and the output may show seams. Leave the halo out for exact results.",
        UserWarning, stacklevel=4)


def _tiling(shape: tuple[int, ...], geometry: Geometry, inference: InferenceSettings, blend: str,
            tile: tuple[int, ...] | None) -> Tiling:
    ndim = len(shape)
    overlap = inference.overlap
    return Tiling.create(
        shape,
        tile=tile or (inference.tile if inference.tile is not None else config.tile_size(ndim)),
        halo=geometry.per_axis("halo", ndim) if inference.halo is None else inference.halo,
        stride=geometry.per_axis("stride", ndim),
        blend=blend,
        overlap=DEFAULT_OVERLAP if overlap is None and blend != "crop" else (overlap or 0.0),
    )


def _warn_recompute(spec: Tiling, unit: Sequence[int], region: Sequence[int]) -> None:
    """Warn (a Python warning, for the library's callers; a job logs it) when tasks of
    ``region`` infer more than :data:`MAX_COST` times one pass over the image."""
    cost = inference_cost(spec, region)
    if cost > MAX_COST:
        warnings.warn(
            f"Output chunks {tuple(unit)} make tasks of {tuple(region)} pixels infer {cost:.2f}x "
            f"the pixels of one pass over the image ({_cause(spec, unit)}). {_advice(spec, unit)}, or "
            "raise GEOSEG_REGION_BYTES so tasks may compute larger regions.", stacklevel=4)


def _warn_tiling(spec: Tiling) -> None:
    """Warn when the tiling itself infers more than :data:`MAX_TILING_COST` times the image's
    pixels: tiles short next to their halos, or blended windows that overlap almost wholly."""
    cost = tiling_cost(spec)
    if cost <= MAX_TILING_COST:
        return
    if spec.blend != "crop":
        said = (f"blended windows of {_axes(spec.window_shape)} pixels with overlap "
                f"{spec.overlap} step by {_axes(spec.steps)}")
        fix = "Use an overlap of 0.25 to 0.5 (inference.overlap)"
    else:
        said = (f"tiles of {_axes(spec.tile)} pixels with halos of {_axes(spec.halo)} compute "
                f"windows of {_axes(spec.window_shape)}")
        fix = (f"Use tiles of at least {_axes(tuple(4 * h for h in spec.halo))} pixels (4x the "
               "halo; inference.tile), or leave the tile out for GEOSEG_TILE")
    warnings.warn(f"The tiling infers about {cost:.0f}x the image's pixels: {said}. {fix}.",
                  stacklevel=4)


def _cause(spec: Tiling, unit: Sequence[int]) -> str:
    """What tasks infer again, in words."""
    if spec.blend != "crop":
        return "overlapping windows computed again by neighbouring tasks"
    if any(spec.halo) and any(u < t for u, t in zip(unit, spec.tile)):
        return (f"halos of {_axes(spec.halo)} pixels around tiles shortened to a task's region, "
                "read and computed again by neighbouring tasks")
    halos = f"halos of {_axes(spec.halo)} pixels and " if any(spec.halo) else ""
    return (f"{halos}tiles of {_axes(spec.tile)} pixels that reach past a task's region, computed "
            "again by neighbouring tasks")


def _axes(values: Sequence[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else str(tuple(values))


def _advice(spec: Tiling, unit: Sequence[int]) -> str:
    """The output chunking that keeps the recompute cost low for ``spec``. Cropped tiles cost
    nothing extra in regions that are whole tiles long: chunks shorter than a tile grow
    halos' share, chunks that are not whole tiles make a last tile reach past each region."""
    if spec.blend != "crop":
        least = 8 * max(w - s for w, s in zip(spec.window_shape, spec.steps))
        return f"Use output chunks (or shards) of at least {least} pixels per axis"
    if any(u < t for u, t in zip(unit, spec.tile)):
        return f"Use output chunks (or shards) of at least {_axes(spec.tile)} pixels per axis"
    return (f"Use output chunks (or shards) that are whole multiples of the tile, "
            f"{_axes(spec.tile)} pixels per axis, or an inference.tile that divides them")
