"""Training data read lazily: random chips, one windowed read per chip and raster.

Rasters are described by :class:`~geoseg.io.sources.RasterSource` objects
(metadata only); every chip, statistics window and validation window is one
``source.read(window)`` straight from storage, so nothing is ever copied whole,
to this machine or to any other.

Random decisions (which pair, where, which flip and turn) are all drawn up
front from one ``numpy.random.Generator`` per epoch (:func:`draw_plan`), so
the threads that read chips ahead of the training step cannot change the
result: a seed always gives the same batches.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from geoseg.core.segmenter import valid_mask
from geoseg.errors import TrainingDataError
from geoseg.io.readers import open_source
from geoseg.io.sources import RasterSource
from geoseg.training.spec import PairSpec, RasterSpec

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
        rows = _starts(self.height, tile)
        cols = _starts(self.width, tile)
        th, tw = min(tile, self.height), min(tile, self.width)
        r0, c0 = self.row_start, self.col_start
        return [(slice(r0 + r, r0 + r + th), slice(c0 + c, c0 + c + tw)) for r in rows for c in cols]

    def to_list(self) -> list[int]:
        return [self.row_start, self.row_stop, self.col_start, self.col_stop]


def _starts(n: int, tile: int) -> list[int]:
    if n <= tile:
        return [0]
    starts = list(range(0, n - tile + 1, tile))
    return starts if starts[-1] == n - tile else starts + [n - tile]


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
            f"{name}.labels: {spec.labels.url} has {labels.shape[0]} bands; labels must be one band of "
            "class ids. Pick it with labels.bands: [N] (or labels.variable for a Zarr group).")
    if image.shape[1:] != labels.shape[1:]:
        raise TrainingDataError(
            f"{name}: image {spec.image.url} is {image.shape[1]} x {image.shape[2]} pixels but labels "
            f"{spec.labels.url} are {labels.shape[1]} x {labels.shape[2]}; they must share one grid.")
    height, width = image.shape[1:]
    r0, r1, c0, c1 = spec.window or (0, height, 0, width)
    if r1 > height or c1 > width:
        raise TrainingDataError(
            f"{name}.window: received {[r0, r1, c0, c1]}, but the rasters have {height} rows and {width} "
            f"columns; expected row_stop <= {height} and col_stop <= {width}.")
    return RasterPair(name, image, labels, Region(r0, r1, c0, c1))


def _open(spec: RasterSpec, name: str) -> RasterSource:
    """A training raster, read as a job reads its input (variable, bands, level, pages); 2D only."""
    source = open_source(spec.url, spec.storage_options, variable=spec.variable, bands=spec.bands,
                         level=spec.level, pages=spec.pages, reader=spec.reader)
    if len(source.shape) != 3:
        raise TrainingDataError(
            f"{name}: {spec.url} is a volume of shape {source.shape} (band, z, y, x); geoseg train "
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
        if np.issubdtype(labels.dtype, np.floating):
            ignored |= np.isnan(labels)
            labels = np.nan_to_num(labels, nan=0.0)
        y = labels.astype(np.int64)
        nodata = pair.labels.georef.nodata
        if nodata is not None and not np.isnan(nodata):
            ignored |= y == int(nodata)
        ignored |= y == self.ignore_index
        bad = ~ignored & ((y < 0) | (y >= self.n_classes))
        if bad.any():
            raise TrainingDataError(
                f"{pair.name}.labels ({pair.labels.url}) holds class id {int(y[bad][0])} in window "
                f"rows {window[0].start}:{window[0].stop}, columns {window[1].start}:{window[1].stop}, "
                f"but the spec declares {self.n_classes} classes (ids 0..{self.n_classes - 1}) and "
                f"ignore_index {self.ignore_index}. List every class in data.classes, or set "
                "data.ignore_index to that id.")
        y[ignored] = self.ignore_index
        return y


def read_window(pair: RasterPair, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Raw image ``(band, h, w)`` and labels ``(1, h, w)`` of one window: one read each."""
    return pair.image.read(window), pair.labels.read(window)


