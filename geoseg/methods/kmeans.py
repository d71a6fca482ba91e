"""K-means on pixel features with global centroids, fitted chunk by chunk.

* **Initialization**: one map-reduce pass draws a sample of valid pixels (a
  pixel is kept when a hash of its global index and the seed falls below
  ``sample_size / pixels``, so the sample does not depend on the chunking) and
  the feature moments; greedy k-means++ (as scikit-learn's) runs on the sample,
  once per start (``n_init`` starts, each with its own seed drawn from ``seed``).
* **Lloyd iterations**: each one is a map-reduce over chunks (per-chunk sums
  and counts per cluster, tree-summed); the new centroids are the means, an
  empty cluster keeps its centroid. All starts that have not converged advance
  together: one pass over the chunks computes the sums and counts of every
  start, so ``n_init`` starts cost one data pass per iteration, not ``n_init``.
  A start stops when its squared centroid shift is at most ``tol`` times the
  mean feature variance (scikit-learn's rule) or after ``max_iter`` iterations;
  a last pass measures every start's inertia and the lowest is kept.
* **Reads**: a fit makes ``n_iter + 2`` passes. When the bands it depends on take at most
  ``GEOSEG_MAX_FIT_CACHE_BYTES`` (default 2 GiB), they are read once and kept in memory (the
  workers', under a distributed client) for every pass, then released when the fit returns;
  a larger raster is read again by each pass (``cache`` decides otherwise). The chunks are the
  same either way, so are the centroids and the inertia.
* **Assignment** is per pixel, in :meth:`KMeans.predict`, through
  :func:`geoseg.segment`.

Features are bands (all, or a 1-based selection); add the pixel position with
:func:`with_position`, on the raster that is fitted and on the one segmented.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import dask
import numpy as np
import xarray as xr

from geoseg.core.classes import ClassInfo
from geoseg.core.segmenter import valid_mask
from geoseg.errors import BandMismatchError, MethodParameterError, PlanError
from geoseg.methods.features import PixelMethod, one_hot
from geoseg.methods.params import check_class_names, check_value, is_whole
from geoseg.methods.stats import (
    RasterData,
    cached_for_fit,
    check_fit_cache,
    map_chunks,
    raster_data,
    tree_reduce,
)

PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)


@dataclass(frozen=True)
class KMeans(PixelMethod):
    """Nearest-centroid segmenter: class ``j`` where centroid ``j`` is the closest (Euclidean).

    Scores are one-hot: 1 for the nearest centroid (the first of equally near ones, with
    distances in float64), 0 for the others, as the other classical methods score.

    Parameters
    ----------
    centroids
        ``k`` centroids of ``F`` features each.
    features
        1-based band numbers the features are taken from (``None``: all bands, in order).
    class_names
        One name per centroid, in order (default ``cluster_0`` .. ``cluster_{k-1}``); the
        colours stay the palette's.
    """

    centroids: tuple[tuple[float, ...], ...]
    features: tuple[int, ...] | None = None
    inertia: float | None = None
    n_iter: int = 0
    converged: bool = False
    init_centroids: tuple[tuple[float, ...], ...] | None = None
    band_names: tuple[str, ...] | None = None
    n_init: int = 1
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        centroids = _as_centroids(self.centroids)
        object.__setattr__(self, "centroids", centroids)
        if self.class_names is not None:
            check_names(self.class_names, len(centroids))
            object.__setattr__(self, "class_names", tuple(map(str, self.class_names)))
        if self.features is not None:
            feats = tuple(int(b) for b in self.features)
            if len(feats) != len(centroids[0]) or any(b < 1 for b in feats):
                raise MethodParameterError(
                    f"features={feats} must be {len(centroids[0])} band number(s) >= 1 "
                    f"(1-based), one per centroid coordinate."
                )
            object.__setattr__(self, "features", feats)

    @property
    def name(self) -> str:
        return f"k-means (k={len(self.centroids)})"

    @property
    def classes(self) -> tuple[ClassInfo, ...]:
        k = len(self.centroids)
        names = self.class_names or tuple(f"cluster_{j}" for j in range(k))
        return tuple(ClassInfo(name, PALETTE[j % len(PALETTE)]) for j, name in enumerate(names))

    def _describe_features(self) -> str:
        return "all bands" if self.features is None else f"bands {list(self.features)}"

    def feature_index(self, n_bands: int, where: str = "the input") -> list[int]:
        """0-based band indexes of the features, checked against ``n_bands``."""
        n_features = len(self.centroids[0])
        index = list(range(n_bands)) if self.features is None else [b - 1 for b in self.features]
        if len(index) != n_features or max(index) >= n_bands:
            raise BandMismatchError(
                f"{self.name} uses {n_features} feature(s) "
                f"({self._describe_features()}) but {where} "
                f"has {n_bands} band(s). Segment a raster like the one it was fitted on (with "
                f"with_position() if it was fitted with positions)."
            )
        return index

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """One-hot scores of the nearest centroid: in an ensemble they weigh as a network's
        probabilities do, where distances (thousands, in pixel values) outweighed any weight."""
        x = batch[:, self.feature_index(batch.shape[1])]
        d2 = np.stack([squared_distances(x, c, axis=1) for c in np.asarray(self.centroids)], axis=1)
        return one_hot(d2.argmin(axis=1), len(self.centroids))


def check_cache(shape: Sequence[int], dtype: Any, nodata: float | None,
                bands: Sequence[int] | None = None) -> None:
    """Refuse ``cache=True`` for a fit on ``bands`` of a raster ``(band, y, x)`` of ``dtype``
    whose kept bands would pass ``GEOSEG_MAX_FIT_CACHE_BYTES``: from its shape alone, so that a
    job's check says so before any read (the fit checks the same)."""
    bands = as_bands(bands)
    check_fit_cache(shape, dtype, nodata, _band_index(bands, shape[0]),
                    f"k-means on {describe_bands(bands, shape[0])}")


