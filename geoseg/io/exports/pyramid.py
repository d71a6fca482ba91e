"""Downsampling class ids for label pyramids, never by averaging.

``mode`` gives each coarse pixel the most frequent class of the block of fine
pixels it covers (no-data counts only where the whole block is no data; ties
go to the smallest id); ``nearest`` takes the block's centre pixel. Either way
every coarse pixel is a class id present in its block. Every level is made from the
full-resolution pixels (:func:`coarse_window`), never from the level before it: a mode of
modes is not the mode of the block.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from geoseg.errors import ExportError
from geoseg.tiling.plan import ceil_div, regions

METHODS = ("mode", "nearest")
MODE_WINDOW = 4096 * 4096  # full-resolution pixels read at once for one coarse window
Read = Callable[[tuple[slice, ...]], np.ndarray]


def parse_resampling(value: str) -> str:
    """``"mode"`` or ``"nearest"``; anything else (averages, interpolation) is refused."""
    name = str(value).strip().lower()
    if name not in METHODS:
        raise ExportError(
            f"resampling {value!r} is not allowed for class ids: averaging or interpolating them "
            f"makes ids that mean nothing. Expected one of: {', '.join(METHODS)} "
            "(mode is the default)."
        )
    return name


def factors_between(fine: Sequence[int], coarse: Sequence[int]) -> tuple[int, ...]:
    """The integer downsampling factor per axis from a ``fine`` shape to a ``coarse`` one."""
    return tuple(max(1, round(f / c)) for f, c in zip(fine, coarse))


def coarse_window(
    read: Read,
    fine_shape: Sequence[int],
    window: tuple[slice, ...],
    factors: Sequence[int],
    method: str,
    nodata: int,
    dtype: np.dtype,
) -> np.ndarray:
    """The coarse pixels of ``window`` from the full-resolution pixels ``read`` returns, reading
    at most :data:`MODE_WINDOW` fine pixels at a time: the window in pieces, or, where one
    coarse pixel's block alone is larger, that block counted in pieces (:func:`block_value`)."""
    shape = tuple(w.stop - w.start for w in window)
    out = np.empty(shape, dtype=dtype)
    per_pixel = int(np.prod(factors))
    steps = pieces(shape, MODE_WINDOW // per_pixel) if per_pixel <= MODE_WINDOW else (1,) * len(shape)
    for piece in regions(shape, steps):
        part = tuple(slice(w.start + p.start, w.start + p.stop) for w, p in zip(window, piece))
        if per_pixel <= MODE_WINDOW:
            out[piece] = downsample_window(read, fine_shape, part, factors, method, nodata)
        else:
            out[piece] = block_value(read, fine_shape, part, factors, method, nodata)
    return out


def pieces(shape: Sequence[int], most: int) -> tuple[int, ...]:
    """Steps per axis that cut ``shape`` into pieces of at most ``most`` elements (at least one
    element per piece), the last axis taken whole first."""
    steps = []
    for n in reversed(shape):
        step = max(1, min(n, most))
        most //= step
        steps.append(step)
    return tuple(reversed(steps))


def block_value(read: Read, fine_shape: Sequence[int], window: tuple[slice, ...],
                factors: Sequence[int], method: str, nodata: int) -> int:
    """The value of one coarse pixel (``window``) whose block is too large to read at once:
    ``nearest`` reads its centre pixel; ``mode`` sums class counts over pieces of the block
    (no-data excluded; ties to the smallest id)."""
    block = fine_window(window, factors, fine_shape)
    if any(b.stop <= b.start for b in block):
        return nodata
    if method == "nearest":
        centre = [min(b.start + f // 2, b.stop - 1) for b, f in zip(block, factors)]
        return int(read(tuple(slice(c, c + 1) for c in centre)).ravel()[0])
    counts: dict[int, int] = {}
    extent = [b.stop - b.start for b in block]
    for piece in regions(extent, pieces(extent, MODE_WINDOW)):
        values, found = np.unique(read(tuple(slice(b.start + p.start, b.start + p.stop)
                                             for b, p in zip(block, piece))), return_counts=True)
        for value, n in zip(values.tolist(), found.tolist()):
            counts[value] = counts.get(value, 0) + n
    counts.pop(nodata, None)
    return min(counts, key=lambda v: (-counts[v], v)) if counts else nodata


def downsample_window(
    read: Read,
    fine_shape: Sequence[int],
    window: tuple[slice, ...],
    factors: Sequence[int],
    method: str,
    nodata: int,
) -> np.ndarray:
    """The coarse pixels of ``window``, from the fine pixels ``read`` returns under it.

    Coarse pixel ``t`` covers fine pixels ``[t * f, (t + 1) * f)`` on each axis (clipped to the
    fine shape); a coarse pixel beyond the fine grid is no data.
    """
    shape = tuple(w.stop - w.start for w in window)
    return downsample(read(fine_window(window, factors, fine_shape)), shape, factors, method, nodata)


def fine_window(window: tuple[slice, ...], factors: Sequence[int],
                fine_shape: Sequence[int]) -> tuple[slice, ...]:
    """The fine pixels under the coarse ``window``: ``[t * f, (t + 1) * f)`` on each axis,
    clipped to ``fine_shape``."""
    return tuple(slice(min(w.start * f, n), min(w.stop * f, n))
                 for w, f, n in zip(window, factors, fine_shape))


def downsample(
    block: np.ndarray, shape: Sequence[int], factors: Sequence[int], method: str, nodata: int
) -> np.ndarray:
    """``block`` (fine pixels from the first covered one; short at far edges) to ``shape``."""
    if method == "nearest":
        return _nearest(block, shape, factors, nodata)
    return _mode(block, tuple(shape), tuple(factors), nodata)


def _nearest(
    block: np.ndarray, shape: Sequence[int], factors: Sequence[int], nodata: int
) -> np.ndarray:
    out = np.full(tuple(shape), nodata, dtype=block.dtype)
    index = [np.arange(n) * f + f // 2 for n, f in zip(shape, factors)]
    index = [np.minimum(i, max(size - 1, 0)) for i, size in zip(index, block.shape)]
    covered = tuple(slice(0, ceil_div(size, f)) for size, f in zip(block.shape, factors))
    if all(size > 0 for size in block.shape):
        out[covered] = block[np.ix_(*index)][covered]
    return out


def _mode(
    block: np.ndarray, shape: tuple[int, ...], factors: tuple[int, ...], nodata: int
) -> np.ndarray:
    full = tuple(n * f for n, f in zip(shape, factors))
    padded = np.full(full, nodata, dtype=block.dtype)
    padded[tuple(slice(0, size) for size in block.shape)] = block
    split = padded.reshape([v for n, f in zip(shape, factors) for v in (n, f)])
    d = len(shape)
    rows = split.transpose([*range(0, 2 * d, 2), *range(1, 2 * d, 2)]).reshape(
        int(np.prod(shape)), -1
    )
    return row_modes(rows, nodata).reshape(shape)


def row_modes(rows: np.ndarray, nodata: int) -> np.ndarray:
    """The most frequent value of each row, ignoring ``nodata`` unless the row is all no data;
    ties go to the smallest value. Vectorized: sort, then run lengths."""
    ordered = np.sort(rows, axis=1)
    position = np.arange(ordered.shape[1])
    starts = np.ones(ordered.shape, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    run_start = np.maximum.accumulate(np.where(starts, position, 0), axis=1)
    run_length = np.where(ordered == nodata, 0, position - run_start + 1)
    return ordered[np.arange(len(ordered)), run_length.argmax(axis=1)]
