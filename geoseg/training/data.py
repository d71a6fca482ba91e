"""Training data read lazily: random chips, one windowed read per chip and raster.

Rasters are described by :class:`~geoseg.io.sources.RasterSource` objects
(metadata only); every chip, statistics window and validation window is one
``source.read(window)`` straight from storage, so nothing is ever copied whole,
to this machine or to any other.

Random decisions (which pair, where, which flip and turn) are drawn from one
``numpy.random.Generator`` in the training thread, :data:`PLAN_CHIPS` chips at a
time (:func:`draw_plans`), before the threads that read chips ahead of the
training step see them, so those threads cannot change the result: a seed always
gives the same batches. What an epoch's plan holds does not grow with its length.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from geoseg import budgets
from geoseg.core.segmenter import valid_mask
from geoseg.core.urls import public_url
from geoseg.errors import TrainingDataError, TrainSpecError
from geoseg.io.georef import grid_difference, resample_hint
from geoseg.io.readers import open_source
from geoseg.io.sources import RasterSource
from geoseg.tiling.plan import round_up
from geoseg.training.spec import (
    PREFETCH,
    READ_COPIES,
    DataSpec,
    PairSpec,
    RasterSpec,
    ValidationSpec,
    batch_bytes,
    largest,
)

Window = tuple[slice, slice]


@dataclass(frozen=True)
class Region:
    """Rows ``row_start:row_stop`` and columns ``col_start:col_stop`` of a raster."""

    row_start: int
    row_stop: int
    col_start: int
    col_stop: int

    @property
    def height(self) -> int:
        return self.row_stop - self.row_start

    @property
    def width(self) -> int:
        return self.col_stop - self.col_start

    def window(self, row: int, col: int, size: int) -> Window:
        """The ``size`` x ``size`` window at offset ``(row, col)`` inside this region."""
        r, c = self.row_start + row, self.col_start + col
        return slice(r, r + size), slice(c, c + size)

    def tiles(self, tile: int) -> list[Window]:
        """Windows of at most ``tile`` pixels covering the region; the last row/column shifted to fit."""
        return [self.tile(tile, i) for i in range(self.tile_count(tile))]

    def tile_count(self, tile: int) -> int:
        """How many windows :meth:`tiles` gives, counted without listing them."""
        return _count(self.height, tile) * _count(self.width, tile)

    def tile(self, tile: int, index: int) -> Window:
        """Window ``index`` of :meth:`tiles` (row by row), computed alone."""
        row, col = divmod(index, _count(self.width, tile))
        th, tw = min(tile, self.height), min(tile, self.width)
        r = self.row_start + min(row * tile, self.height - th)
        c = self.col_start + min(col * tile, self.width - tw)
        return slice(r, r + th), slice(c, c + tw)

    def to_list(self) -> list[int]:
        return [self.row_start, self.row_stop, self.col_start, self.col_stop]


def _count(n: int, tile: int) -> int:
    """Windows of ``tile`` along ``n`` pixels: one when ``n <= tile``, the last shifted to fit."""
    return -(-n // tile) if n > tile else 1


@dataclass(frozen=True)
class RasterPair:
    """An image source, its label source, and the region of them in use."""

    name: str
    image: RasterSource
    labels: RasterSource
    region: Region

    @property
    def bands(self) -> int:
        return self.image.shape[0]


def open_pairs(specs: Sequence[PairSpec], where: str) -> list[RasterPair]:
    """Open every pair (metadata only) and check it; ``where`` names them in errors (``data.train``)."""
    return [open_pair(spec, f"{where}.{i}") for i, spec in enumerate(specs)]


def open_pair(spec: PairSpec, name: str) -> RasterPair:
    """Open one image/labels pair and check that the labels are one band on the same grid."""
    image, labels = _open(spec.image, f"{name}.image"), _open(spec.labels, f"{name}.labels")
    if labels.shape[0] != 1:
        raise TrainingDataError(
            f"{name}.labels: {public_url(spec.labels.url)} has {labels.shape[0]} bands; labels must be one band of "
            "class ids. Pick it with labels.bands: [N] (or labels.variable for a Zarr group).")
    if image.shape[1:] != labels.shape[1:]:
        raise TrainingDataError(
            f"{name}: image {public_url(spec.image.url)} is {image.shape[1]} x {image.shape[2]} pixels but labels "
            f"{public_url(spec.labels.url)} are {labels.shape[1]} x {labels.shape[2]}; they must share one grid.")
    _check_grid(image, labels, spec, name)
    height, width = image.shape[1:]
    r0, r1, c0, c1 = spec.window or (0, height, 0, width)
    if r1 > height or c1 > width:
        raise TrainingDataError(
            f"{name}.window: received {[r0, r1, c0, c1]}, but the rasters have {height} rows and {width} "
            f"columns; expected row_stop <= {height} and col_stop <= {width}.")
    return RasterPair(name, image, labels, Region(r0, r1, c0, c1))


def _check_grid(image: RasterSource, labels: RasterSource, spec: PairSpec, name: str) -> None:
    """Refuse labels whose transform or CRS differ from the image's: of the same shape, they
    would label other ground than the pixels they sit beside. A raster without a georeference
    (a PNG, a plain array) matches any."""
    difference = grid_difference(image.shape[1:], image.georef, labels.shape[1:], labels.georef)
    if difference is None:
        return
    raise TrainingDataError(
        f"{name}: image {public_url(spec.image.url)} and labels {public_url(spec.labels.url)} are "
        f"not on one grid: {difference} (image against labels){_pixel_offset(image, labels)}; "
        "expected labels on the image's grid, pixel for pixel. Resample the labels onto it with "
        f"nearest neighbour (e.g. {resample_hint(labels.georef, image.georef, 'image')}), or "
        "give the labels' own image.")


def _pixel_offset(image: RasterSource, labels: RasterSource) -> str:
    """``, labels shifted by (rows, columns) pixels`` where the two grids differ by a shift only."""
    a, b = image.georef.affine, labels.georef.affine
    if a is None or b is None or (a.a, a.b, a.d, a.e) != (b.a, b.b, b.d, b.e) or a.b or a.d:
        return ""
    if image.georef.crs_wkt != labels.georef.crs_wkt:
        return ""
    rows, cols = (b.f - a.f) / a.e + 0.0, (b.c - a.c) / a.a + 0.0  # + 0.0: no "-0"
    return f", the labels shifted by {rows:g} rows and {cols:g} columns"


def _open(spec: RasterSpec, name: str) -> RasterSource:
    """A training raster, read as a job reads its input (variable, bands, level, pages); 2D only."""
    source = open_source(spec.url, spec.storage_options, variable=spec.variable, bands=spec.bands,
                         level=spec.level, pages=spec.pages, reader=spec.reader)
    if len(source.shape) != 3:
        raise TrainingDataError(
            f"{name}: {public_url(spec.url)} is a volume of shape {source.shape} (band, z, y, x); geoseg train "
            "expects (band, y, x) rasters. For a TIFF stack whose pages are bands, set pages: band; "
            "3D networks are trained with geoseg.training.unet3d.")
    return source


def split_holdout(pairs: Sequence[RasterPair],
                  fraction: float) -> tuple[list[RasterPair], list[RasterPair]]:
    """Keep the bottom ``fraction`` of each pair's rows for validation; returns (train, validation)."""
    if fraction <= 0:
        return list(pairs), []
    train, val = [], []
    for pair in pairs:
        reg = pair.region
        cut = reg.row_start + round(reg.height * (1 - fraction))
        if not reg.row_start < cut < reg.row_stop:
            raise TrainingDataError(
                f"{pair.name}: {reg.height} rows cannot be split by data.holdout = {fraction}; "
                "give data.validation pairs instead, or a larger window.")
        train.append(RasterPair(pair.name, pair.image, pair.labels,
                                Region(reg.row_start, cut, reg.col_start, reg.col_stop)))
        val.append(RasterPair(f"{pair.name} (holdout)", pair.image, pair.labels,
                              Region(cut, reg.row_stop, reg.col_start, reg.col_stop)))
    return train, val


