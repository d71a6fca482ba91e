"""Histogram-based segmentation: grey levels of the modes of the global histogram.

The global histogram (see :mod:`geoseg.methods.stats`) is smoothed with a
3-bin moving average until it has as many peaks as wanted classes; each peak is
a class's grey level and the lowest point between two neighbouring peaks is the
threshold between them. With two classes this is exactly
``skimage.filters.threshold_minimum``; the mode holding more pixels is called
the background, the other the object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from geoseg import budgets
from geoseg.errors import MethodParameterError
from geoseg.methods.features import Feature, FeatureLike, as_feature
from geoseg.methods.params import check_value
from geoseg.methods.stats import (
    Histogram,
    cached_feature,
    global_histogram,
    raster_data,
)
from geoseg.methods.threshold import SMOOTHING_ADVICE, Threshold, histogram_bins


@dataclass(frozen=True)
class Modes:
    """Peaks (grey levels), valleys (thresholds) and pixel fractions of a histogram's modes."""

    levels: tuple[float, ...]
    thresholds: tuple[float, ...]
    fractions: tuple[float, ...]


def local_maxima(hist: np.ndarray) -> list[int]:
    """Indices of the peaks of ``hist``, plateaus counted once (scikit-image's rule)."""
    peaks, rising = [], True
    for i in range(hist.shape[0] - 1):
        if rising and hist[i + 1] < hist[i]:
            rising = False
            peaks.append(i)
        elif not rising and hist[i + 1] > hist[i]:
            rising = True
    return peaks


def find_modes(
    counts: np.ndarray, centers: np.ndarray, classes: int = 2, max_smoothing: int = 10_000
) -> Modes:
    """Smooth ``counts`` until at most ``classes`` peaks remain; raise if fewer remain.

    ``counts``/``centers`` should have no empty bins at the ends (as
    :meth:`Histogram.trimmed` gives them).
    """
    if np.count_nonzero(counts) == 1:  # no smoothing makes a peak of a lone bin (skimage's rule)
        value = float(centers[int(np.flatnonzero(counts)[0])])
        raise MethodParameterError(
            f"Every valid pixel has the value {value:g}: the histogram is one spike, with no "
            f"modes to separate into {classes} classes. Segment an image whose values vary, or "
            "use a threshold method such as fit_threshold(raster, 'otsu'), which puts a constant "
            "image in one class.")
    smooth = counts.astype("float32", copy=False)
    peaks: list[int] = []
    passes = budgets.smoothing_passes(counts.size, max_smoothing)
    for _ in range(passes):
        smooth = ndi.uniform_filter1d(smooth, 3)
        peaks = local_maxima(smooth)
        if len(peaks) <= classes:
            break
    if len(peaks) > classes and passes < max_smoothing:
        budgets.refuse_smoothing(counts.size, passes, "histogram modes", SMOOTHING_ADVICE)
    if len(peaks) != classes:
        raise MethodParameterError(
            f"The histogram has {len(peaks)} mode(s) after smoothing, not the {classes} asked for "
            f"(after up to {max_smoothing} smoothing passes). Ask for fewer classes, or use a "
            f"threshold method such as fit_threshold(raster, 'otsu')."
        )
    valleys = [a + int(np.argmin(smooth[a : b + 1])) for a, b in pairwise(peaks)]
    bounds = [0] + [v + 1 for v in valleys] + [len(counts)]
    total = float(np.sum(counts))
    fractions = tuple(float(np.sum(counts[lo:hi])) / total for lo, hi in pairwise(bounds))
    return Modes(
        tuple(float(centers[p]) for p in peaks),
        tuple(float(centers[v]) for v in valleys),
        fractions,
    )


