"""Global statistics of a raster as dask tree reductions over its chunks.

Every statistic is computed the same way: one task per spatial chunk turns that
chunk (and only that chunk) into a small summary (a range, a histogram, sums per
cluster), then summaries are combined ``split_every`` at a time in a tree until
one is left. No task ever sees more than one chunk of pixels, so a fit's memory
is bounded by the chunk size whatever the raster's size.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.delayed import Delayed

from geoseg import budgets
from geoseg.core.nodata import attrs_nodata, exact_number
from geoseg.core.segmenter import bands_last, valid_mask
from geoseg.errors import MethodParameterError, PlanError
from geoseg.methods.features import Feature
from geoseg.methods.params import check_value
from geoseg.tiling import default_chunks

SPLIT_EVERY = 8
MAX_INTEGER_BINS = 1 << 20
EXACT_INTEGERS = 2**53  # float64 holds every integer up to this magnitude


@dataclass(frozen=True)
class RasterData:
    """A raster as a dask array ``(band, y, x)`` with one chunk along ``band``."""

    data: da.Array
    nodata: float | None
    band_names: tuple[str, ...]

    @property
    def n_bands(self) -> int:
        return int(self.data.shape[0])


def raster_data(raster: Any, nodata: float | None = None) -> RasterData:
    """A ``(band, y, x)`` or ``(band, z, y, x)`` DataArray (e.g. from ``open_raster``), dask or
    NumPy array, for fits.

    A DataArray's dims say where its bands are: one of (y, x) or (z, y, x) alone is one band,
    as for :func:`~geoseg.segment`; 2-D arrays get a band axis. ``nodata`` defaults to the one
    a DataArray's attributes declare, as for :func:`~geoseg.segment`
    (:func:`~geoseg.core.nodata.attrs_nodata`: ``_FillValue``, ``missing_value``,
    ``fill_value``, ``nodata``).
    NumPy inputs are chunked on their last two axes as outputs are (:func:`~geoseg.tiling.default_chunks`).
    """
    if nodata is not None and (isinstance(nodata, bool) or not isinstance(nodata, Real)):
        check_value("nodata", nodata)  # refused: not a number (NaN is one, and ignored anyway)
    names: tuple[str, ...] | None = None
    if isinstance(raster, xr.DataArray):
        nodata = attrs_nodata(raster.attrs, "raster") if nodata is None else nodata
        spatial = [d for d in ("z", "y", "x") if d in raster.dims]
        if "band" not in raster.dims and set(raster.dims) == set(spatial) and len(spatial) > 1:
            # one band, as segment() reads it: a volume's z is no band axis
            raster = raster.expand_dims(band=["band_1"]).transpose("band", *spatial)
        if raster.ndim in (3, 4) and "band" in raster.dims:
            names = tuple(str(b) for b in raster["band"].values)
            raster = raster.transpose("band", ...)
        raster = raster.data
    data = raster if isinstance(raster, da.Array) else _from_numpy(raster)
    if data.ndim == 2:
        data = data[None]
    if data.ndim not in (3, 4):
        raise PlanError(
            f"A raster has dims (band, y, x), (band, z, y, x) or (y, x); got an array of shape "
            f"{data.shape}. Give a band axis first to volumes."
        )
    if names is None and bands_last(data.shape):
        raise PlanError(
            f"A raster has dims (band, y, x); got an array of shape {data.shape}, which would be "
            f"{data.shape[0]} bands of {data.shape[1]} x {data.shape[2]} pixels. Its last axis looks "
            "like its bands: move them first (np.moveaxis(array, -1, 0)), or pass "
            "xr.DataArray(array, dims=(\"y\", \"x\", \"band\"))."
        )
    if len(data.chunks[0]) > 1:
        data = data.rechunk({0: -1})  # all bands of one spatial chunk in one task
    names = names or tuple(f"band_{i + 1}" for i in range(data.shape[0]))
    return RasterData(data, None if nodata is None else exact_number(nodata), names)


def _from_numpy(array: Any) -> da.Array:
    array = np.asarray(array)
    spatial = default_chunks(array.shape[-2:])
    return da.from_array(array, chunks=(-1,) * (array.ndim - 2) + spatial)


# -- keeping a fit's pixels in memory -----------------------------------------------------------


def fit_bands(dtype: Any, nodata: float | None, n_bands: int, index: Sequence[int]) -> list[int]:
    """The bands (0-based, in order) whose pixels a fit on the features ``index`` of a raster of
    ``n_bands`` depends on: the selected ones, or every band when a pixel's validity depends on
    them all (a ``nodata`` value, or a float ``dtype`` whose NaN or infinite values mark no
    data)."""
    independent = not np.issubdtype(np.dtype(dtype), np.floating) and (
        nodata is None or np.isnan(nodata))
    return sorted(set(index)) if independent else list(range(n_bands))


def fit_bytes(shape: Sequence[int], dtype: Any, nodata: float | None,
              index: Sequence[int]) -> int:
    """Bytes a fit on the features ``index`` of a raster ``(band, *spatial)`` keeps in memory
    with its cache: the whole raster's :func:`fit_bands`, in its dtype. From the shape alone."""
    kept = fit_bands(dtype, nodata, shape[0], index)
    return budgets.window_bytes(tuple(shape[1:]), len(kept), np.dtype(dtype))