def check_pairs(train: Sequence[RasterPair], validation: Sequence[RasterPair], chip: int) -> None:
    """Same band count everywhere; every training region at least one chip in each direction."""
    bands = train[0].bands
    for pair in [*train, *validation]:
        if pair.bands != bands:
            raise TrainingDataError(
                f"{pair.name}: image has {pair.bands} band(s) but {train[0].name} has {bands}; every pair "
                "must give the network the same bands (select them with image.bands).")
    for pair in train:
        if pair.region.height < chip or pair.region.width < chip:
            raise TrainingDataError(
                f"{pair.name}: the training region is {pair.region.height} x {pair.region.width} pixels, "
                f"smaller than training.chip = {chip}; lower training.chip or use a larger window.")


# -- preprocessing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocess:
    """Raw pixels to network input and targets, exactly as inference prepares them.

    Inputs are ``(raw - mean) / std`` with nodata pixels set to 0 (as
    :meth:`~geoseg.models.SegmentationModel.prepare` does); targets are class ids
    with ``ignore_index`` wherever the image has no data, the labels hold their
    nodata value or ``ignore_index``.
    """

    mean: np.ndarray
    std: np.ndarray
    n_classes: int
    ignore_index: int

    def __call__(self, raw: np.ndarray, labels: np.ndarray, pair: RasterPair,
                 window: Window) -> tuple[np.ndarray, np.ndarray]:
        valid = valid_mask(raw, pair.image.georef.nodata)
        x = raw.astype(np.float32)
        x -= self.mean[:, None, None]
        x /= self.std[:, None, None]
        x[:, ~valid] = 0.0
        return x, self.targets(labels[0], valid, pair, window)

    def targets(self, labels: np.ndarray, valid: np.ndarray, pair: RasterPair,
                window: Window) -> np.ndarray:
        """Class ids as int64, ``ignore_index`` where nothing is to be learnt; checks the ids."""
        ignored = ~valid
        nodata = pair.labels.georef.nodata
        if nodata is not None and not np.isnan(nodata):  # in the labels' own values: GDAL's
            ignored |= labels == nodata  # float no-data (-3.4e38) or -9999.5 is no whole number
        if np.issubdtype(labels.dtype, np.floating):
            ignored |= np.isnan(labels)
            _check_whole(labels, ignored, pair, window)
            labels = np.where(ignored, 0, labels)
        y = labels.astype(np.int64)
        ignored |= y == self.ignore_index
        bad = ~ignored & ((y < 0) | (y >= self.n_classes))
        if bad.any():
            raise TrainingDataError(
                f"{pair.name}.labels ({public_url(pair.labels.url)}) holds class id {int(y[bad][0])} in window "
                f"rows {window[0].start}:{window[0].stop}, columns {window[1].start}:{window[1].stop}, "
                f"but the spec declares {self.n_classes} classes (ids 0..{self.n_classes - 1}) and "
                f"ignore_index {self.ignore_index}. List every class in data.classes, or set "
                "data.ignore_index to that id.")
        y[ignored] = self.ignore_index
        return y


