"""One task's work: read a window, run the segmenter tile by tile, crop into the region.

Pure compute given a reader; the same function serves the lazy ``segment`` graph
and the store-to-store job, on a laptop or a cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from geoseg.errors import ChunkResultError
from geoseg.models.base import Segmenter, pad_end
from geoseg.tiling.blend import blend_weights
from geoseg.tiling.plan import Tile, TilingSpec, read_window, region_tiles

Reader = Callable[[tuple[slice, ...]], np.ndarray]


@dataclass
class RegionResult:
    """Scores ``(classes, *region)`` and validity ``(*region)`` for one region, plus timings.
    ``empty``: the region had no valid input pixel, so the segmenter was not run."""

    scores: np.ndarray
    valid: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    empty: bool = False


def segment_region(segmenter: Segmenter, read: Reader, spec: TilingSpec, region: tuple[slice, ...],
                   *, nodata: float | None = None, batch_size: int = 4) -> RegionResult:
    """Segment ``region`` of an image whose pixels ``read(window)`` returns.

    ``read`` gets windows inside the image; the part of a window past the image
    end (up to the padded extent) is reflect-padded here, as the whole-image
    reference does.
    """
    t0 = time.perf_counter()
    tiles = region_tiles(spec, region)
    window = read_window(tiles)
    inside = tuple(slice(w.start, min(w.stop, n)) for w, n in zip(window, spec.shape))
    raw = read(inside)
    t1 = time.perf_counter()
    x, valid = segmenter.prepare(raw, nodata)
    local = tuple(slice(r.start - w.start, r.stop - w.start) for r, w in zip(region, window))
    if not valid[local].any():  # every output pixel is nodata whatever the model says
        scores = np.zeros((segmenter.n_classes, *valid[local].shape), np.float32)
        return RegionResult(scores, valid[local], {"read": t1 - t0, "infer": 0.0}, empty=True)
    x = pad_end(x, [w.stop - w.start for w in window])
    scores = _run_tiles(segmenter, x, tiles, window, region, spec, batch_size)
    t2 = time.perf_counter()
    return RegionResult(scores, valid[local], {"read": t1 - t0, "infer": t2 - t1})


def _run_tiles(segmenter: Segmenter, x: np.ndarray, tiles: list[Tile], window: tuple[slice, ...],
               region: tuple[slice, ...], spec: TilingSpec, batch_size: int) -> np.ndarray:
    """Scores of the region: cropped tile cores, or the weighted mean of blended windows."""
    shape = tuple(r.stop - r.start for r in region)
    out = np.zeros((segmenter.n_classes,) + shape, np.float32)
    blended = spec.blend != "crop"
    if blended:
        ramp = [w - s for w, s in zip(spec.window_shape, spec.steps)]
        weights = blend_weights(spec.blend, spec.window_shape, ramp)
        total = np.zeros(shape, np.float32)
    for start in range(0, len(tiles), max(1, batch_size)):
        batch = tiles[start : start + batch_size]
        inputs = np.stack([x[(slice(None),) + _shift(t.window, window)] for t in batch])
        scores = segmenter.predict(inputs)
        _check_scores(scores, inputs, segmenter, region)
        for tile, tile_scores in zip(batch, scores):
            part = _shift(tile.output, tile.window)
            target = (slice(None),) + _shift(tile.output, region)
            if blended:
                out[target] += weights[part] * tile_scores[(slice(None),) + part]
                total[target[1:]] += weights[part]
            else:
                out[target] = tile_scores[(slice(None),) + part]
    if blended:
        out /= total
    return out


def _check_scores(scores: np.ndarray, inputs: np.ndarray, segmenter: Segmenter,
                  region: tuple[slice, ...]) -> None:
    expected = (inputs.shape[0], segmenter.n_classes) + inputs.shape[2:]
    if scores.shape != expected:
        raise ChunkResultError(
            f"{segmenter.name} returned scores of shape {scores.shape} for a batch of shape "
            f"{inputs.shape} in region {_fmt(region)}; expected {expected} (batch, classes, *window)."
        )


def _fmt(region: tuple[slice, ...]) -> str:
    return "[" + ", ".join(f"{r.start}:{r.stop}" for r in region) + "]"


def _shift(slices: tuple[slice, ...], origin: tuple[slice, ...]) -> tuple[slice, ...]:
    return tuple(slice(s.start - o.start, s.stop - o.start) for s, o in zip(slices, origin))