def check_fit_cache(shape: Sequence[int], dtype: Any, nodata: float | None,
                    index: Sequence[int], what: str) -> int:
    """:func:`fit_bytes`, refused (:class:`~geoseg.errors.BudgetError` naming ``what``) over
    ``GEOSEG_MAX_FIT_CACHE_BYTES``: what asking for the cache costs, known before a read."""
    n_bytes = fit_bytes(shape, dtype, nodata, index)
    budgets.check_fit_cache(n_bytes, what)
    return n_bytes


def cached_for_fit(
    rd: RasterData, index: Sequence[int], cache: bool | None, what: str
) -> tuple[RasterData, list[int]]:
    """The raster and feature ``index`` a fit of several passes runs them on.

    With ``cache`` (``None``: when the bands the fit depends on, :func:`fit_bands`, take at
    most ``GEOSEG_MAX_FIT_CACHE_BYTES``), those bands are persisted: read once, and kept in
    memory (the workers' under a distributed client, else this process's) for as long as the
    returned raster is referenced; the chunks stay the same, so every pass computes the same
    numbers. Without it, ``rd`` and ``index`` are returned unchanged and each pass reads the
    raster again. ``cache=True`` over the limit raises :class:`~geoseg.errors.BudgetError`
    naming ``what``.
    """
    shape, dtype = rd.data.shape, rd.data.dtype
    bands = fit_bands(dtype, rd.nodata, rd.n_bands, index)
    if cache:
        check_fit_cache(shape, dtype, rd.nodata, index, what)
    elif cache is None:
        cache = budgets.fits_cache(fit_bytes(shape, dtype, rd.nodata, index))
    if not cache:
        return rd, list(index)
    data = rd.data if bands == list(range(rd.n_bands)) else rd.data[bands]
    names = tuple(rd.band_names[b] for b in bands)
    return RasterData(data.persist(), rd.nodata, names), [bands.index(i) for i in index]


def feature_index(feature: Feature, n_bands: int) -> list[int]:
    """The bands (0-based) ``feature`` reads on a raster of ``n_bands``."""
    if feature.kind == "single":
        return [0]
    if feature.kind == "mean":
        return list(range(n_bands))
    return [b - 1 for b in feature.bands]


def check_feature_cache(shape: Sequence[int], dtype: Any, nodata: float | None,
                        feature: Feature, what: str) -> int:
    """:func:`check_fit_cache` for a fit on ``feature`` of a raster ``(band, *spatial)``."""
    return check_fit_cache(shape, dtype, nodata, feature_index(feature, shape[0]), what)