def _check_whole(labels: np.ndarray, ignored: np.ndarray, pair: RasterPair, window: Window) -> None:
    """Refuse float labels holding a value that is no class id (1.6 would train as class 1;
    an infinity, or 1e30, would become an arbitrary int64); NaN is no label, left to ``ignored``."""
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(labels) & (labels == np.floor(labels)) & (np.abs(labels) < 2.0**62)
    frac = ~ignored & ~whole
    if not frac.any():
        return
    raise TrainingDataError(
        f"{pair.name}.labels ({public_url(pair.labels.url)}) holds the value {float(labels[frac][0]):g}, which "
        f"is no class id, in window rows {window[0].start}:{window[0].stop}, columns "
        f"{window[1].start}:{window[1].stop}; expected whole class ids (NaN for no label). Labels "
        "resampled with a smoothing method blend classes: resample them with nearest neighbour, "
        "or round them on purpose before training.")


def read_window(pair: RasterPair, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Raw image ``(band, h, w)`` and labels ``(1, h, w)`` of one window: one read each."""
    return pair.image.read(window), pair.labels.read(window)


# -- random chips -----------------------------------------------------------------------------


#: Chips drawn at once (rounded to whole batches): an epoch of up to this many chips is drawn in
#: one go, a longer one as it is read, so that its plan holds 33 bytes a chip of this many, or of
#: a batch where that is more, however long the epoch.
PLAN_CHIPS = 4096


@dataclass(frozen=True)
class ChipPlan:
    """Where chips come from, and how each is flipped and turned."""

    pair: np.ndarray
    row: np.ndarray
    col: np.ndarray
    rot: np.ndarray
    flip: np.ndarray

    def __len__(self) -> int:
        return len(self.pair)

    def part(self, start: int, stop: int) -> ChipPlan:
        """Chips ``start:stop`` of this plan (views, no copy)."""
        return ChipPlan(self.pair[start:stop], self.row[start:stop], self.col[start:stop],
                        self.rot[start:stop], self.flip[start:stop])


def draw_plan(rng: np.random.Generator, pairs: Sequence[RasterPair], n: int, chip: int,
              flips: bool, rot90: bool) -> ChipPlan:
    """``n`` chips: pairs drawn in proportion to their area, positions uniform inside each region."""
    spans = np.array([[p.region.height - chip + 1, p.region.width - chip + 1] for p in pairs],
                     dtype=np.int64)
    area = spans.prod(axis=1).astype(np.float64)
    pair = rng.choice(len(pairs), size=n, p=area / area.sum())
    row = (rng.random(n) * spans[pair, 0]).astype(np.int64)
    col = (rng.random(n) * spans[pair, 1]).astype(np.int64)
    rot = rng.integers(4, size=n) if rot90 else np.zeros(n, dtype=np.int64)
    flip = rng.integers(2, size=n).astype(bool) if flips else np.zeros(n, dtype=bool)
    return ChipPlan(pair, row, col, rot, flip)


def draw_plans(rng: np.random.Generator, pairs: Sequence[RasterPair], n: int, chip: int,
               flips: bool, rot90: bool, at_once: int = PLAN_CHIPS) -> Iterator[ChipPlan]:
    """``n`` chips as :func:`draw_plan` draws them, ``at_once`` at a time, each part drawn when
    it is asked for: memory does not grow with ``n``. Up to ``at_once`` chips are one
    :func:`draw_plan` (the same chips)."""
    for start in range(0, n, at_once):
        yield draw_plan(rng, pairs, min(at_once, n - start), chip, flips, rot90)


def batch_plans(rng: np.random.Generator, pairs: Sequence[RasterPair], steps: int,
                batch_size: int, chip: int, flips: bool, rot90: bool) -> Iterator[ChipPlan]:
    """The plans of ``steps`` batches of ``batch_size`` chips, drawn :data:`PLAN_CHIPS` (whole
    batches) at a time as the batches are read: an epoch of any length starts at once."""
    at_once = batch_size * max(1, PLAN_CHIPS // batch_size)
    for plan in draw_plans(rng, pairs, steps * batch_size, chip, flips, rot90, at_once):
        for start in range(0, len(plan), batch_size):
            yield plan.part(start, start + batch_size)


class ChipLoader:
    """Reads the chips of batch plans in background threads, ``prefetch`` batches ahead of training.

    It holds at most ``prefetch + 1`` batches at once, the one training and those being read,
    when the caller lets go of a batch before asking for the next (as
    :meth:`~geoseg.training.loop.Loop.run` does), and one chip per thread being read;
    :func:`~geoseg.training.spec.loader_bytes` counts it all. Threads write each chip into its
    place in the batch, so the batches do not depend on which thread reads what.
    """

    def __init__(self, pairs: Sequence[RasterPair], prep: Preprocess, chip: int, *, threads: int = 2,
                 prefetch: int = PREFETCH):
        self.pairs, self.prep, self.chip = list(pairs), prep, chip
        self.threads, self.prefetch = threads, prefetch

    def batches(self, plans: Iterable[ChipPlan]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(x, y)`` batches, one a plan and in plan order; ``x`` is float32 ``(N, band, chip,
        chip)``, ``y`` int64 ``(N, chip, chip)``. Plans are taken only as their batches are read."""
        plans, bands, side = iter(plans), self.pairs[0].bands, self.chip
        stop = threading.Event()
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="geoseg-chips")
        pending: deque[tuple[np.ndarray, np.ndarray, list[Future[None]]]] = deque()

        def submit() -> None:
            plan = next(plans, None)
            if plan is None:
                return
            n = len(plan)
            x = np.empty((n, bands, side, side), np.float32)
            y = np.empty((n, side, side), np.int64)
            tasks = min(self.threads, n)  # thread k reads chips k, k + tasks, ...
            pending.append((x, y, [pool.submit(self._read, plan, range(k, n, tasks), x, y, stop)
                                   for k in range(tasks)]))

        try:
            for _ in range(self.prefetch):
                submit()
            while pending:
                x, y, tasks = pending.popleft()
                for task in tasks:
                    task.result()
                submit()
                yield x, y
                del x, y  # the caller's is then the only reference: freed when it lets go
        finally:
            stop.set()  # on an error or an interrupt, no thread starts another chip
            pool.shutdown(wait=True, cancel_futures=True)

    def _read(self, plan: ChipPlan, chips: range, x: np.ndarray, y: np.ndarray,
              stop: threading.Event) -> None:
        """Read, prepare, flip and turn ``chips`` of ``plan`` into their places in ``x`` and ``y``."""
        for i in chips:
            if stop.is_set():
                return
            pair = self.pairs[int(plan.pair[i])]
            window = pair.region.window(int(plan.row[i]), int(plan.col[i]), self.chip)
            prepared = self.prep(*read_window(pair, window), pair, window)
            x[i], y[i] = turned(*prepared, int(plan.rot[i]), bool(plan.flip[i]))


