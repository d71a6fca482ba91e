"""Tiling plan: pure arithmetic on shapes, no data, no cluster.

Vocabulary, per spatial axis of length ``n``:

* the **padded extent** ``P = ceil(n / stride) * stride`` is what the model sees
  when it runs on the whole image at once (the image is reflect-padded at its
  end up to ``P``);
* a **region** is the part of the output one task writes: one or more whole
  output chunks, so writes never straddle a chunk and need no lock;
* a **tile** is one network input inside a region. Its *core* lies on a grid
  aligned to the model's total stride, its *window* is the core grown by the halo
  and shifted inward to stay inside ``[0, P)``. Every window of a region has the
  same length, so its tiles batch together. A region shorter than a tile (the
  last one along an axis, say) gets a tile no longer than itself: a whole tile
  would only grow inward, to be read and inferred and then thrown away.

Because windows start on multiples of the stride and never leave ``[0, P)``,
each tile sees the same pixel grid and the same border padding as the whole
image does; when the halo covers the receptive field, the cropped cores equal
whole-image inference exactly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from geoseg.core.text import as_whole
from geoseg.errors import PlanError

BLEND_MODES = ("crop", "gaussian", "constant", "linear", "cosine")  # crop: tile cores with a halo


@dataclass(frozen=True)
class AxisTile:
    """One tile along one axis; all bounds are half-open image coordinates.

    ``out_start:out_stop`` is the part of the region this tile writes;
    ``win_start:win_stop`` is the network input window (may reach past the
    image end, up to the padded extent).
    """

    out_start: int
    out_stop: int
    win_start: int
    win_stop: int


@dataclass(frozen=True)
class Tile:
    """An N-dimensional tile: the product of one :class:`AxisTile` per axis."""

    axes: tuple[AxisTile, ...]

    @property
    def window(self) -> tuple[slice, ...]:
        return tuple(slice(a.win_start, a.win_stop) for a in self.axes)

    @property
    def output(self) -> tuple[slice, ...]:
        return tuple(slice(a.out_start, a.out_stop) for a in self.axes)


@dataclass(frozen=True)
class Tiling:
    """How one image is cut into tiles; validated on construction.

    Parameters
    ----------
    shape
        Spatial shape of the image, e.g. ``(height, width)``.
    tile
        Core size of a tile per axis, a multiple of ``stride``.
    halo
        Context added on each side of a core, per axis, a multiple of ``stride``.
    stride
        The model's total downsampling factor per axis (1 for pixel-wise methods).
    """

    shape: tuple[int, ...]
    tile: tuple[int, ...]
    halo: tuple[int, ...]
    stride: tuple[int, ...]
    blend: str = "crop"
    overlap: float = 0.0

    def __post_init__(self) -> None:
        _check_spec(self)

    @classmethod
    def create(
        cls,
        shape: Sequence[int],
        *,
        tile: int | Sequence[int],
        halo: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        blend: str = "crop",
        overlap: float = 0.0,
    ) -> Tiling:
        """Build a spec, rounding ``tile`` and ``halo`` up to multiples of ``stride``.

        With a ``blend`` mode other than ``"crop"``, windows are ``tile`` long, overlap
        their neighbours by the fraction ``overlap`` and the halo is not used.
        """
        shape = coerce_per_axis(shape, len(shape), "shape") if _sized(shape) else shape
        ndim = len(shape) if _sized(shape) else 0
        stride_ = coerce_per_axis(stride, ndim, "stride")
        if any(s < 1 for s in stride_):
            raise PlanError(f"stride must be positive on every axis, got {stride_}.")
        if not 0.0 <= _fraction(overlap) < 1.0:
            raise PlanError(f"overlap={overlap} must be a fraction in [0, 1), e.g. 0.25.")
        tile_ = tuple(round_up(t, s) for t, s in zip(coerce_per_axis(tile, ndim, "tile"), stride_))
        halo_ = tuple(round_up(h, s) for h, s in zip(coerce_per_axis(halo, ndim, "halo"), stride_))
        if blend != "crop":
            halo_ = (0,) * ndim
        return cls(tuple(int(n) for n in shape), tile_, halo_, stride_, blend, float(overlap))

    @property
    def padded_shape(self) -> tuple[int, ...]:
        return tuple(round_up(n, s) for n, s in zip(self.shape, self.stride))

    @property
    def window_shape(self) -> tuple[int, ...]:
        """The length of a tile window, per axis (a region shorter than a tile has shorter ones)."""
        return tuple(min(t + 2 * h, p) for t, h, p in zip(self.tile, self.halo, self.padded_shape))

    @property
    def steps(self) -> tuple[int, ...]:
        """Distance between neighbouring blended windows (stride-aligned, at least one stride)."""
        return tuple(max(s, round_down(int(w * (1 - self.overlap)), s))
                     for w, s in zip(self.window_shape, self.stride))


def coerce_per_axis(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    """Turn an int or a per-axis sequence into a tuple of ``ndim`` ints (a bool is refused:
    ``chunks=True`` would read as chunks of one pixel)."""
    items = list(value) if _sized(value) else [value]
    wholes = [as_whole(v) for v in items]
    if None in wholes:
        raise PlanError(f"{name}={value!r}: expected an int, or one int per axis.")
    values = tuple(wholes) * (1 if _sized(value) else ndim)
    if len(values) != ndim:
        raise PlanError(
            f"{name} has {len(values)} values {values} but the image has {ndim} spatial axes; "
            f"give one int, or one per axis."
        )
    return values


def _sized(value: object) -> bool:
    return hasattr(value, "__len__") and hasattr(value, "__iter__")


def _fraction(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise PlanError(f"overlap={value!r}: expected a fraction in [0, 1), e.g. 0.25.") from None


def ceil_div(n: int, d: int) -> int:
    """``n / d`` rounded up: how many blocks of ``d`` it takes to cover ``n``."""
    return -(-n // d)


def round_up(n: int, multiple: int) -> int:
    return ceil_div(n, multiple) * multiple


def round_down(n: int, multiple: int) -> int:
    return (n // multiple) * multiple


def _check_spec(spec: Tiling) -> None:
    fields = {"shape": spec.shape, "tile": spec.tile, "halo": spec.halo, "stride": spec.stride}
    ndim = len(spec.shape)
    if ndim == 0:
        raise PlanError("shape=() has no axes; expected the spatial shape, (y, x) or (z, y, x).")
    for name, values in fields.items():
        if len(values) != ndim:
            raise PlanError(f"{name}={values} has {len(values)} axes, expected {ndim}.")
    for name in ("shape", "tile", "stride"):
        if any(v < 1 for v in fields[name]):
            raise PlanError(f"{name} must be positive on every axis, got {fields[name]}.")
    if any(h < 0 for h in spec.halo):
        raise PlanError(f"halo must be >= 0 on every axis, got {spec.halo}.")
    for name in ("tile", "halo"):
        if any(v % s for v, s in zip(fields[name], spec.stride)):
            raise PlanError(
                f"{name}={fields[name]} is not a multiple of the model stride {spec.stride}; "
                f"use Tiling.create(), which rounds up."
            )
    if spec.blend not in BLEND_MODES:
        raise PlanError(f"blend={spec.blend!r} is not a blend mode; expected one of {BLEND_MODES}.")
    if not 0.0 <= spec.overlap < 1.0:
        raise PlanError(f"overlap={spec.overlap} must be a fraction in [0, 1), e.g. 0.25.")
    if any(s > 1 and t + 2 * h < 2 * s for t, h, s in zip(spec.tile, spec.halo, spec.stride)):
        raise PlanError(
            f"tile {spec.tile} plus twice the halo {spec.halo} must be at least twice the "
            f"stride {spec.stride}, so that border padding sees enough pixels; use a larger tile."
        )


def axis_tiles(start: int, stop: int, spec_axis: tuple[int, int, int, int]) -> list[AxisTile]:
    """Tiles covering the region ``[start, stop)`` of one axis.

    ``spec_axis`` is ``(n, tile, halo, stride)`` for that axis. Cores lie on a
    stride-aligned grid starting at ``round_down(start, stride)``; the last one
    may be shorter, none is dropped. Tiles are no longer than the region (rounded
    out to the stride, and at least two strides so border padding sees enough pixels).
    Without a halo, the tiles split the region evenly (:func:`fitted_tile`): a tile that
    reached past the region would infer pixels its neighbouring task infers again.
    """
    n, tile, halo, stride = spec_axis
    padded = round_up(n, stride)
    first = round_down(start, stride)
    span = round_up(stop, stride) - first
    tile = min(tile, max(span, 2 * stride))  # never past the region
    if halo == 0:
        tile = fitted_tile(tile, span, stride)
    length = min(tile + 2 * halo, padded)
    tiles = []
    for core in range(first, stop, tile):
        win_start = min(max(core - halo, 0), padded - length)
        tiles.append(AxisTile(max(core, start), min(core + tile, stop), win_start, win_start + length))
    return tiles


def fitted_tile(tile: int, span: int, stride: int) -> int:
    """The shortest stride-aligned tile, at most ``tile``, that covers ``span`` pixels in as
    few tiles as ``tile`` does (``span`` 256 with ``tile`` 96: three of 86, not a third that
    reaches 32 pixels past the span); never under two strides, as ``tile`` is not."""
    even = round_up(ceil_div(span, ceil_div(span, tile)), stride)
    return tile if even > tile else max(even, min(tile, 2 * stride))


def blended_axis_tiles(start: int, stop: int, padded: int, length: int, step: int) -> list[AxisTile]:
    """Windows of a global overlapping grid that touch ``[start, stop)``.

    The grid is ``0, step, 2 * step, ...`` with the last window shifted to end at
    the padded extent, so every region sees the windows the whole image would;
    each tile's output is its whole window clipped to the region.
    """
    starts = list(range(0, max(padded - length, 0), step)) + [max(padded - length, 0)]
    return [AxisTile(max(w, start), min(w + length, stop), w, w + length)
            for w in starts if w < stop and w + length > start]


def region_tiles(spec: Tiling, region: Sequence[slice]) -> list[Tile]:
    """All tiles of one region (a tuple of slices inside the image)."""
    if spec.blend == "crop":
        per_axis = [
            axis_tiles(r.start, r.stop, (n, t, h, s))
            for r, n, t, h, s in zip(region, spec.shape, spec.tile, spec.halo, spec.stride)
        ]
    else:
        per_axis = [
            blended_axis_tiles(r.start, r.stop, p, w, step)
            for r, p, w, step in zip(region, spec.padded_shape, spec.window_shape, spec.steps)
        ]
    return [Tile(tuple(combo)) for combo in itertools.product(*per_axis)]


def read_window(tiles: Sequence[Tile]) -> tuple[slice, ...]:
    """The smallest window (in padded coordinates) holding every tile window."""
    ndim = len(tiles[0].axes)
    return tuple(
        slice(min(t.axes[i].win_start for t in tiles), max(t.axes[i].win_stop for t in tiles))
        for i in range(ndim)
    )


def regions(shape: Sequence[int], chunks: Sequence[int]) -> Iterator[tuple[slice, ...]]:
    """The chunk grid of an array: one region per output chunk, edge chunks clipped."""
    _check_grid(shape, chunks)
    starts = [range(0, n, c) for n, c in zip(shape, chunks)]  # lazy: a grid may be huge
    return (tuple(slice(i, min(i + c, n)) for i, c, n in zip(combo, chunks, shape))
            for combo in _lazy_product(starts))


def _lazy_product(ranges: Sequence[range]) -> Iterator[tuple[int, ...]]:
    """``itertools.product`` without first copying each range into a tuple."""
    if not ranges:
        yield ()
        return
    if not all(ranges):  # an empty axis: no combination, however long the others
        return
    for i in ranges[0]:
        for rest in _lazy_product(ranges[1:]):
            yield (i, *rest)


def _check_grid(shape: Sequence[int], chunks: Sequence[int], *, same_length: bool = True) -> None:
    if ((same_length and len(shape) != len(chunks)) or any(c < 1 for c in chunks)
            or any(n < 0 for n in shape)):
        raise PlanError(f"chunks {tuple(chunks)} do not fit shape {tuple(shape)}: expected one "
                        "chunk size >= 1 per axis of a shape >= 0.")


def n_regions(shape: Sequence[int], chunks: Sequence[int]) -> int:
    _check_grid(shape, chunks, same_length=False)  # callers check lengths with a better message
    return math.prod(ceil_div(n, c) for n, c in zip(shape, chunks))


def inference_cost(spec: Tiling, region: Sequence[int]) -> float:
    """Pixels inferred when tasks of ``region`` size each run their own tiles, per pixel inferred
    by one pass of the same tiling over the whole image (1.0: no window runs twice).

    Per axis the windows of every region are summed and divided by the windows of the whole
    axis; the axes multiply. Pure arithmetic, cheap for any image size."""
    cost = 1.0
    for axis, length in enumerate(region):
        cost *= _axis_cost(spec, axis, int(length))
    return cost


def tiling_cost(spec: Tiling) -> float:
    """Pixels one pass of ``spec`` over the whole image infers per image pixel, whatever the
    tasks: halos around cropped tiles and overlaps of blended windows (1.0: none). Per axis the
    windows' lengths over the axis's; the axes multiply."""
    return math.prod(_axis_windows(spec, axis, 0, n) / n for axis, n in enumerate(spec.shape))


def _axis_cost(spec: Tiling, axis: int, length: int) -> float:
    n = spec.shape[axis]
    starts = range(0, n, length)
    inferred = sum(_axis_windows(spec, axis, s, min(s + length, n)) for s in starts)
    return inferred / _axis_windows(spec, axis, 0, n)


def _axis_windows(spec: Tiling, axis: int, start: int, stop: int) -> int:
    """Summed window length of the tiles covering ``[start, stop)`` along ``axis``."""
    if spec.blend == "crop":
        tiles = axis_tiles(start, stop, (spec.shape[axis], spec.tile[axis], spec.halo[axis],
                                         spec.stride[axis]))
    else:
        tiles = blended_axis_tiles(start, stop, spec.padded_shape[axis], spec.window_shape[axis],
                                   spec.steps[axis])
    return sum(t.win_stop - t.win_start for t in tiles)


def task_region(spec: Tiling, unit: Sequence[int], *, max_cost: float = 1.25,
                max_pixels: int | None = None, min_pixels: int = 1) -> tuple[int, ...]:
    """What one task computes: whole ``unit``s (output chunks or shards) per axis, grown until
    :func:`inference_cost` is at most ``max_cost`` (halos and overlaps then cost little
    whatever the output chunking), the region spans the image, or it would exceed ``max_pixels``;
    then, while it holds fewer than ``min_pixels``, along its shortest axis (a task's fixed
    cost then stays small next to its pixels' whatever the output chunking).

    Each step grows, by one unit, the axis whose own cost is highest."""
    units = [1] * len(unit)
    limits = [max(1, ceil_div(n, u)) for n, u in zip(spec.shape, unit)]

    def region(counts: Sequence[int]) -> tuple[int, ...]:
        return tuple(c * u for c, u in zip(counts, unit))

    while inference_cost(spec, region(units)) > max_cost:
        costs = sorted(((_axis_cost(spec, a, region(units)[a]), a) for a in range(len(unit))
                        if units[a] < limits[a]), reverse=True)
        grown = next((a for cost, a in costs if cost > 1.0 and _fits(region(units), unit, a, max_pixels)),
                     None)
        if grown is None:
            break
        units[grown] += 1
    while math.prod(region(units)) < min_pixels:
        shortest = sorted((r, a) for a, r in enumerate(region(units))
                          if units[a] < limits[a] and _fits(region(units), unit, a, max_pixels))
        if not shortest:
            break
        units[shortest[0][1]] += 1
    return region(units)


def _fits(region: Sequence[int], unit: Sequence[int], axis: int, max_pixels: int | None) -> bool:
    grown = list(region)
    grown[axis] += unit[axis]
    return max_pixels is None or math.prod(grown) <= max_pixels