def check_names(class_names: Sequence[str] | None, k: int) -> None:
    """Refuse ``class_names`` of another count than the ``k`` clusters, before any pixel is read."""
    given = 0 if class_names is None else len(class_names)
    fix = f"set k to {given}" if given else "leave class_names out"
    check_class_names(class_names, k, f"k-means with k={k}", fix)


def _as_centroids(centroids: Any) -> tuple[tuple[float, ...], ...]:
    array = np.asarray(centroids, dtype=np.float64)
    if (
        array.ndim != 2
        or array.shape[0] < 1
        or array.shape[1] < 1
        or not np.all(np.isfinite(array))
    ):
        raise MethodParameterError(
            f"centroids must be a finite (k, features) array, got shape {array.shape}."
        )
    return tuple(tuple(float(v) for v in row) for row in array)


def squared_distances(x: np.ndarray, centroid: np.ndarray, axis: int) -> np.ndarray:
    """``sum((x - centroid)^2)`` over the feature ``axis`` (float64, one feature at a time)."""
    rows = np.moveaxis(x, axis, 0)  # a view: rows[f] is feature f
    total = np.zeros(rows.shape[1:], np.float64)
    for f, value in enumerate(np.asarray(centroid, np.float64)):
        diff = rows[f] - value
        diff *= diff
        total += diff
    return total


# -- per-chunk work ------------------------------------------------------------------------------