def turned(x: np.ndarray, y: np.ndarray, rot: int, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """Views of ``x`` ``(band, h, w)`` and ``y`` ``(h, w)`` turned a quarter ``rot`` times, then
    flipped left-right when ``flip``."""
    x, y = np.rot90(x, rot, axes=(1, 2)), np.rot90(y, rot, axes=(0, 1))
    if flip:
        x, y = x[:, :, ::-1], y[:, ::-1]
    return x, y


def augment(x: np.ndarray, y: np.ndarray, rot: int, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """Quarter turns ``rot`` times, then a left-right flip when ``flip`` (contiguous copies)."""
    x, y = turned(x, y, rot, flip)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


# -- statistics -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataStats:
    """Per-band mean/std over valid pixels and class pixel counts, from sampled windows."""

    mean: np.ndarray
    std: np.ndarray
    class_counts: np.ndarray
    pixels: int
    windows: int
    window: int


#: What a window read to measure normalization statistics holds while it is counted
#: (:func:`measure_stats`), in windows' worth of float32 image and int64 labels: its raw read and
#: the float64 copies of its valid pixels and of their squares (20 bytes a band), then its labels
#: as read, as int64 and those counted, and the masks between them (the most that a raster of up
#: to 4-byte values needs).
STATS_COPIES = 5


def stats_bytes(window: int, bands: int) -> int:
    """Bytes one normalization window of ``window`` x ``window`` pixels and ``bands`` bands
    takes while it is counted; the windows are read one at a time."""
    return STATS_COPIES * batch_bytes(1, window, bands)


def check_stats(pairs: Sequence[RasterPair], spec: DataSpec, chip: int) -> None:
    """Refuse a ``data.normalization.window`` (``training.chip`` when unset) whose windows, as
    :func:`measure_stats` reads them (:func:`stats_window`) and counts them
    (:func:`stats_bytes`), take more than ``GEOSEG_MAX_WINDOW_BYTES``, the budget a batch of
    chips has too. Arithmetic on the regions: nothing is read."""
    norm, bands = spec.normalization, pairs[0].bands
    side = stats_window(pairs, norm.window or chip)
    allowed = budgets.limit(budgets.MAX_WINDOW_BYTES)
    n_bytes = stats_bytes(side, bands)
    if n_bytes <= allowed:
        return
    most = largest(lambda n: stats_bytes(n, bands) <= allowed, side)
    received = norm.window if norm.window is not None else f"none (training.chip: {chip})"
    raise TrainSpecError(
        f"data.normalization.window: received {received}; each of the {norm.samples} window(s) "
        "read one at a time to measure normalization statistics (data.normalization.samples), "
        f"{side} x {side} pixels with {bands} band(s), takes {budgets.size(n_bytes)} while it is "
        f"counted ({STATS_COPIES} windows' worth of float32 images and int64 labels: its read, "
        "float64 copies of its pixels and their squares, its labels as int64), over the limit of "
        f"{budgets.size(allowed)} ({budgets.MAX_WINDOW_BYTES}); expected a window of at most "
        f"{most} pixels. Set data.normalization.window lower, or raise {budgets.MAX_WINDOW_BYTES} "
        "if the machine has the memory.")


def stats_window(pairs: Sequence[RasterPair], window: int) -> int:
    """The side :func:`measure_stats` reads its windows at: ``window``, or the shortest side of
    a region where that is less."""
    return min(window, *(min(p.region.height, p.region.width) for p in pairs))


def measure_stats(rng: np.random.Generator, pairs: Sequence[RasterPair], samples: int, window: int,
                  n_classes: int, ignore_index: int) -> DataStats:
    """Mean/std per band and class counts from ``samples`` random windows (one read each, one at
    a time: :func:`stats_bytes` counts what a window holds)."""
    size = stats_window(pairs, window)
    bands = pairs[0].bands
    total, total_sq, count = np.zeros(bands), np.zeros(bands), 0
    classes = np.zeros(n_classes, dtype=np.int64)
    label_prep = Preprocess(np.zeros(bands, np.float32), np.ones(bands, np.float32), n_classes,
                            ignore_index)
    for plan in draw_plans(rng, pairs, samples, size, flips=False, rot90=False):  # as read
        for i in range(len(plan)):
            pair = pairs[int(plan.pair[i])]
            win = pair.region.window(int(plan.row[i]), int(plan.col[i]), size)
            count += _count_window(pair, win, label_prep, total, total_sq, classes)
    return _finish_stats(total, total_sq, count, classes, samples, size, pairs)


def _count_window(pair: RasterPair, win: Window, label_prep: Preprocess, total: np.ndarray,
                  total_sq: np.ndarray, classes: np.ndarray) -> int:
    """Add one window's band sums, squares and class counts; its arrays are freed on return,
    before the next window is read. Returns its valid pixels."""
    raw, labels = read_window(pair, win)
    valid = valid_mask(raw, pair.image.georef.nodata)
    pixels = raw[:, valid].astype(np.float64)
    total += pixels.sum(axis=1)
    total_sq += (pixels**2).sum(axis=1)
    del raw, pixels
    y = label_prep.targets(labels[0], valid, pair, win)
    n_classes, ignore_index = len(classes), label_prep.ignore_index
    classes += np.bincount(y[y != ignore_index].ravel(), minlength=n_classes)[:n_classes]
    return int(valid.sum())


def _finish_stats(total: np.ndarray, total_sq: np.ndarray, count: int, classes: np.ndarray, samples: int,
                  size: int, pairs: Sequence[RasterPair]) -> DataStats:
    if count == 0:
        raise TrainingDataError(
            f"{samples} random window(s) of {size} px in {', '.join(p.name for p in pairs)} hold no valid "
            "pixels (all nodata); check the image's nodata value, or raise data.normalization.samples.")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return DataStats(mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32), classes, count,
                     samples, size)


def class_weights(counts: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """Inverse square-root frequency, normalized to mean 1: rare classes still count.

    Frequencies are floored at ``floor`` so that a class missing from the sampled
    windows gets a large but bounded weight (about 30x a class covering half the data).
    """
    freq = counts.astype(np.float64) / max(int(counts.sum()), 1)
    weights = 1.0 / np.sqrt(np.maximum(freq, floor))
    return (weights / weights.mean()).astype(np.float32)


# -- validation windows -----------------------------------------------------------------------


@dataclass(frozen=True)
class ValidationSet:
    """Prepared validation windows, read once: inputs, targets and where they came from."""

    inputs: list[np.ndarray]
    targets: list[np.ndarray]
    windows: list[tuple[str, list[int]]]
    ignore_index: int = 255

    @property
    def labelled_pixels(self) -> int:
        return int(sum((t != self.ignore_index).sum() for t in self.targets))


#: Validation windows scored at once (stacked into one batch for the network).
SCORE_BATCH = 8

#: Bytes a validation window holds besides its pixels: array headers, its place in the run
#: record, its entry in the lists that hold them.
WINDOW_BOOKKEEPING = 1024


def validation_windows(pairs: Sequence[RasterPair], tile: int,
                       max_windows: int) -> list[tuple[int, Window]]:
    """Tiles covering the validation regions; evenly thinned to at most ``max_windows``. Only
    the windows kept are built (a region may hold millions of tiles)."""
    counts = np.cumsum([pair.region.tile_count(tile) for pair in pairs])
    total = int(counts[-1]) if len(counts) else 0
    if total <= max_windows:
        keep: Iterable[int] = range(total)
    else:
        keep = np.unique(np.linspace(0, total - 1, max_windows).round().astype(np.int64)).tolist()
    windows = []
    for k in keep:
        i = int(np.searchsorted(counts, k, side="right"))
        windows.append((i, pairs[i].region.tile(tile, k - (int(counts[i - 1]) if i else 0))))
    return windows


def validation_bytes(windows: int, height: int, width: int, bands: int) -> int:
    """Bytes the validation windows hold at once, for ``windows`` of up to ``height`` x
    ``width`` pixels (padded to the network's stride): each prepared (float32 image, int64
    labels) and kept through training, with :data:`WINDOW_BOOKKEEPING`, and the working copies
    of :func:`scratch_windows` more while they are read and scored."""
    per_window = batch_bytes(1, 1, bands) * height * width
    return (windows + scratch_windows(windows)) * per_window + windows * WINDOW_BOOKKEEPING


def scratch_windows(windows: int) -> int:
    """Windows' worth of working copies: one window being read (its raw read, prepared arrays
    and masks, :data:`~geoseg.training.spec.READ_COPIES`), or, while scoring, up to
    :data:`SCORE_BATCH` stacked images and their predicted classes, and one padded copy."""
    return max(READ_COPIES, min(windows, SCORE_BATCH) + 1)


def check_validation(pairs: Sequence[RasterPair], spec: ValidationSpec, bands: int,
                     stride: int) -> None:
    """Refuse a ``validation.tile`` or ``validation.max_windows`` whose windows, read once and
    held through training (:func:`validation_bytes`), take more than ``GEOSEG_MAX_WINDOW_BYTES``,
    the budget a batch of chips has too. Arithmetic on the regions: nothing is read."""
    if not pairs:
        return
    allowed = budgets.limit(budgets.MAX_WINDOW_BYTES)
    kept = min(sum(p.region.tile_count(spec.tile) for p in pairs), spec.max_windows)
    height, width = max(((round_up(min(spec.tile, p.region.height), stride),
                          round_up(min(spec.tile, p.region.width), stride)) for p in pairs),
                        key=lambda hw: hw[0] * hw[1])
    n_bytes = validation_bytes(kept, height, width, bands)
    if n_bytes <= allowed:
        return
    most = largest(lambda n: validation_bytes(n, height, width, bands) <= allowed, kept)
    if most:
        key, received = "max_windows", spec.max_windows
        expected = f"at most {most} window(s) of this size"
    else:
        key, received = "tile", spec.tile
        side = largest(lambda n: validation_bytes(1, round_up(n, stride), round_up(n, stride),
                                                  bands) <= allowed, spec.tile)
        expected = f"a tile of at most {side} pixels, at which one window fits"
    raise TrainSpecError(
        f"validation.{key}: received {received}; {kept} validation window(s) of up to {height} x "
        f"{width} pixels (padded to the network's stride {stride}) with {bands} band(s), held "
        f"through training, and {scratch_windows(kept)} windows' worth more while they are read "
        f"and scored, take {budgets.size(n_bytes)} (float32 images, int64 labels, "
        f"{budgets.size(WINDOW_BOOKKEEPING)} of bookkeeping a window), over the limit of "
        f"{budgets.size(allowed)} ({budgets.MAX_WINDOW_BYTES}); expected {expected}. Lower "
        f"validation.tile or validation.max_windows, or raise {budgets.MAX_WINDOW_BYTES} if the "
        "machine has the memory.")


def read_validation(pairs: Sequence[RasterPair], prep: Preprocess, tile: int,
                    max_windows: int) -> ValidationSet:
    """Read and prepare the validation windows (one read per window and raster)."""
    inputs, targets, where = [], [], []
    for index, window in validation_windows(pairs, tile, max_windows):
        pair = pairs[index]
        x, y = prep(*read_window(pair, window), pair, window)
        inputs.append(x)
        targets.append(y)
        where.append((pair.name, [window[0].start, window[0].stop, window[1].start, window[1].stop]))
    val = ValidationSet(inputs, targets, where, prep.ignore_index)
    if val.labelled_pixels == 0:
        raise TrainingDataError(
            f"the {len(inputs)} validation window(s) hold no labelled pixels (all nodata or ignore_index "
            f"{prep.ignore_index}); give data.validation pairs with labels, or change data.holdout.")
    return val