@dataclass(frozen=True)
class HistogramModes(Threshold):
    """A :class:`Threshold` at the valleys between histogram modes, with the modes' grey levels.

    Classes are ordered by grey level; ``levels[i]`` is class ``i``'s peak and
    ``fractions[i]`` its share of the valid pixels.
    """

    levels: tuple[float, ...] = ()
    fractions: tuple[float, ...] = ()

    @property
    def name(self) -> str:
        return "histogram modes"

    @property
    def background_level(self) -> float:
        """Grey level of the mode holding the most pixels."""
        return self.levels[int(np.argmax(self.fractions))]

    @property
    def object_level(self) -> float:
        """Grey level of the other mode (two classes only)."""
        if len(self.levels) != 2:
            raise MethodParameterError(f"object_level needs 2 modes; this segmenter has {len(self.levels)}.")
        return self.levels[1 - int(np.argmax(self.fractions))]


def mode_names(fractions: Sequence[float]) -> tuple[str, ...]:
    if len(fractions) == 2:
        return (
            ("background", "object") if fractions[0] >= fractions[1] else ("object", "background")
        )
    return tuple(f"mode_{i}" for i in range(len(fractions)))


def fit_histogram_modes(
    raster: Any,
    classes: int = 2,
    *,
    feature: FeatureLike = None,
    nbins: int | None = None,
    nodata: float | None = None,
    max_smoothing: int = 10_000,
    cache: bool | None = None,
) -> HistogramModes:
    """Fit object/background grey levels (or ``classes`` modes) on a whole raster, chunk by chunk.

    Parameters are those of :func:`geoseg.methods.fit_threshold`, ``cache`` included (the
    histogram takes the same two passes, value range then counts). Integer bands
    get one bin per value, or with ``nbins`` their values grouped into at most that many bins
    of equal whole width; other features ``nbins`` bins (default 256) over the global
    ``[min, max]``. No-data and NaN pixels are ignored. The smoothing stops at
    ``GEOSEG_MAX_SMOOTHING`` bins x passes (:class:`~geoseg.errors.BudgetError` if the modes
    are still too many then).
    """
    check_modes(classes, max_smoothing)
    check_value("cache", cache)
    feat = as_feature(feature)
    rd = raster_data(raster, nodata)
    feat.check(rd.n_bands, "the raster")
    source, on = cached_feature(rd, feat, cache, fit_name(feat))
    if nbins is not None:
        check_value("nbins", nbins)
    hist: Histogram = global_histogram(source, on, 256 if nbins is None else nbins)
    modes = find_modes(*histogram_bins(hist, nbins), classes=classes, max_smoothing=max_smoothing)
    return HistogramModes(
        modes.thresholds,
        feat,
        "modes",
        mode_names(modes.fractions),
        rd.band_names,
        levels=modes.levels,
        fractions=modes.fractions,
    )


def fit_name(feature: Feature) -> str:
    """A histogram-modes fit, in words, as a refused cache names it."""
    return f"the histogram modes of {feature.describe()}"


def check_modes(classes: int, max_smoothing: int) -> None:
    """Refuse, before any pixel is read, parameters no histogram could satisfy."""
    if classes < 2:
        raise MethodParameterError(f"classes must be >= 2, got {classes}.")
    if max_smoothing < 1:
        raise MethodParameterError(
            f"max_smoothing: received {max_smoothing}; expected a whole number >= 1 (the modes "
            f"are counted after each smoothing pass, so at least one pass is needed)."
        )


def unfitted_modes(
    band_names: Sequence[str] | None,
    classes: int = 2,
    *,
    feature: FeatureLike = None,
    max_smoothing: int = 10_000,
    **_fit_only: Any,
) -> HistogramModes:
    """What :func:`fit_histogram_modes` gives on a raster of ``band_names``, as far as is known
    before the fit: its class names (their order depends on the data), feature and bands."""
    check_modes(classes, max_smoothing)
    return HistogramModes(
        tuple(float(i) for i in range(classes - 1)),
        feature,
        "modes",
        mode_names((1.0 / classes,) * classes),
        None if band_names is None else tuple(band_names),
    )
