"""Does the input look like what the model was trained on? A cheap check before a run, and
in :func:`geoseg.segment`.

A model normalises each band with the mean and std of its training data. An input on another
scale (int16 reflectance where the model saw uint8, a band of another sensor) runs without
error and gives a confident, wrong mask. Reading a few chunks spread over the raster and
comparing their values with the model's statistics catches that in a fraction of a second.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


def band_samples(read: Callable[[tuple[slice, ...]], np.ndarray],
                 windows: Sequence[tuple[slice, ...]], nodata: float | None,
                 n_bands: int) -> list[np.ndarray]:
    """Per band, the valid values (not nodata, finite) of ``windows`` as ``read`` gives them
    (``(band, *window)``), as float64. A window that cannot be read is left out: a check that
    only warns never fails a job (the run meets that chunk, reports it and records its state)."""
    parts = []
    for window in windows:
        try:
            raw = np.asarray(read(window))
        except GeosegError:
            continue
        valid = valid_mask(raw, nodata)
        parts.append(raw[:, valid].astype(np.float64))
    values = np.concatenate(parts, axis=1) if parts else np.zeros((n_bands, 0))
    return list(values)


@dataclass(frozen=True)
class Sampled:
    """What the check reads: ``read`` gives a window's pixels ``(band, *window)``, ``chunks``
    spreads the sampled windows (a stored chunk each), ``bands_fix`` says how to pick other bands."""

    read: Callable[[tuple[slice, ...]], np.ndarray]
    shape: tuple[int, ...]  # spatial
    chunks: tuple[int, ...]
    nodata: float | None
    band_names: tuple[str, ...]
    bands_fix: str = "pick other bands (input.bands)"

    @classmethod
    def of(cls, source: RasterSource) -> Sampled:
        return cls(source.read, source.shape[1:], source.chunks, source.georef.nodata,
                   source.band_names)


def range_warnings(raster: RasterSource | Sampled, info: ModelInfo, what: str) -> list[str]:
    """One warning per band of ``raster`` whose sampled values are far from the model's
    statistics (mean more than :data:`FAR` stds away, or spread :data:`SPREAD` times off),
    with figures."""
    sampled = raster if isinstance(raster, Sampled) else Sampled.of(raster)
    windows = sample_windows(sampled.shape, sampled.chunks)
    said = []
    values_per_band = band_samples(sampled.read, windows, sampled.nodata, len(sampled.band_names))
    for i, values in enumerate(values_per_band):
        if values.size == 0 or i >= len(info.mean):
            continue
        problem = _far(values, info.mean[i], info.std[i])
        if problem:
            said.append(
                f"{what} band {i + 1} ({sampled.band_names[i]}): sampled values {values.min():.6g}.."
                f"{values.max():.6g} (mean {values.mean():.6g}, std {values.std():.6g}, "
                f"{len(windows)} chunk(s)), but {info.name} was trained on band {info.bands[i]} with "
                f"mean {info.mean[i]:.4g}, std {info.std[i]:.4g}: {problem}. The model will see values "
                f"unlike its training data; rescale the input to the model's range, {sampled.bands_fix} "
                "or use a model trained on such data.")
    return said


def _far(values: np.ndarray, mean: float, std: float) -> str:
    """Why ``values`` are far from ``mean`` and ``std``, or ``""``."""
    shift = abs(float(values.mean()) - mean) / std
    if shift > FAR:
        return f"its mean is {shift:.1f} model stds away"
    spread = float(values.std()) / std
    if spread > SPREAD:
        return f"its spread is {spread:.1f}x the model's"
    if 0 < spread < 1 / SPREAD:  # a constant band (one land cover, a flat test image) is not off
        return f"its spread is {spread:.2g}x the model's"
    return ""
