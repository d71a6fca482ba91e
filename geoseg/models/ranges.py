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
SIDE = 512  # each sampled window holds at most SIDE**2 pixels (512 per axis in 2-D, 64 in 3-D)
FAR = 4.0  # a band mean further than this many model stds from the model's mean is off
SPREAD = 10.0  # a band spread this many times the model's, or values this many times smaller
MIN_VALUES = 100  # fewer valid values sampled say nothing about a band
F32_MAX = float(np.finfo(np.float32).max)  # float64 values past it reach a network as no data


def sample_windows(shape: Sequence[int], chunks: Sequence[int], n: int = SAMPLES,
                   side: int | None = None) -> list[tuple[slice, ...]]:
    """Up to ``n`` windows, each the start of one chunk (at most ``side`` per axis; by default
    :data:`SIDE` in 2-D, as many pixels in all in 3-D), the chunks taken evenly along the chunk
    grid in raster order (first and last included)."""
    side = side or max(1, round(SIDE ** (2 / len(shape))))
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


def range_warnings(raster: RasterSource | Sampled, infos: ModelInfo | Sequence[ModelInfo],
                   what: str) -> list[str]:
    """One warning per band of ``raster`` and model (``infos``: each model file's description)
    whose sampled values are far from the model's statistics (mean more than :data:`FAR` stds
    away, spread :data:`SPREAD` times the model's, or values too small by as much), with figures."""
    sampled = raster if isinstance(raster, Sampled) else Sampled.of(raster)
    windows = sample_windows(sampled.shape, sampled.chunks)
    values_per_band = band_samples(sampled.read, windows, sampled.nodata, len(sampled.band_names))
    said = []
    for info in [infos] if isinstance(infos, ModelInfo) else infos:
        for i, values in enumerate(values_per_band[:len(info.mean)]):
            problem = _far(values, info.mean[i], info.std[i]) if values.size >= MIN_VALUES else ""
            if problem:
                with np.errstate(over="ignore", invalid="ignore"):  # past 1e154 squares overflow
                    spread = values.std()
                said.append(
                    f"{what} band {i + 1} ({sampled.band_names[i]}): sampled values "
                    f"{values.min():.6g}..{values.max():.6g} (mean {values.mean():.6g}, std "
                    f"{spread:.6g}; {values.size:,} pixels of {len(windows)} chunk(s)), but "
                    f"{info.name} was trained on band {info.bands[i]} with mean {info.mean[i]:.4g}, "
                    f"std {info.std[i]:.4g}: {problem}. The model will see values unlike its "
                    f"training data; rescale the input to the model's range, {sampled.bands_fix} "
                    "or use a model trained on such data.")
    return said


def _far(values: np.ndarray, mean: float, std: float) -> str:
    """Why ``values`` are far from ``mean`` and ``std``, or ``""``."""
    top = float(np.abs(values).max())
    if top > F32_MAX:
        return (f"its values reach {top:.4g}, past float32's largest number ({F32_MAX:.4g}), "
                "which networks compute in: such pixels are left as no data")
    with np.errstate(over="ignore", invalid="ignore"):
        shift = abs(float(values.mean()) - mean) / std
        spread = float(values.std()) / std
    if shift > FAR:
        return f"its mean is {shift:.4g} model stds away"
    if spread > SPREAD:
        return f"its spread is {spread:.4g}x the model's"
    # reflectance in 0..1 for a model of 0..255 is only about 2 stds off; calm water or snow,
    # narrow but of the model's magnitude, is not off
    typical = abs(mean) + std
    if top * SPREAD < typical and spread > 0:  # constant (an empty region, a flat test image): no scale
        return f"its values reach {top:.3g} at most, under a tenth of the model's {typical:.4g} (|mean| + std)"
    return ""