def chunk_features(
    block: np.ndarray, index: Sequence[int], nodata: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(F, n)`` (float64) of the valid pixels of ``block``, and the flat valid mask."""
    valid = valid_mask(block, nodata).ravel()
    x = block[list(index)].reshape(len(index), -1)
    x = x.astype(np.float64) if valid.all() else x[:, valid].astype(np.float64)
    return x, valid


def _hash_uniform(index: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per global pixel index (splitmix64), independent of chunking."""
    z = index.astype(np.uint64) + np.uint64((int(seed) * 0x9E3779B97F4A7C15 + 1) % (1 << 64))
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


@dataclass(frozen=True)
class InitSummary:
    """Sample (global indexes and features), moments and range (per feature) of the valid
    pixels."""

    index: np.ndarray
    sample: np.ndarray
    count: int
    total: np.ndarray
    squares: np.ndarray
    low: np.ndarray
    high: np.ndarray


def _chunk_init(
    block: np.ndarray,
    origin: tuple[int, ...],
    index: Sequence[int],
    nodata: float | None,
    shape: tuple[int, ...],
    rate: float,
    seed: int,
) -> InitSummary:
    """Sample and moments of one chunk; ``shape`` is the raster's spatial shape (any rank)."""
    x, valid = chunk_features(block, index, nodata)
    local = np.unravel_index(np.flatnonzero(valid), block.shape[1:])
    global_index = np.ravel_multi_index(
        tuple(i + o for i, o in zip(local, origin)), shape
    ).astype(np.int64)
    keep = _hash_uniform(global_index, seed) < rate
    empty = x.shape[1] == 0
    with np.errstate(over="ignore"):  # squares of huge values: refused by check_scale
        squares = (x**2).sum(axis=1)
    return InitSummary(
        global_index[keep], x[:, keep].T, x.shape[1], x.sum(axis=1), squares,
        np.full(len(x), np.inf) if empty else x.min(axis=1),
        np.full(len(x), -np.inf) if empty else x.max(axis=1),
    )


def _combine_init(parts: list[InitSummary]) -> InitSummary:
    index = np.concatenate([p.index for p in parts])
    order = np.argsort(index, kind="stable")
    return InitSummary(
        index[order],
        np.concatenate([p.sample for p in parts])[order],
        sum(p.count for p in parts),
        np.sum([p.total for p in parts], axis=0),
        np.sum([p.squares for p in parts], axis=0),
        np.min([p.low for p in parts], axis=0),
        np.max([p.high for p in parts], axis=0),
    )


@dataclass(frozen=True)
class StepSummary:
    """Per start ``s`` and cluster ``j``: feature sums ``(S, k, F)``, counts ``(S, k)``, and
    each start's inertia ``(S,)``."""

    sums: np.ndarray
    counts: np.ndarray
    inertia: np.ndarray


def assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of each column of ``x`` (``(F, n)``) and the squared distance to it."""
    labels = np.zeros(x.shape[1], np.int64)
    best = squared_distances(x, centroids[0], axis=0)
    for j in range(1, len(centroids)):  # a running minimum: the first nearest wins ties
        d2 = squared_distances(x, centroids[j], axis=0)
        closer = d2 < best
        labels[closer] = j
        np.minimum(best, d2, out=best)
    return labels, best


def _chunk_step(
    block: np.ndarray,
    origin: tuple[int, int],
    index: Sequence[int],
    nodata: float | None,
    centroids: np.ndarray,
) -> StepSummary:
    """One chunk's sums, counts and inertia for every start of ``centroids`` ``(S, k, F)``."""
    x, _ = chunk_features(block, index, nodata)
    n_starts, k, n_features = centroids.shape
    sums = np.zeros((n_starts, k, n_features))
    counts = np.zeros((n_starts, k), np.int64)
    inertia = np.zeros(n_starts)
    for s, start in enumerate(centroids):  # one start at a time: memory (k, pixels) at most
        labels, d2 = assign(x, start)
        for f, feature in enumerate(x):
            sums[s, :, f] = np.bincount(labels, weights=feature, minlength=k)
        counts[s] = np.bincount(labels, minlength=k)
        inertia[s] = d2.sum()
    return StepSummary(sums, counts, inertia)


def _combine_steps(parts: list[StepSummary]) -> StepSummary:
    return StepSummary(
        np.sum([p.sums for p in parts], axis=0),
        np.sum([p.counts for p in parts], axis=0),
        np.sum([p.inertia for p in parts], axis=0),
    )


def init_task(
    rd: RasterData, index: Sequence[int], sample_size: int, seed: int, split_every: int = 8
) -> Any:
    """Lazy :class:`InitSummary` (the k-means++ sample and the moments)."""
    shape = tuple(int(n) for n in rd.data.shape[1:])  # (y, x) or (z, y, x): any spatial rank
    rate = min(1.0, sample_size / float(np.prod(shape)))
    parts = map_chunks(rd, _chunk_init, list(index), rd.nodata, shape, rate, int(seed))
    return tree_reduce(parts, _combine_init, split_every)


def step_task(
    rd: RasterData, index: Sequence[int], centroids: np.ndarray, split_every: int = 8
) -> Any:
    """Lazy :class:`StepSummary` for ``centroids`` ``(S, k, F)`` (or ``(k, F)``, one start): one
    Lloyd iteration of every start in a single map-reduce."""
    starts = np.asarray(centroids, np.float64)
    starts = starts[None] if starts.ndim == 2 else starts
    parts = map_chunks(rd, _chunk_step, list(index), rd.nodata, starts)
    return tree_reduce(parts, _combine_steps, split_every)


# -- k-means++ and Lloyd ---------------------------------------------------------------------------


def kmeans_plusplus(x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Greedy k-means++ centroids ``(k, F)`` from the rows of ``x``, deterministic for ``seed``."""
    check_value("k", k)
    check_distinct(x, k)
    return _plusplus(x, k, seed)


def _plusplus(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    n = len(x)
    rng = np.random.default_rng(seed)
    trials = 2 + int(np.log(k))
    centers = np.empty((k, x.shape[1]))
    centers[0] = x[rng.integers(n)]
    closest = squared_distances(x, centers[0], axis=1)
    for c in range(1, k):
        targets = rng.uniform(size=trials) * closest.sum()
        candidates = np.clip(np.searchsorted(np.cumsum(closest), targets), None, n - 1)
        d2 = np.minimum(closest, np.stack([squared_distances(x, x[i], axis=1) for i in candidates]))
        best = int(np.argmin(d2.sum(axis=1)))
        centers[c], closest = x[candidates[best]], d2[best]
    return centers


def check_distinct(x: np.ndarray, k: int) -> None:
    """Refuse a sample with fewer than ``k`` distinct rows (k-means++ could not place ``k``)."""
    n = len(x)
    distinct = len(np.unique(x, axis=0)) if n else 0
    if distinct < k:
        raise PlanError(
            f"k-means++ needs at least k={k} distinct pixels in its sample, found {distinct} "
            f"(of {n} sampled). Increase sample_size, lower k, or check the nodata value."
        )


def lloyd(
    rd: RasterData,
    index: Sequence[int],
    centroids: np.ndarray,
    *,
    max_iter: int,
    tolerance: float,
    split_every: int = 8,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distributed Lloyd iterations of every start of ``centroids`` ``(S, k, F)`` together.

    Each iteration is one map-reduce over the chunks for all starts still running.
    Returns the centroids ``(S, k, F)``, each start's iteration count and whether it converged.
    """
    centroids = np.array(centroids, np.float64)
    n_iter = np.zeros(len(centroids), np.int64)
    converged = np.zeros(len(centroids), bool)
    for iteration in range(1, max_iter + 1):
        active = np.flatnonzero(~converged)
        if active.size == 0:
            break
        (step,) = dask.compute(step_task(rd, index, centroids[active], split_every))
        counts = step.counts[:, :, None]
        new = np.where(counts > 0, step.sums / np.maximum(counts, 1), centroids[active])
        shift = np.sum((new - centroids[active]) ** 2, axis=(1, 2))
        centroids[active] = new
        n_iter[active] = iteration
        converged[active] = shift <= tolerance
    return centroids, n_iter, converged


def fit_kmeans(
    raster: Any,
    k: int,
    *,
    bands: Sequence[int] | None = None,
    init: Any = "k-means++",
    n_init: int | None = None,
    max_iter: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
    sample_size: int = 100_000,
    nodata: float | None = None,
    split_every: int = 8,
    class_names: Sequence[str] | None = None,
    cache: bool | None = None,
) -> KMeans:
    """Fit k-means with global centroids on a whole raster: one map-reduce per iteration,
    shared by all starts.

    Parameters
    ----------
    raster
        ``(band, y, x)`` or ``(band, z, y, x)`` DataArray, dask or NumPy array; see
        :func:`with_position` (2D only) to add the pixel position as two features.
    k
        Number of clusters.
    bands
        1-based band numbers used as features (default: all).
    init
        ``"k-means++"`` (on a sample of about ``sample_size`` pixels, seeded by
        ``seed``) or explicit ``(k, F)`` initial centroids.
    n_init
        Number of k-means++ starts; the one with the lowest inertia is kept. Default
        10 (scikit-learn's for several starts) with ``"k-means++"``, 1 with explicit centroids
        (which allow no other). The starts run their iterations together, so more starts
        cost more arithmetic per pass but no extra passes over the raster.
    max_iter, tol
        Lloyd stops after ``max_iter`` iterations or once the summed squared
        centroid shift is at most ``tol`` times the mean feature variance.
    class_names
        One name per cluster, in the order of the clusters (of ``init`` when it gives the
        centroids); default ``cluster_0`` .. ``cluster_{k-1}``. Another count than ``k`` is
        refused before any pixel is read.
    cache
        Whether the fit reads the raster once and keeps it in memory for all its passes
        (persisted: on the workers under a distributed client), instead of reading it once per
        pass. ``None`` (default): when the bands it uses take at most
        ``GEOSEG_MAX_FIT_CACHE_BYTES`` (every band when a nodata value or a float dtype makes
        them all decide which pixels are valid). ``True`` over that limit raises
        :class:`~geoseg.errors.BudgetError` before any pixel is read. Results are identical.

    Returns
    -------
    KMeans
        A frozen segmenter holding the centroids, inertia and iteration count.
    """
    for name, value in (("k", k), ("max_iter", max_iter), ("tol", tol), ("seed", seed),
                        ("sample_size", sample_size), ("split_every", split_every),
                        ("cache", cache)):
        check_value(name, value)
    check_names(class_names, k)
    bands = as_bands(bands)
    source = raster_data(raster, nodata)
    index = _band_index(bands, source.n_bands)
    features = describe_bands(bands, source.n_bands)
    check_init(init, k, n_init, len(index), features)
    rd, index = cached_for_fit(source, index, cache, f"k-means on {features}")
    summary = dask.compute(init_task(rd, index, sample_size, seed, split_every))[0]
    if summary.count == 0:
        raise PlanError("The raster has no valid pixel (all no-data or NaN); nothing to cluster.")
    check_scale(summary, init, features)
    starts = _initial_centroids(init, summary.sample, k, seed, n_init)
    with np.errstate(over="ignore", invalid="ignore"):  # inf - inf: no tolerance, max_iter runs
        variance = np.maximum(
            summary.squares / summary.count - (summary.total / summary.count) ** 2, 0)
    centroids, n_iter, converged = lloyd(
        rd,
        index,
        starts,
        max_iter=max_iter,
        tolerance=float(np.mean(variance)) * tol,
        split_every=split_every,
    )
    (final,) = dask.compute(step_task(rd, index, centroids, split_every))
    best = int(np.argmin(final.inertia))
    if not np.isfinite(final.inertia[best]):  # each distance fits, their sum over pixels not
        raise MethodParameterError(_scale_message(
            summary.low, summary.high, features, f"the inertia (summed over the "
            f"{summary.count} pixels) is {final.inertia[best]}"))
    return KMeans(
        centroids[best],
        None if bands is None else tuple(int(b) for b in bands),
        float(final.inertia[best]),
        int(n_iter[best]),
        bool(converged[best]),
        _as_centroids(starts[best]),
        source.band_names,
        len(starts),
        None if class_names is None else tuple(class_names),
    )


def check_scale(summary: InitSummary, init: Any, features: str) -> None:
    """Refuse features whose squared distances overflow float64, before the first Lloyd pass:
    with every distance infinite, every pixel would go to the first centroid and the fit would
    return a useless mask without a word. Each feature's valid range is widened by explicit
    ``init`` centroids (their distances to the pixels count too). Refuse too features whose
    squares, summed over the pixels, overflow: the tolerance that ends the iterations and the
    inertia that picks the best start are such sums (at 2e151 the fit stopped after one pass,
    its clusters unlike those of the same data rescaled)."""
    low, high = summary.low, summary.high
    if not np.isfinite(summary.squares).all():
        raise MethodParameterError(_scale_message(
            low, high, features, f"the squares of its values summed over the {summary.count:,} "
            "pixels (for the tolerance that ends the iterations, and the inertia) reach inf"))
    if not isinstance(init, str):
        centroids = np.asarray(init, np.float64)
        low, high = np.minimum(low, centroids.min(axis=0)), np.maximum(high, centroids.max(axis=0))
    with np.errstate(over="ignore", invalid="ignore"):
        widest = float(np.sum((high - low) ** 2))  # the largest squared distance possible
    if not math.isfinite(widest):
        raise MethodParameterError(_scale_message(
            low, high, features, f"the largest squared distance is {widest}"))


def _scale_message(low: np.ndarray, high: np.ndarray, features: str, said: str) -> str:
    """Why k-means refuses features this large, and what to do."""
    ranges = ", ".join(f"[{a!r}, {b!r}]" for a, b in zip(low.tolist(), high.tolist()))
    ends = np.abs(np.concatenate([low, high]))
    scale = float(np.max(ends[np.isfinite(ends)], initial=1.0))
    return (f"k-means on {features}: received feature values in {ranges} (per feature); "
            f"{said}, past float64's 1.8e308. Expected values whose squared distances and "
            f"squares, summed over the pixels, fit float64. Rescale the raster (e.g. divide it by {scale:.0e}, "
            "bringing its values near 1; the clusters are the same), or mark out-of-range "
            "values as nodata.")


def as_bands(bands: Any) -> list[int] | None:
    """``bands`` as a list of 1-based band numbers (one number is one band, as
    :func:`geoseg.open_raster` takes it; ``None``: every band), refused unless whole numbers."""
    if bands is None:
        return None
    values = [bands] if is_whole(bands) else bands
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if not isinstance(values, (list, tuple)) or not all(map(is_whole, values)):
        raise MethodParameterError(
            f"bands: received {bands!r}; expected a list of 1-based band numbers, e.g. [2] or "
            "[3, 2, 1] (or one number for one band), or None for every band.")
    return [int(b) for b in values]


def _band_index(bands: Sequence[int] | None, n_bands: int) -> list[int]:
    if bands is None:
        return list(range(n_bands))
    bad = [b for b in bands if not 1 <= int(b) <= n_bands]
    if bad or not bands:
        raise BandMismatchError(
            f"bands={list(bands)}: band numbers are 1-based, from 1 to {n_bands}, and at "
            f"least one is needed."
        )
    return [int(b) - 1 for b in bands]


def describe_bands(bands: Sequence[int] | None, n_bands: int) -> str:
    """The features k-means takes from a raster of ``n_bands``, in words."""
    return f"all {n_bands} bands" if bands is None else f"bands {list(bands)}"


def check_init(init: Any, k: int, n_init: Any, n_features: int, features: str) -> None:
    """Refuse, before any pixel is read, an ``init`` that is neither ``'k-means++'`` nor ``k``
    centres of ``n_features`` numbers each (the ``features``, in words), and several starts
    (``n_init``) from explicit centres."""
    if isinstance(init, str) and init == "k-means++":
        parse_n_init(n_init, DEFAULT_N_INIT)
        return
    shape = f"{k} centres x {n_features} numbers ({features})"
    rows = list(init) if isinstance(init, (list, tuple, np.ndarray)) else None
    if rows is None or any(np.ndim(row) != 1 for row in rows):
        raise MethodParameterError(f"init: received {init!r}; expected 'k-means++' or {shape}, "
                                   "one list of numbers per cluster.")
    if len(rows) != k:
        raise MethodParameterError(
            f"init: received {len(rows)} centre(s) for k={k}; expected {shape}. Give one centre "
            f"per cluster, set k to {len(rows)}, or use init: k-means++.")
    bad = next((i for i, row in enumerate(rows) if len(row) != n_features), None)
    if bad is not None:
        raise MethodParameterError(
            f"init: centre {bad} has {len(rows[bad])} number(s); expected {shape}, one number per "
            f"feature in every centre.")
    if not _finite(rows):
        raise MethodParameterError(f"init: received {init!r}; expected {shape}, finite numbers.")
    _check_one_start(n_init)


def _finite(rows: list[Any]) -> bool:
    try:
        return bool(np.all(np.isfinite(np.asarray(rows, dtype=np.float64))))
    except (TypeError, ValueError):
        return False


def _check_one_start(n_init: Any) -> None:
    if parse_n_init(n_init, 1) != 1:
        raise MethodParameterError(
            f"n_init={n_init} with explicit init centroids; they make a single start. Give "
            f"n_init=1 (or leave it out), or init='k-means++' for several starts."
        )


def _initial_centroids(
    init: Any, sample: np.ndarray, k: int, seed: int, n_init: int | None
) -> np.ndarray:
    """The starts ``(S, k, F)``: ``n_init`` k-means++ draws on ``sample``, or ``init`` itself
    (checked by :func:`check_init`)."""
    if isinstance(init, str):
        seeds = start_seeds(seed, parse_n_init(n_init, DEFAULT_N_INIT))
        check_distinct(sample, k)
        return np.stack([_plusplus(sample, k, s) for s in seeds])
    return np.asarray(init, dtype=np.float64)[None]


def unfitted_kmeans(
    band_names: Sequence[str],
    k: int,
    *,
    bands: Sequence[int] | None = None,
    init: Any = "k-means++",
    n_init: int | None = None,
    class_names: Sequence[str] | None = None,
    **_fit_only: Any,
) -> KMeans:
    """What :func:`fit_kmeans` with these parameters gives on a raster of ``band_names``, as far
    as is known before the fit: ``k`` classes (named), its features and bands (the centroids are
    placeholders). Checks ``k``, ``class_names``, ``bands`` and ``init`` as the fit would,
    without reading a pixel."""
    check_value("k", k)
    check_names(class_names, k)
    bands = as_bands(bands)
    index = _band_index(bands, len(band_names))
    check_init(init, k, n_init, len(index), describe_bands(bands, len(band_names)))
    return KMeans(np.zeros((k, len(index))), None if bands is None else tuple(int(b) for b in bands),
                  band_names=tuple(band_names),
                  class_names=None if class_names is None else tuple(class_names))


DEFAULT_N_INIT = 10


def parse_n_init(n_init: Any, default: int) -> int:
    if n_init is None:
        return default
    if isinstance(n_init, bool) or not isinstance(n_init, (int, np.integer)) or n_init < 1:
        raise MethodParameterError(f"n_init={n_init!r}; expected an integer >= 1 (number of starts).")
    check_value("n_init", n_init)  # at most MAX_STARTS
    return int(n_init)


def start_seeds(seed: int, n_init: int) -> list[int]:
    """One k-means++ seed per start, derived from ``seed`` (the first start uses ``seed``)."""
    extra = np.random.SeedSequence(int(seed)).generate_state(max(n_init - 1, 0), np.uint64)
    return [int(seed)] + [int(s) for s in extra]


# -- position features -----------------------------------------------------------------------------


def with_position(raster: xr.DataArray, weight: float = 1.0) -> xr.DataArray:
    """``raster`` with two more bands, ``weight * row`` and ``weight * column`` (global indexes).

    Computed chunk by chunk (nothing is loaded). Where a pixel has no data, the
    position bands hold the raster's nodata value (or NaN), so the pixel stays
    no-data. Fit and segment the same transformed raster.

    ``weight`` (a finite number > 0) scales the position against the band values: larger, the
    clusters follow position more, into compact patches; smaller, the band values count more.
    For clusters without position, leave ``with_position`` out (``weight=0`` would only add two
    constant bands).
    """
    _check_weight(weight)
    rd = raster_data(raster)
    data = rd.data
    dtype = np.result_type(data.dtype, np.float64)
    chunks = ((data.shape[0] + 2,),) + data.chunks[1:]
    out = data.map_blocks(
        _add_position, dtype=dtype, chunks=chunks, weight=float(weight), nodata=rd.nodata
    )
    names = list(rd.band_names) + ["position_y", "position_x"]
    coords = (
        {k: v for k, v in raster.coords.items() if "band" not in v.dims}
        if isinstance(raster, xr.DataArray)
        else {}
    )
    attrs = dict(raster.attrs) if isinstance(raster, xr.DataArray) else {}
    return xr.DataArray(
        out, dims=("band", "y", "x"), coords={**coords, "band": names}, attrs=attrs, name="raster"
    )


def _check_weight(weight: Any) -> None:
    """Refuse a ``weight`` that is not a finite number > 0: a negative one scales as its opposite
    does (distances ignore the sign), 0 adds two constant bands that no clustering uses, and NaN
    or infinity make every position feature NaN or infinite."""
    number = isinstance(weight, Real) and not isinstance(weight, (bool, np.bool_))
    if not number or not math.isfinite(weight) or weight <= 0:
        raise MethodParameterError(
            f"weight: received {weight!r} ({type(weight).__name__}); expected a finite number > 0, "
            "the scale of the position bands (weight * row, weight * column) against the band "
            "values, e.g. weight=1.0 (the default), smaller for the band values to count more. "
            "For clusters without position, leave with_position() out.")


def _add_position(
    block: np.ndarray, weight: float, nodata: float | None, block_info: dict | None = None
) -> np.ndarray:
    (y0, _), (x0, _) = block_info[0]["array-location"][1:] if block_info else ((0, 0), (0, 0))
    yy, xx = np.mgrid[y0 : y0 + block.shape[1], x0 : x0 + block.shape[2]]
    position = np.stack([yy * weight, xx * weight]).astype(np.float64)
    invalid = ~valid_mask(block, nodata)
    position[:, invalid] = np.nan if nodata is None else nodata
    return np.concatenate([block.astype(np.float64), position])
