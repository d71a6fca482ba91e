"""Thresholding: manual, global (Otsu, multi-Otsu, Li, Yen, triangle, ...) and local.

Global methods are fitted in two distributed passes (value range, then
histogram; see :mod:`geoseg.methods.stats`; the raster is read once for both when
it fits ``GEOSEG_MAX_FIT_CACHE_BYTES``) and give a :class:`Threshold`, a
frozen segmenter holding a few numbers. For integer bands the histogram has one
bin per value, exactly what scikit-image builds for an integer image, so the
thresholds are identical to ``skimage.filters.threshold_*`` on the whole image.

Classes follow scikit-image's conventions. By default ``x > t``: a pixel is in
class ``i`` when exactly ``i`` thresholds are strictly below its value (class 1
is ``image > threshold_otsu``; for several thresholds this is
``np.digitize(x, thresholds, right=True)``). Multi-Otsu follows
``skimage.filters.threshold_multiotsu``'s ``np.digitize(x, thresholds)``: a pixel
equal to a threshold goes to the class above (``equal_to_upper=True``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import pairwise
from numbers import Integral
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage import filters

from geoseg import budgets
from geoseg.core.classes import ClassInfo
from geoseg.core.segmenter import valid_mask
from geoseg.core.text import clipped
from geoseg.errors import MethodParameterError
from geoseg.methods.features import (
    Feature,
    FeatureLike,
    PixelMethod,
    as_feature,
    class_infos,
    one_hot,
)
from geoseg.methods.params import PARAMS, check_class_names, check_unique_names, check_value
from geoseg.methods.stats import (
    EXACT_INTEGERS,
    Binning,
    Histogram,
    Range,
    cached_feature,
    global_histogram,
    raster_data,
)

LOCAL_METHODS = ("gaussian", "mean", "median")
# scipy.ndimage border modes a tile applies at the image edges as the whole image would ("wrap"
# would wrap a tile onto itself, not onto the image's far side)
LOCAL_MODES = ("reflect", "mirror", "nearest", "constant")
GAUSSIAN_TRUNCATE = 4.0  # what scikit-image's gaussian passes to scipy.ndimage


@dataclass(frozen=True)
class Threshold(PixelMethod):
    """Classes from fixed thresholds on one feature; a manual or fitted segmenter.

    Parameters
    ----------
    thresholds
        Strictly increasing values; ``len(thresholds) + 1`` classes.
    feature
        What is thresholded (see :func:`geoseg.methods.as_feature`): ``None`` for
        the raster's only band, ``n`` for band ``n`` (1-based), ``(a, b)`` for
        ``(a - b) / (a + b)``, ``"mean"``.
    method
        How the thresholds were found (``"manual"``, ``"otsu"``, ...), for display.
    class_names
        One name per class (default ``background``/``foreground``, or ``class_i``).
    band_names
        The bands of the raster it was fitted on, so a raster with another band
        count is refused before any compute (``None``: any).
    equal_to_upper
        Where a pixel equal to a threshold goes: ``False`` (default) the class
        below (``x > t``, as ``image > threshold_otsu``), ``True`` the class above
        (``x >= t``, ``np.digitize(x, thresholds)``, as scikit-image's multi-Otsu).
    """

    thresholds: tuple[float, ...]
    feature: Any = None
    method: str = "manual"
    class_names: tuple[str, ...] | None = None
    band_names: tuple[str, ...] | None = None
    equal_to_upper: bool = False

    def __post_init__(self) -> None:
        values = _check_thresholds(self.thresholds)
        object.__setattr__(self, "thresholds", values)
        object.__setattr__(self, "feature", as_feature(self.feature))
        names = (
            _default_names(len(values) + 1) if self.class_names is None else tuple(self.class_names)
        )
        if len(names) != len(values) + 1:
            raise MethodParameterError(
                f"{len(values)} threshold(s) make {len(values) + 1} classes but "
                f"{len(names)} class_names were given: {names}."
            )
        check_unique_names(names)
        object.__setattr__(self, "class_names", tuple(map(str, names)))

    @property
    def name(self) -> str:
        return f"{self.method} threshold"

    @property
    def classes(self) -> tuple[ClassInfo, ...]:
        return class_infos(self.class_names)

    def labels(self, values: np.ndarray) -> np.ndarray:
        """Class ids of feature ``values``: how many thresholds are below each (strictly,
        unless ``equal_to_upper``). Integer ``values`` are compared in their own dtype
        (:func:`integer_above`), exactly, whatever their magnitude."""
        ids = np.zeros(values.shape, np.int16)
        if values.dtype.kind in "iu":
            for t in self.thresholds:
                ids += integer_above(values, t, self.equal_to_upper)
            return ids
        for t in self.thresholds:
            ids += float_above(values, t, self.equal_to_upper)
        return ids

    def prepare(
        self, raw: np.ndarray, nodata: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """As every pixel method's (float64), except a band of 64-bit integers thresholded
        itself: kept in its dtype, as float64 would round its values beyond 2**53 (2**63 + 100
        and 2**63 + 1500 are one float64) and so move pixels across a threshold."""
        if raw.dtype.kind not in "iu" or raw.dtype.itemsize < 8 or self.feature.kind not in (
                "single", "band"):
            return super().prepare(raw, nodata)
        x = raw.copy()
        valid = valid_mask(raw, nodata)
        x[:, ~valid] = 0
        return x, valid

    def predict(self, batch: np.ndarray) -> np.ndarray:
        if batch.dtype.kind in "iu" and self.feature.kind in ("single", "band"):
            index = 0 if self.feature.kind == "single" else self.feature.bands[0] - 1
            self.feature.check(batch.shape[1])
            return one_hot(self.labels(batch[:, index]), self.n_classes)
        return one_hot(self.labels(self.feature.compute(batch, band_axis=1)), self.n_classes)


def integer_above(values: np.ndarray, t: float, equal_to_upper: bool = False) -> np.ndarray:
    """``values > t`` (``>= t`` when ``equal_to_upper``) for integer ``values``, exact for any
    real ``t``: on integers ``x > t`` is ``x > floor(t)`` and ``x >= t`` is ``x > ceil(t) - 1``,
    an integer compared in the values' own dtype (clipped to its range), where NumPy would
    round both sides to float64 beyond 2**53."""
    info = np.iinfo(values.dtype)
    if t > info.max or (t == info.max and not equal_to_upper):  # also +inf: nothing is above
        return np.zeros(values.shape, bool)
    if t < info.min:  # also -inf: everything is above
        return np.ones(values.shape, bool)
    bound = math.ceil(t) - 1 if equal_to_upper else math.floor(t)
    if bound < info.min:  # equal_to_upper with t == min
        return np.ones(values.shape, bool)
    return values > np.asarray(bound, values.dtype)


def float_above(values: np.ndarray, t: float, equal_to_upper: bool = False) -> np.ndarray:
    """``values > t`` (``>= t`` when ``equal_to_upper``) for float ``values``, exact for a whole
    number ``t`` float64 cannot hold: no float equals it, so both rules are a comparison with
    the float nearest it (the largest finite float for one beyond float64's range), where NumPy
    would round ``t`` (``x >= 2**60 + 1`` held for ``x = 2**60``) or overflow."""
    above = np.greater_equal if equal_to_upper else np.greater
    if isinstance(t, int):
        try:
            nearest = float(t)
        except OverflowError:  # beyond every finite float
            nearest = float(np.finfo(np.float64).max) * (1 if t > 0 else -1)
        if nearest != t:  # x > t and x >= t alike: x >= nearest above t, x > nearest below
            above, t = (np.greater_equal if nearest > t else np.greater), nearest
    return above(values, np.float64(t))


def _check_thresholds(thresholds: Any) -> tuple[float, ...]:
    """``thresholds`` (a number, or a list, tuple or 1-D array of them) as floats, refused when
    not numbers, none, or not strictly increasing. A whole number that float64 would round
    (beyond 2**53) stays an exact ``int``: ``x > 2**63 + 1500`` on a uint64 band is not
    ``x > 2**63 + 2048``."""
    given = thresholds.tolist() if isinstance(thresholds, np.ndarray) else thresholds
    given = list(given) if isinstance(given, (list, tuple)) else [given]
    if not given or not PARAMS["thresholds"].test(given) or any(
            b <= a for a, b in pairwise(given)):
        raise MethodParameterError(
            f"thresholds must be one or more strictly increasing numbers, e.g. [100] or "
            f"[50, 150] (in the feature's units), got {clipped(_listed(given), 200)}; sort them, drop "
            f"duplicates and NaN."
        )
    return tuple(_exact_number(t) for t in given)


def _exact_number(value: Any) -> float:
    """``value`` as a float, or as an ``int`` when it is a whole number float64 cannot hold."""
    if isinstance(value, Integral):
        try:
            if float(value) == value:
                return float(value)
        except OverflowError:  # beyond float64 altogether
            pass
        return int(value)
    return float(value)


def _default_names(n: int) -> tuple[str, ...]:
    return ("background", "foreground") if n == 2 else tuple(f"class_{i}" for i in range(n))


# -- thresholds from a global histogram ----------------------------------------------------------


def _otsu(hist: Histogram, classes: int) -> tuple[float, ...]:
    counts, centers = hist.trimmed()
    if centers.size == 1:
        return (float(centers[0]),)
    return (float(filters.threshold_otsu(hist=(counts, centers))),)


def _multiotsu(hist: Histogram, classes: int) -> tuple[float, ...]:
    return multiotsu_from_histogram(hist, classes)


def multiotsu_from_histogram(
    hist: Histogram, classes: int, nbins: int | None = None, what: str = "method 'multiotsu'"
) -> tuple[float, ...]:
    """Multi-Otsu thresholds, as ``skimage.filters.threshold_multiotsu`` on ``hist``'s bins.

    With ``nbins`` an integer histogram (one bin per value) has its values grouped into at most
    ``nbins`` bins of equal whole width first (none when it has at most ``nbins`` values). More
    bins than ``GEOSEG_MAX_MULTIOTSU_BINS`` are refused (:class:`~geoseg.errors.BudgetError`
    naming ``what``) before scikit-image allocates its bins x bins table.
    """
    counts, centers = histogram_bins(hist, nbins)
    budgets.check_multiotsu_bins(counts.size, what, _coarser_advice(hist))
    budgets.check_multiotsu_search(counts.size, classes, what, _shorter_search_advice(classes))
    probabilities = counts / np.sum(counts)  # what scikit-image feeds its search with
    try:
        found = filters.threshold_multiotsu(hist=(probabilities, centers), classes=classes)
    except ValueError as error:  # fewer occupied bins than classes
        occupied = np.count_nonzero(counts)
        fix = (f"Lower classes to at most {occupied}, or raise nbins for a non-integer feature"
               if occupied >= 2 else "The feature holds one value on every valid pixel: check the "
               "input's nodata and band, or give fixed thresholds (method: threshold)")
        raise MethodParameterError(
            f"method 'multiotsu' cannot split the histogram into classes={classes}: it has "
            f"{occupied} occupied bin(s) of {counts.size}, and each class needs at least one. "
            f"{fix} (scikit-image: {error})"
        ) from error
    return tuple(float(t) for t in found)


def histogram_bins(hist: Histogram, nbins: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``hist``'s trimmed ``(counts, centers)``; with ``nbins``, an integer histogram's values
    grouped into at most ``nbins`` bins (:func:`group_values`)."""
    counts, centers = hist.trimmed()
    if nbins is not None and hist.binning.integer:
        return group_values(counts, centers, nbins)
    return counts, centers


SMOOTHING_ADVICE = (
    "Pass nbins (e.g. nbins=256; model.params.nbins in a job) to group an integer band's values "
    "into fewer bins (the thresholds then move by up to about a bin's width), or raise the "
    "limit if a longer fit is acceptable.")
MINIMUM_PASSES = 10_000  # scikit-image's threshold_minimum max_num_iter


def group_values(
    counts: np.ndarray, values: np.ndarray, nbins: int
) -> tuple[np.ndarray, np.ndarray]:
    """Counts per consecutive integer ``values`` summed into at most ``nbins`` bins of equal whole
    width, and those bins' centres; unchanged when there are at most ``nbins`` values."""
    width = -(-counts.size // nbins)
    if width == 1:
        return counts, values
    padded = np.pad(counts, (0, -counts.size % width))
    grouped = padded.reshape(-1, width).sum(axis=1)
    return grouped, values[0] + width * np.arange(grouped.size) + (width - 1) / 2


def _coarser_advice(hist: Histogram) -> str:
    """How to give a multi-Otsu fit on ``hist`` fewer bins, and what it costs."""
    if not hist.binning.integer:
        return ("Lower nbins (e.g. nbins=256; model.params.nbins in a job), or raise the limit "
                "if this process has the memory.")
    low, high = int(hist.value_range.low), int(hist.value_range.high)
    values = high - low + 1
    return (f"Its integer band gets one bin per value: {values} values from {low} to {high}. "
            f"Pass nbins (e.g. nbins=256; model.params.nbins in a job) to group the values into "
            f"at most that many bins of equal whole width: the thresholds are then bin centres "
            f"and may move from scikit-image's exact one-bin-per-value ones by about a bin's "
            f"width ({-(-values // 256)} values at nbins=256). Or raise the limit, for exact "
            f"thresholds, if this process has the memory.")


def _shorter_search_advice(classes: int) -> str:
    """How to make a multi-Otsu search for ``classes`` classes short enough: the most bins (a
    power of two) whose search the limit allows."""
    allowed, nbins = budgets.limit(budgets.MAX_MULTIOTSU_SEARCH), 2
    while nbins < 2**16 and math.comb(nbins * 2, classes - 1) <= allowed:
        nbins *= 2
    return (f"Pass nbins (e.g. nbins={nbins}; model.params.nbins in a job) to group the values "
            "into fewer bins (the thresholds then move by up to about a bin's width), ask for "
            "fewer classes, or raise the limit if a longer fit is acceptable.")


def _yen(hist: Histogram, classes: int) -> tuple[float, ...]:
    return (float(filters.threshold_yen(hist=hist.trimmed())),)


def _isodata(hist: Histogram, classes: int) -> tuple[float, ...]:
    return (float(filters.threshold_isodata(hist=hist.trimmed())),)


def _minimum(hist: Histogram, classes: int) -> tuple[float, ...]:
    return minimum_from_histogram(hist)


def minimum_from_histogram(hist: Histogram, nbins: int | None = None,
                           what: str = "method 'minimum'") -> tuple[float, ...]:
    """scikit-image's minimum threshold on :func:`histogram_bins`, its smoothing passes bounded
    by ``GEOSEG_MAX_SMOOTHING`` (a :class:`~geoseg.errors.BudgetError` naming ``what`` when
    the passes it allows did not suffice)."""
    counts, centers = histogram_bins(hist, nbins)
    passes = budgets.smoothing_passes(counts.size, MINIMUM_PASSES)
    try:
        return (float(filters.threshold_minimum(hist=(counts, centers), max_num_iter=passes)),)
    except RuntimeError as error:  # the smoothed histogram never shows two peaks
        if passes < MINIMUM_PASSES:
            budgets.refuse_smoothing(counts.size, passes, what, SMOOTHING_ADVICE)
        raise MethodParameterError(
            f"method 'minimum' needs a histogram with two peaks, but this one still has a "
            f"single peak after smoothing (scikit-image: {error}). Use another method, e.g. "
            f"'otsu', 'li' or 'triangle', or check that the image has two populations."
        ) from error


def _mean(hist: Histogram, classes: int) -> tuple[float, ...]:
    """The mean, in the histogram's dtype (float16 for a float16 band, as ``np.mean`` gives it to
    scikit-image)."""
    if hist.binning.integer:
        return (float(hist.value_range.mean),)
    return (float(np.dtype(hist.binning.dtype).type(hist.value_range.mean)),)


def _li(hist: Histogram, classes: int) -> tuple[float, ...]:
    return (li_from_histogram(hist),)


def _triangle(hist: Histogram, classes: int) -> tuple[float, ...]:
    return (triangle_from_histogram(*hist.trimmed()),)


def li_from_histogram(hist: Histogram, max_iter: int = 10_000) -> float:
    """Li's minimum cross-entropy threshold, as ``skimage.filters.threshold_li``.

    For integer histograms this is scikit-image's own integer loop on the same
    histogram (identical result); for float ones the class means come from the
    bin centres, so the result is within about a bin width of the pixel-exact one.
    """
    counts, centers = hist.trimmed()
    if centers.size == 1:
        return float(centers[0])
    image_min = centers[0] if hist.binning.integer else hist.value_range.low
    centers = centers.astype(np.float64) - image_min
    t_next = float(np.sum(counts * centers)) / float(np.sum(counts))
    tolerance = 0.5 if hist.binning.integer else hist.binning.width * 1e-6
    weights = counts.astype("float32", copy=False)
    t_curr = -2 * tolerance
    for _ in range(max_iter):
        if abs(t_next - t_curr) <= tolerance:
            break
        t_curr = t_next
        foreground = centers > t_curr
        mean_fore = np.average(centers[foreground], weights=weights[foreground])
        mean_back = np.average(centers[~foreground], weights=weights[~foreground])
        if mean_back == 0:
            break
        t_next = (mean_back - mean_fore) / (np.log(mean_back) - np.log(mean_fore))
    return float(t_next + image_min)


def triangle_from_histogram(counts: np.ndarray, centers: np.ndarray) -> float:
    """The triangle threshold, as ``skimage.filters.threshold_triangle`` on the same histogram."""
    nbins = len(counts)
    arg_peak = int(np.argmax(counts))
    peak_height = counts[arg_peak]
    arg_low, arg_high = np.flatnonzero(counts)[[0, -1]]
    if arg_low == arg_high:
        return float(centers[arg_low])
    flip = arg_peak - arg_low < arg_high - arg_peak
    if flip:
        counts = counts[::-1]
        arg_low = nbins - arg_high - 1
        arg_peak = nbins - arg_peak - 1
    width = arg_peak - arg_low
    x1 = np.arange(width)
    y1 = counts[x1 + arg_low]
    norm = np.sqrt(peak_height**2 + width**2)
    length = (peak_height / norm) * x1 - (width / norm) * y1
    arg_level = int(np.argmax(length)) + arg_low
    if flip:
        arg_level = nbins - arg_level - 1
    return float(centers[arg_level])


METHODS: dict[str, Callable[[Histogram, int], tuple[float, ...]]] = {
    "otsu": _otsu,
    "multiotsu": _multiotsu,
    "li": _li,
    "yen": _yen,
    "triangle": _triangle,
    "isodata": _isodata,
    "minimum": _minimum,
    "mean": _mean,
}


def thresholds_from_histogram(
    hist: Histogram, method: str = "otsu", classes: int = 2, nbins: int | None = None,
    what: str | None = None,
) -> tuple[float, ...]:
    """Thresholds of ``method`` (a key of :data:`METHODS`) from a global histogram; ``nbins``
    groups an integer histogram's values for multi-Otsu (see :func:`multiotsu_from_histogram`),
    ``what`` names the fit in a refusal."""
    check_classes(method, classes)
    # the mean of values float64 holds is their sum's, as np.mean gives it to scikit-image;
    # beyond 2**53 that sum is rounded, and the mean is the shifted histogram's
    shift = method != "mean" or not _float_exact(hist)
    offset, hist = from_zero(hist) if shift else (0, hist)
    if method == "multiotsu":
        found = multiotsu_from_histogram(hist, classes, nbins, what or f"method {method!r}")
    elif method == "minimum":
        found = minimum_from_histogram(hist, nbins, what or f"method {method!r}")
    else:
        found = METHODS[method](hist, classes)
    upper = method in EQUAL_TO_UPPER
    return tuple(shifted_back(t, offset, upper) for t in found)


def shifted_back(t: float, offset: int, equal_to_upper: bool = False) -> float:
    """``t + offset`` (a threshold found on values shifted by an integer histogram's lowest
    value ``offset``), a float within 2**53 of 0, where float64 holds every integer. Beyond,
    the integer that splits the integers alike (``x > t`` is ``x > floor(t)``, ``x >= t`` is
    ``x >= ceil(t)``), as an exact ``int``: float64 would move it by up to half its step
    (512 near 2**62), across values of the band."""
    value = t + offset
    if offset == 0 or abs(value) <= EXACT_INTEGERS:
        return value
    return (math.ceil(t) if equal_to_upper else math.floor(t)) + offset


def _float_exact(hist: Histogram) -> bool:
    """Whether float64 holds every value of ``hist``'s range (within 2**53 of 0)."""
    return max(abs(hist.value_range.low), abs(hist.value_range.high)) <= EXACT_INTEGERS


def from_zero(hist: Histogram) -> tuple[int, Histogram]:
    """An integer histogram's lowest value and the histogram shifted to start at 0: scikit-image
    sums counts times bin values in float64, which near 2**40 rounds away the differences
    between bins (Otsu one bin off); thresholds are found on the shifted values and the offset
    is added back (exactly: :func:`shifted_back`). The shifted range's sum comes from the
    counts, exact where the values' own sum is rounded beyond 2**53. Other histograms are kept
    as they are (offset 0)."""
    if not hist.binning.integer:
        return 0, hist
    low = int(hist.binning.low)
    span = int(hist.binning.high) - low
    count = hist.value_range.count
    total = float(np.dot(hist.counts.astype(np.float64), np.arange(hist.counts.size)))
    shifted = Range(count, total, int(hist.value_range.low) - low,
                    int(hist.value_range.high) - low)
    return low, Histogram(hist.counts, Binning(0, span, hist.binning.nbins, True), shifted)


def check_classes(method: str, classes: int, class_names: Sequence[str] | None = None) -> None:
    """Refuse, before any pixel is read, a ``method`` or number of ``classes`` that a fit could
    not give, or ``class_names`` of another count."""
    if method not in METHODS:
        raise MethodParameterError(
            f"Unknown threshold method {method!r}; choose one of {sorted(METHODS)}, or "
            f"build Threshold(thresholds=...) for manual values."
        )
    check_value("classes", classes)
    if method != "multiotsu" and classes != 2:
        raise MethodParameterError(
            f"method {method!r} finds one threshold (2 classes); for {classes} classes "
            f"use method='multiotsu'."
        )
    if classes < 2:
        raise MethodParameterError(f"classes must be >= 2, got {classes}.")
    check_class_names(class_names, classes, f"method {method!r}", "set classes")


def fit_threshold(
    raster: Any,
    method: str = "otsu",
    *,
    feature: FeatureLike = None,
    classes: int = 2,
    nbins: int | None = None,
    nodata: float | None = None,
    class_names: Sequence[str] | None = None,
    cache: bool | None = None,
) -> Threshold:
    """Fit a global threshold on a whole raster, chunk by chunk.

    Parameters
    ----------
    raster
        ``(band, y, x)`` DataArray (e.g. :func:`geoseg.open_raster`), dask or NumPy array.
    method
        ``"otsu"``, ``"multiotsu"`` (``classes`` classes), ``"li"``, ``"yen"``,
        ``"triangle"``, ``"isodata"``, ``"minimum"`` or ``"mean"``.
    feature
        What to threshold: ``None`` (the only band), a 1-based band number, a pair
        ``(a, b)`` for ``(a - b) / (a + b)``, or ``"mean"``.
    nbins
        Bins of the histogram for non-integer features (``None``: 256). Integer bands get
        one bin per value, like scikit-image; for ``"multiotsu"`` and ``"minimum"`` only, an
        ``nbins``
        given groups their values into at most that many bins of equal whole width
        (thresholds at bin centres, within about a bin's width of the exact ones), for
        value ranges wider than ``GEOSEG_MAX_MULTIOTSU_BINS``: multi-Otsu's table grows
        with the square of the bins, and more bins than that limit are refused with
        :class:`~geoseg.errors.BudgetError` before it is allocated, and ``"minimum"`` smooths
        its histogram for at most ``GEOSEG_MAX_SMOOTHING`` bins x passes. scikit-image computes
        Otsu, Yen, triangle, isodata and minimum from a 256-bin histogram too, so those
        equal its results on floats; its Li iterates over the pixels themselves, which a
        histogram cannot do: on non-integer features ``"li"`` is within about a bin width
        of scikit-image's (more ``nbins``, closer).
    nodata
        Overrides the nodata the raster's attributes declare (``_FillValue``, ``missing_value``,
        ``fill_value`` or ``nodata``, as :func:`~geoseg.segment` reads them); no-data and NaN
        pixels are ignored.
    cache
        Whether the fit reads the raster once and keeps it in memory for its two passes
        (persisted: on the workers under a distributed client), instead of reading it once per
        pass. ``None`` (default): when the bands the feature uses take at most
        ``GEOSEG_MAX_FIT_CACHE_BYTES`` (every band when a nodata value or a float dtype makes
        them all decide which pixels are valid). ``True`` over that limit raises
        :class:`~geoseg.errors.BudgetError` before any pixel is read. Results are identical.

    Returns
    -------
    Threshold
        A small frozen segmenter; use it with :func:`geoseg.segment`. Its classes
        follow scikit-image's use of each method: ``x > t`` for the single
        thresholds, ``np.digitize(x, thresholds)`` (equal goes up) for multi-Otsu.
    """
    check_classes(method, classes, class_names)
    check_value("cache", cache)
    feat = as_feature(feature)
    _check_nbins(nbins, method, fit_name(method, feat))
    rd = raster_data(raster, nodata)
    feat.check(rd.n_bands, "the raster")
    source, on = cached_feature(rd, feat, cache, fit_name(method, feat))
    hist = global_histogram(source, on, 256 if nbins is None else nbins)
    values = thresholds_from_histogram(hist, method, classes, nbins, fit_name(method, feat))
    return Threshold(
        _dedupe(values),
        feat,
        method,
        None if class_names is None else tuple(class_names),
        rd.band_names,
        equal_to_upper=method in EQUAL_TO_UPPER,
    )


def _check_nbins(nbins: Any, method: str, what: str) -> None:
    """``nbins`` (when given) a whole number from 2 to the histogram limit, and for multi-Otsu
    within ``GEOSEG_MAX_MULTIOTSU_BINS``: before a histogram of that many bins is built."""
    if nbins is None:
        return
    check_value("nbins", nbins)
    if method == "multiotsu":
        budgets.check_multiotsu_bins(int(nbins), f"{what} (nbins={nbins})",
                                     "Give fewer bins (e.g. nbins=256), or raise the limit if "
                                     "this process has the memory.")


EQUAL_TO_UPPER = {"multiotsu"}  # scikit-image applies these with np.digitize(x, thresholds)


def fit_name(method: str, feature: Feature) -> str:
    """A threshold fit, in words, as a refused cache names it."""
    return f"the {method} threshold on {feature.describe()}"


def unfitted_threshold(
    band_names: Sequence[str] | None,
    method: str = "otsu",
    *,
    feature: FeatureLike = None,
    classes: int = 2,
    class_names: Sequence[str] | None = None,
    **_fit_only: Any,
) -> Threshold:
    """What :func:`fit_threshold` with these parameters gives on a raster of ``band_names``, as
    far as is known before the fit: its classes, feature and bands (the thresholds are
    placeholders). Checks the parameters as the fit would, without reading a pixel."""
    check_classes(method, classes, class_names)
    return Threshold(
        tuple(float(i) for i in range(classes - 1)),
        feature,
        method,
        None if class_names is None else tuple(class_names),
        None if band_names is None else tuple(band_names),
        equal_to_upper=method in EQUAL_TO_UPPER,
    )


def check_in_range(segmenter: Threshold, dtype: Any, where: str = "the input") -> None:
    """Refuse thresholds outside every value ``segmenter``'s feature can take on a raster of
    ``dtype`` (an integer band, or a normalized difference in [-1, 1]): a class would be empty
    on any such raster, whatever its pixels."""
    bounds = feature_range(segmenter.feature, dtype)
    if bounds is None:
        return
    low, high = bounds  # exact ints for an integer band: Python compares them with t exactly
    ends = f"{_bound(low)}, {_bound(high)}"
    if segmenter.equal_to_upper:  # x >= t: t == low leaves the class below empty
        outside = [t for t in segmenter.thresholds if not low < t <= high]
        rule, allowed = "x >= t", f"({ends}]"
    else:  # x > t: t == high leaves the class above empty
        outside = [t for t in segmenter.thresholds if not low <= t < high]
        rule, allowed = "x > t", f"[{ends})"
    if outside:
        raise MethodParameterError(
            f"thresholds: received {_listed(segmenter.thresholds)}, but "
            f"{segmenter.feature.describe()} of {where} ({np.dtype(dtype)}) lies in [{ends}], so "
            f"{_listed(outside)} would leave "
            f"a class empty on every pixel (a pixel is above a threshold t when {rule}); give "
            f"thresholds in {allowed} (in the input's units)."
        )


def _bound(value: float) -> str:
    """A range's end or a threshold as written: a whole number exactly up to 64-bit integers'
    20 digits, beyond in six significant digits (``10**400`` is not 401 digits in a message);
    others as ``:g`` does."""
    if not isinstance(value, int):
        return f"{value:g}"
    return str(value) if abs(value) < 10**20 else format(Decimal(value), ".6g")


def _listed(values: Sequence[Any]) -> str:
    """``values`` as a list's repr, its whole numbers as :func:`_bound` writes them."""
    shown = (_bound(v) if isinstance(v, int) and not isinstance(v, bool) else repr(v)
             for v in values)
    return "[" + ", ".join(shown) + "]"


def check_manual_in_range(segmenter: Any, dtype: Any, where: str = "the raster") -> None:
    """:func:`check_in_range` on every manual :class:`Threshold` of ``segmenter``: itself, an
    ensemble's members, a test-time augmentation's member, a wrapper's inner segmenter (when
    held, not a reference). What :func:`geoseg.segment` checks against its raster's ``dtype``,
    as a job does; fitted thresholds come from the data and are left as they are."""
    if isinstance(segmenter, Threshold) and segmenter.method == "manual":
        check_in_range(segmenter, dtype, where)
    for part in (*getattr(segmenter, "members", ()), getattr(segmenter, "inner", None),
                 getattr(segmenter, "member", None)):
        if part is not None:
            check_manual_in_range(part, dtype, where)


def feature_range(feature: Any, dtype: Any) -> tuple[float, float] | None:
    """The values ``feature`` can take on a raster of ``dtype``; ``None`` where unbounded. An
    integer dtype's are its exact ``int`` bounds (float64 rounds 2**63 - 1 up to 2**63)."""
    if feature.kind == "ndiff":
        return (-1.0, 1.0)
    dtype = np.dtype(dtype)
    if dtype.kind == "b":  # a mask: False and True read as 0 and 1
        return (0.0, 1.0)
    if dtype.kind not in "iu":
        return None
    return (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))


def _dedupe(values: tuple[float, ...]) -> tuple[float, ...]:
    """A constant raster gives one repeated value; keep the distinct ones."""
    return tuple(sorted(set(values)))


# -- local threshold -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalThreshold(PixelMethod):
    """``x > threshold_local(x, block_size, method, offset)``, per pixel, with the halo it needs.

    On an image (y, x) or a volume (z, y, x), the neighbourhood spanning every axis.
    For ``"gaussian"`` and ``"median"``, the same mask as ``image >
    skimage.filters.threshold_local(image, ...)`` on the whole image (``mode`` is
    any scipy.ndimage border mode; tile windows end at the image edges, where
    the mode applies exactly as on the whole image). For ``"mean"``, the same up
    to floating-point rounding of the local mean: the box mean is summed directly
    (see :func:`box_mean`), so that tiles round it alike and integer-valued data
    get exact means, where scikit-image's running sum may round (155.99999999999991
    for 156). Pixels exactly at their threshold (``x == mean - offset``) are then
    background here and may be foreground in scikit-image: 20 of the 262,144 pixels
    of ``skimage.data.camera()`` with ``block_size=35, offset=0``, 2 with ``offset=2``.

    Parameters
    ----------
    block_size
        Odd neighbourhood size in pixels.
    method
        ``"gaussian"`` (sigma ``(block_size - 1) / 6`` or ``param``), ``"mean"`` or ``"median"``.
    offset
        Subtracted from the local threshold.
    """

    block_size: int
    method: str = "gaussian"
    offset: float = 0.0
    feature: Any = None
    param: float | None = None
    mode: str = "reflect"
    class_names: tuple[str, ...] = field(default=("background", "foreground"))

    def __post_init__(self) -> None:
        check_value("block_size", self.block_size)
        if self.block_size % 2 == 0:
            raise MethodParameterError(
                f"block_size must be a positive odd number of pixels, got {self.block_size}."
            )
        if self.method not in LOCAL_METHODS:
            raise MethodParameterError(
                f"Local threshold method {self.method!r} is not one of {LOCAL_METHODS}."
            )
        if self.mode not in LOCAL_MODES:
            raise MethodParameterError(
                f"mode: received {self.mode!r}; expected one of {LOCAL_MODES} (the border mode "
                f"at the image edges; 'wrap' is not exact when the image is cut into tiles)."
            )
        if self.param is not None and self.method != "gaussian":
            raise MethodParameterError(
                f"param (the gaussian sigma) only applies to method='gaussian', not "
                f"{self.method!r}."
            )
        if self.param is not None and not 0 <= self.param < np.inf:
            raise MethodParameterError(
                f"param: received {self.param}; expected the gaussian sigma, a finite number >= 0 "
                f"(or none for (block_size - 1) / 6)."
            )
        _check_offset(self.offset)
        budgets.check_kernel(self.halo[0], self._kernel_parameter(), "local threshold")
        object.__setattr__(self, "feature", as_feature(self.feature))

    def _kernel_parameter(self) -> str:
        """The parameter that sets the filter's reach, with its value."""
        if self.param is not None:
            return f"param={self.param:g}"
        return f"block_size={self.block_size}"

    @property
    def name(self) -> str:
        return f"local {self.method} threshold ({self.block_size} px)"

    @property
    def classes(self) -> tuple[ClassInfo, ...]:
        return class_infos(self.class_names)

    @property
    def halo(self) -> tuple[int, int]:
        """The filter's reach: ``block_size // 2``, or the gaussian kernel's radius."""
        if self.method == "gaussian":
            sigma = (self.block_size - 1) / 6.0 if self.param is None else float(self.param)
            radius = int(GAUSSIAN_TRUNCATE * sigma + 0.5)
        else:
            radius = self.block_size // 2
        return (radius, radius)

    @property
    def spatial_axes(self) -> None:
        """Any: the filters work along every axis of an image (y, x) or a volume (z, y, x),
        with the halo on each."""
        return None

    def local_threshold(self, image: np.ndarray) -> np.ndarray:
        """The threshold of every pixel of a float64 ``image`` (y, x) or volume (z, y, x)."""
        if self.method == "mean":
            return box_mean(image, self.block_size, self.mode) - self.offset
        return filters.threshold_local(
            image, self.block_size, self.method, self.offset, mode=self.mode, param=self.param
        )

    def predict(self, batch: np.ndarray) -> np.ndarray:
        values = self.feature.compute(batch, band_axis=1, undefined=0.0)
        ids = np.stack([image > self.local_threshold(image) for image in values])
        return one_hot(ids.astype(np.int64), 2)


def _check_offset(offset: Any) -> None:
    """A local threshold's ``offset``: a finite number (NaN would make every pixel class 0)."""
    check_value("offset", offset)
    if not math.isfinite(offset):
        raise MethodParameterError(
            f"offset: received {offset}; expected a finite number, subtracted from each pixel's "
            "local threshold (e.g. 0, or 5 in the raster's units).")


def box_mean(image: np.ndarray, size: int, mode: str = "reflect") -> np.ndarray:
    """Mean over a box of ``size`` pixels along every axis of ``image`` (an image or a volume),
    summed directly around each pixel.

    ``scipy.ndimage.uniform_filter`` (what scikit-image uses) keeps a running sum
    along each line, so its rounding depends on where the line starts: a tile
    would round differently from the whole image. Here each box is summed
    directly, one axis after another, and divided once, so every value is
    independent of the tiling, and for integer-valued data the sums, hence the
    means, are exact. The masks then equal scikit-image's except at pixels exactly
    at their threshold (``x == mean - offset``), which the rule ``x > threshold``
    makes background and scikit-image's rounded mean puts on either side.
    """
    ones = np.ones(size)
    sums = image
    for axis in range(image.ndim):
        sums = ndi.correlate1d(sums, ones, axis=axis, mode=mode)
    return sums / float(size**image.ndim)