# -- random chips -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChipPlan:
    """Where every chip of an epoch comes from, and how it is flipped and turned."""

    pair: np.ndarray
    row: np.ndarray
    col: np.ndarray
    rot: np.ndarray
    flip: np.ndarray

    def __len__(self) -> int:
        return len(self.pair)


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


class ChipLoader:
    """Reads the chips of a plan in background threads, a few batches ahead of training."""

    def __init__(self, pairs: Sequence[RasterPair], prep: Preprocess, chip: int, *, threads: int = 2,
                 prefetch: int = 2):
        self.pairs, self.prep, self.chip = list(pairs), prep, chip
        self.threads, self.prefetch = threads, prefetch

    def chip_at(self, plan: ChipPlan, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Chip ``i`` of ``plan``: read, prepared, flipped and turned."""
        pair = self.pairs[int(plan.pair[i])]
        window = pair.region.window(int(plan.row[i]), int(plan.col[i]), self.chip)
        x, y = self.prep(*read_window(pair, window), pair, window)
        return augment(x, y, int(plan.rot[i]), bool(plan.flip[i]))

    def batches(self, plan: ChipPlan, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(x, y)`` batches in plan order; ``x`` is float32 ``(N, band, chip, chip)``, ``y`` int64."""
        starts = iter(range(0, len(plan), batch_size))
        with ThreadPoolExecutor(self.threads, thread_name_prefix="geoseg-chips") as pool:
            pending: deque[list[Future[tuple[np.ndarray, np.ndarray]]]] = deque()

            def submit() -> None:
                start = next(starts, None)
                if start is not None:
                    stop = min(start + batch_size, len(plan))
                    pending.append([pool.submit(self.chip_at, plan, i) for i in range(start, stop)])

            for _ in range(self.prefetch):
                submit()
            while pending:
                chips = [f.result() for f in pending.popleft()]
                submit()
                yield np.stack([c[0] for c in chips]), np.stack([c[1] for c in chips])


def augment(x: np.ndarray, y: np.ndarray, rot: int, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """Quarter turns ``rot`` times, then a left-right flip when ``flip``."""
    x, y = np.rot90(x, rot, axes=(1, 2)), np.rot90(y, rot, axes=(0, 1))
    if flip:
        x, y = x[:, :, ::-1], y[:, ::-1]
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


def measure_stats(rng: np.random.Generator, pairs: Sequence[RasterPair], samples: int, window: int,
                  n_classes: int, ignore_index: int) -> DataStats:
    """Mean/std per band and class counts from ``samples`` random windows (one read each)."""
    size = min(window, *(min(p.region.height, p.region.width) for p in pairs))
    plan = draw_plan(rng, pairs, samples, size, flips=False, rot90=False)
    bands = pairs[0].bands
    total, total_sq, count = np.zeros(bands), np.zeros(bands), 0
    classes = np.zeros(n_classes, dtype=np.int64)
    label_prep = Preprocess(np.zeros(bands, np.float32), np.ones(bands, np.float32), n_classes,
                            ignore_index)
    for i in range(samples):
        pair = pairs[int(plan.pair[i])]
        win = pair.region.window(int(plan.row[i]), int(plan.col[i]), size)
        raw, labels = read_window(pair, win)
        valid = valid_mask(raw, pair.image.georef.nodata)
        pixels = raw[:, valid].astype(np.float64)
        total += pixels.sum(axis=1)
        total_sq += (pixels**2).sum(axis=1)
        count += pixels.shape[1]
        y = label_prep.targets(labels[0], valid, pair, win)
        classes += np.bincount(y[y != ignore_index].ravel(), minlength=n_classes)[:n_classes]
    return _finish_stats(total, total_sq, count, classes, samples, size, pairs)


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


def validation_windows(pairs: Sequence[RasterPair], tile: int,
                       max_windows: int) -> list[tuple[int, Window]]:
    """Tiles covering the validation regions; evenly thinned to at most ``max_windows``."""
    tiles = [(i, w) for i, pair in enumerate(pairs) for w in pair.region.tiles(tile)]
    if len(tiles) <= max_windows:
        return tiles
    keep = np.unique(np.linspace(0, len(tiles) - 1, max_windows).round().astype(int))
    return [tiles[k] for k in keep]


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
