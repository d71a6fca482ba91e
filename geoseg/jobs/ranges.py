"""Does the input look like what the model was trained on? A cheap check before a run.

A model normalises each band with the mean and std of its training data. An input on another
scale (int16 reflectance where the model saw uint8, a band of another sensor) runs without
error and gives a confident, wrong mask. Reading a few chunks spread over the raster and
comparing their values with the model's statistics catches that in a fraction of a second.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from geoseg.core.segmenter import valid_mask
from geoseg.errors import GeosegError
from geoseg.io.sources import RasterSource
from geoseg.models.header import ModelInfo

SAMPLES = 4  # chunks read, spread over the raster
SIDE = 512  # at most this many pixels per axis of each sampled chunk
FAR = 4.0  # a band mean further than this many model stds from the model's mean is off
SPREAD = 10.0  # a band spread this many times larger (or smaller) than the model's is off


def sample_windows(shape: Sequence[int], chunks: Sequence[int], n: int = SAMPLES,
                   side: int = SIDE) -> list[tuple[slice, ...]]:
    """Up to ``n`` windows, each the start of one chunk (at most ``side`` per axis), the chunks
    taken evenly along the chunk grid in raster order (first and last included)."""
    grid = [math.ceil(size / chunk) for size, chunk in zip(shape, chunks)]
    total = math.prod(grid)
    picks = sorted({int(i) for i in np.linspace(0, total - 1, min(n, total)).round()})
    windows = []
    for flat in picks:
        index = [int(i) for i in np.unravel_index(flat, grid)]
        windows.append(tuple(slice(i * c, min(i * c + min(c, side), size))
                             for i, c, size in zip(index, chunks, shape)))
    return windows


def band_samples(source: RasterSource, windows: Sequence[tuple[slice, ...]]) -> list[np.ndarray]:
    """Per band, the valid values (not nodata, finite) of ``windows``, as float64. A window
    that cannot be read is left out: a check that only warns never fails a job (the run meets
    that chunk, reports it and records its state)."""
    parts = []
    for window in windows:
        try:
            raw = np.asarray(source.read(window))
        except GeosegError:
            continue
        valid = valid_mask(raw, source.georef.nodata)
        parts.append(raw[:, valid].astype(np.float64))
    values = np.concatenate(parts, axis=1) if parts else np.zeros((len(source.band_names), 0))
    return list(values)


def range_warnings(source: RasterSource, info: ModelInfo, what: str) -> list[str]:
    """One warning per input band whose sampled values are far from the model's statistics
    (mean more than :data:`FAR` stds away, or spread :data:`SPREAD` times off), with figures."""
    windows = sample_windows(source.shape[1:], source.chunks)
    said = []
    for i, values in enumerate(band_samples(source, windows)):
        if values.size == 0 or i >= len(info.mean):
            continue
        problem = _far(values, info.mean[i], info.std[i])
        if problem:
            said.append(
                f"{what} band {i + 1} ({source.band_names[i]}): sampled values {values.min():.6g}.."
                f"{values.max():.6g} (mean {values.mean():.6g}, std {values.std():.6g}, "
                f"{len(windows)} chunk(s)), but {info.name} was trained on band {info.bands[i]} with "
                f"mean {info.mean[i]:.4g}, std {info.std[i]:.4g}: {problem}. The model will see values "
                "unlike its training data; rescale the input to the model's range, pick other "
                "bands (input.bands) or use a model trained on such data.")
    return said


def _far(values: np.ndarray, mean: float, std: float) -> str:
    """Why ``values`` are far from ``mean`` and ``std``, or ``""``."""
    shift = abs(float(values.mean()) - mean) / std
    if shift > FAR:
        return f"its mean is {shift:.1f} model stds away"
    spread = float(values.std()) / std
    if spread > SPREAD:
        return f"its spread is {spread:.1f}x the model's"
    return ""