def cached_feature(
    rd: RasterData, feature: Feature, cache: bool | None, what: str
) -> tuple[RasterData, Feature]:
    """:func:`cached_for_fit` for a fit on ``feature``: the raster its passes run on, and the
    feature renumbered to that raster's bands (the same values on every pixel)."""
    cached, index = cached_for_fit(rd, feature_index(feature, rd.n_bands), cache, what)
    if feature.kind in ("single", "mean"):  # every band is kept: nothing to renumber
        return cached, feature
    return cached, Feature(feature.kind, tuple(i + 1 for i in index))


def chunk_offsets(data: da.Array) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Block index and first pixel of every spatial chunk, any number of spatial axes."""
    starts = [np.cumsum((0,) + c[:-1]).tolist() for c in data.chunks[1:]]
    return [(index, tuple(int(s[i]) for s, i in zip(starts, index)))
            for index in itertools.product(*(range(len(s)) for s in starts))]


def map_chunks(rd: RasterData, fn: Callable[..., Any], *args: Any) -> list[Delayed]:
    """One task per spatial chunk: ``fn(block, origin, *args)``, ``block`` ``(band, *chunk)``."""
    blocks = rd.data.to_delayed(optimize_graph=False)
    call = dask.delayed(fn, pure=True)
    return [call(blocks[(0, *index)], origin, *args) for index, origin in chunk_offsets(rd.data)]


def tree_reduce(
    parts: Sequence[Delayed], combine: Callable[[list[Any]], Any], split_every: int = SPLIT_EVERY
) -> Delayed:
    """Combine ``parts`` ``split_every`` at a time (``combine(list) -> summary``) down to one."""
    if split_every < 2:
        raise MethodParameterError(f"split_every must be >= 2, got {split_every}.")
    level = list(parts)
    call = dask.delayed(combine, pure=True)
    while len(level) > 1:
        level = [call(level[i : i + split_every]) for i in range(0, len(level), split_every)]
    return level[0] if len(level) == 1 else call([])


def feature_values(
    block: np.ndarray, feature: Feature, nodata: float | None, integer: bool = False
) -> np.ndarray:
    """The feature at the valid, finite pixels of ``block``, flattened: when ``integer``, the
    band's own integers in its own dtype (float64 would round int64 and uint64 values beyond
    2**53, int64 wrap uint64 ones from 2**63 up)."""
    valid = valid_mask(block, nodata)
    if integer:
        index = 0 if feature.kind == "single" else feature.bands[0] - 1
        return block[index][valid]
    values = feature.compute(block, band_axis=0)[valid]
    return values[np.isfinite(values)]


# -- value range ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """Count, sum, min and max of the valid finite values; an integer band's min and max are
    exact ``int``s (as float64 they would be rounded beyond 2**53)."""

    count: int
    total: float
    low: float
    high: float

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")


def _chunk_range(
    block: np.ndarray,
    origin: tuple[int, int],
    feature: Feature,
    nodata: float | None,
    integer: bool,
) -> Range:
    values = feature_values(block, feature, nodata, integer)
    if values.size == 0:
        return Range(0, 0.0, float("inf"), float("-inf"))
    return Range(
        int(values.size),
        float(values.sum(dtype=np.float64)),
        values.min().item(),  # an int for integer values, else a float
        values.max().item(),
    )


def _combine_ranges(parts: list[Range]) -> Range:
    return Range(
        sum(p.count for p in parts),
        float(sum(p.total for p in parts)),
        min((p.low for p in parts), default=float("inf")),
        max((p.high for p in parts), default=float("-inf")),
    )


def range_task(rd: RasterData, feature: Feature) -> Delayed:
    """Lazy :class:`Range` of ``feature`` over the raster."""
    feature.check(rd.n_bands, "the raster")
    integer = feature.integer_exact(rd.data.dtype)
    return tree_reduce(map_chunks(rd, _chunk_range, feature, rd.nodata, integer), _combine_ranges)


# -- histogram -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Binning:
    """Histogram bins: one per integer ``low..high`` when ``integer``, else ``nbins`` equal bins
    with edges and centres computed in ``dtype``, as scikit-image does for an image of that
    dtype (float16 for a float16 band, else float64)."""

    low: float
    high: float
    nbins: int
    integer: bool
    dtype: str = "float64"

    @classmethod
    def create(cls, value_range: Range, nbins: int, integer: bool,
               dtype: str = "float64") -> Binning:
        if value_range.count == 0:
            raise PlanError(
                "The raster has no valid pixel (every pixel is no-data or NaN); nothing to fit. "
                "Check the raster's nodata value and the feature's bands."
            )
        low, high = value_range.low, value_range.high  # exact ints for an integer band
        if integer and high - low + 1 <= MAX_INTEGER_BINS:
            return cls(low, high, int(high - low + 1), True)
        if nbins < 2:
            raise MethodParameterError(f"nbins must be >= 2, got {nbins}.")
        if integer and high - low + 1 > MAX_INTEGER_BINS:
            warnings.warn(
                f"the integer feature spans {high - low + 1:.0f} values ({low:.0f} to {high:.0f}), "
                f"more than the {MAX_INTEGER_BINS} one-value bins a fit counts: its histogram has "
                f"{nbins} equal bins instead, so thresholds come within about a bin's width "
                f"({(high - low) / nbins:.4g}) of scikit-image's, not equal to them. Pass a larger "
                "nbins to come closer.", UserWarning, stacklevel=4)
        low, high = float(low), float(high)  # equal bins: edges and counts in float64
        binning = cls(low, high, int(nbins), False, dtype)
        if dtype != "float64" and not np.all(np.diff(binning.edges) > 0):
            binning = cls(low, high, int(nbins), False)  # more bins than float16 steps
        return binning.checked()

    def checked(self) -> Binning:
        """These bins, refused when float64 cannot hold them as ``nbins`` distinct, finite and
        increasing edges: values near the float64 limits (a span over 1.8e308) or a span too
        narrow for their magnitude (a few steps of float64 apart)."""
        with np.errstate(over="ignore", invalid="ignore"):
            edges = self.edges
        if np.all(np.isfinite(edges)) and np.all(edges[:-1] < edges[1:]):
            return self
        raise MethodParameterError(
            f"The feature's values span {self.low!r} to {self.high!r}: float64 cannot split that "
            f"into {self.nbins} equal, finite histogram bins (expected a span below 1.8e308 and "
            "wide enough for its magnitude). Mark out-of-range values as nodata, or rescale the "
            "raster: subtract an offset near its minimum when the span is narrow for its "
            "magnitude (a whole number keeps integer values distinct), divide it by a power of "
            "two when the span overflows; or pass fewer nbins.")

    @property
    def edges(self) -> np.ndarray:
        if self.integer:
            return np.arange(self.nbins + 1, dtype=np.float64) + self.low - 0.5
        return self._edges_in_dtype().astype(np.float64)

    def _edges_in_dtype(self) -> np.ndarray:
        """The edges in :attr:`dtype`, as ``skimage.exposure.histogram`` computes them."""
        kind = np.dtype(self.dtype).type
        low, high = kind(self.low), kind(self.high)
        if low == high:
            low, high = low - kind(0.5), high + kind(0.5)
        return np.linspace(low, high, self.nbins + 1, dtype=kind)

    @property
    def centers(self) -> np.ndarray:
        """Bin centres as scikit-image computes them: int64 for integer bins, else in
        :attr:`dtype` (float16 centres make scikit-image's Otsu sums float32, as on the image).
        Integer values beyond 2**53 are refused: the methods compute with centres in float64,
        which would round them together (thresholds are found on the histogram shifted to 0,
        ``threshold.from_zero``, and shifted back exactly)."""
        if self.integer and max(abs(int(self.low)), abs(int(self.high))) > EXACT_INTEGERS:
            raise MethodParameterError(
                f"The integer feature's values span {int(self.low)} to {int(self.high)}: "
                f"beyond 2**53 float64 rounds them together, so their histogram's bins cannot "
                f"be used as values (expected values within 2**53 of 0). Subtract an offset "
                f"from the raster (e.g. its minimum, {int(self.low)}), and add it back to the "
                "values found.")
        if self.integer:
            return np.arange(int(self.low), int(self.high) + 1, dtype=np.int64)
        edges = self._edges_in_dtype()
        return (edges[:-1] + edges[1:]) / 2.0

    @property
    def width(self) -> float:
        return 1.0 if self.integer else float(self.edges[1] - self.edges[0])

    def count(self, values: np.ndarray) -> np.ndarray:
        """Histogram of ``values`` in these bins (int64)."""
        if self.integer:  # each value's distance to the lowest, exact in uint64 arithmetic
            low = np.uint64(int(self.low) % 2**64)  # int64 lows wrap as the values do
            offsets = (values.astype(np.uint64) - low).astype(np.int64)
            return np.bincount(offsets, minlength=self.nbins).astype(np.int64)
        if self.dtype != "float64":  # the dtype's own edges, as scikit-image counts them
            return np.histogram(values, bins=self.edges)[0].astype(np.int64)
        return np.histogram(values, bins=self.nbins, range=(self.low, self.high))[0].astype(
            np.int64
        )


@dataclass(frozen=True)
class Histogram:
    """A global histogram: counts per bin, the bins, and the exact value range."""

    counts: np.ndarray
    binning: Binning
    value_range: Range

    @property
    def centers(self) -> np.ndarray:
        return self.binning.centers

    def trimmed(self) -> tuple[np.ndarray, np.ndarray]:
        """``(counts, centers)`` without empty bins at either end, as scikit-image uses them."""
        nonzero = np.flatnonzero(self.counts)
        if nonzero.size == 0:
            return self.counts, self.centers
        keep = slice(nonzero[0], nonzero[-1] + 1)
        return self.counts[keep], self.centers[keep]


def _chunk_histogram(
    block: np.ndarray,
    origin: tuple[int, int],
    feature: Feature,
    nodata: float | None,
    binning: Binning,
) -> np.ndarray:
    return binning.count(feature_values(block, feature, nodata, binning.integer))


def _sum_arrays(parts: list[np.ndarray]) -> np.ndarray:
    return np.sum(parts, axis=0)


def histogram_task(rd: RasterData, feature: Feature, binning: Binning) -> Delayed:
    """Lazy global histogram counts (int64) of ``feature`` in ``binning``."""
    feature.check(rd.n_bands, "the raster")
    return tree_reduce(map_chunks(rd, _chunk_histogram, feature, rd.nodata, binning), _sum_arrays)


def edge_dtype(feature: Feature, dtype: Any) -> str:
    """The dtype a histogram's edges are computed in: float16 for a float16 band itself (as
    scikit-image bins a float16 image), else float64."""
    own = feature.kind in ("single", "band")
    return "float16" if own and np.dtype(dtype) == np.float16 else "float64"


def global_histogram(
    raster: Any, feature: Feature, nbins: int = 256, nodata: float | None = None
) -> Histogram:
    """Two distributed passes: the exact value range, then the histogram.

    Integer bands get one bin per integer value between the global min and max
    (what scikit-image does for integer images), up to ``MAX_INTEGER_BINS``
    values; other features get ``nbins`` equal bins over ``[min, max]``, like
    ``np.histogram(values, nbins)``. NaN, infinite and no-data pixels are excluded.
    """
    rd = raster if isinstance(raster, RasterData) else raster_data(raster, nodata)
    (value_range,) = dask.compute(range_task(rd, feature))
    binning = Binning.create(value_range, nbins, feature.integer_exact(rd.data.dtype),
                             edge_dtype(feature, rd.data.dtype))
    (counts,) = dask.compute(histogram_task(rd, feature, binning))
    return Histogram(counts, binning, value_range)
