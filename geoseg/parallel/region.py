"""One task's work: read a window, segment it tile by tile on the segmenter's device, keep class ids.

The region's raw pixels cross to the segmenter's device once, in their stored dtype (through
pinned memory on a GPU). Normalisation, tile cutting, blending and the arg-max happen there;
only class ids come back to the host (and probabilities, when asked for). The CPU runs the
same code with torch on the CPU. Pure compute given a reader: the same function serves the
lazy ``segment`` graph and the store-to-store job, on a laptop or a cluster.
"""

from __future__ import annotations

import functools
import math
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from geoseg.core.segmenter import Segmenter
from geoseg.core.text import clipped
from geoseg.errors import ChunkResultError, DeviceMemoryError
from geoseg.models.tensors import class_ids, pad_end_tensor
from geoseg.tiling.blend import blend_weights
from geoseg.tiling.plan import Tile, Tiling, read_window, region_tiles

Reader = Callable[[tuple[slice, ...]], np.ndarray]
# what running out of memory says when it comes as a plain RuntimeError
OUT_OF_MEMORY = ("can't allocate memory", "out of memory", "ALLOC_FAILED")


@dataclass(frozen=True)
class RegionOutput:
    """What a region hands back: class ids of ``class_dtype`` (``nodata_class`` where the input
    has no data) and, with ``probabilities`` set to a float dtype name, the class scores too."""

    nodata_class: int
    class_dtype: str
    probabilities: str | None = None


@dataclass
class RegionResult:
    """Class ids ``(*region)``, validity ``(*region)`` and, when asked for, probabilities
    ``(classes, *region)`` (NaN where no data) of one region, on the host, plus timings.
    ``empty``: the region had no valid input pixel, so the segmenter was not run."""

    classes: np.ndarray
    valid: np.ndarray
    probabilities: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    empty: bool = False


def segment_region(segmenter: Segmenter, read: Reader, tiling: Tiling, region: tuple[slice, ...],
                   *, output: RegionOutput, nodata: float | None = None,
                   batch_size: int = 4, full_batches: bool = False) -> RegionResult:
    """Segment ``region`` of an image whose pixels ``read(window)`` returns.

    ``read`` gets windows inside the image; the part of a window past the image
    end (up to the padded extent) is reflect-padded on the device, as the whole-image
    reference does. Reading happens before this thread takes its turn on a GPU
    (:func:`device_turn`), so a worker's other threads read the next regions meanwhile.
    ``full_batches`` cuts the region's tiles into batches of one size (as few as ``batch_size``
    allows, as even as can be), the last one padded with zero tiles whose scores are dropped:
    a compiled network then meets one batch shape per count of tiles in a region (interior,
    edge and corner regions), not one per remainder, and no batch is padded by more than
    a tile per batch.
    """
    t0 = time.perf_counter()
    tiles = region_tiles(tiling, region)
    window = read_window(tiles)
    raw = read(tuple(slice(w.start, min(w.stop, n)) for w, n in zip(window, tiling.shape)))
    t1 = time.perf_counter()
    with device_turn(segmenter.device), _memory_said(segmenter.device, tiles, batch_size):
        result = _on_device(segmenter, raw, tiles, window, region, tiling, output, nodata,
                            batch_size, full_batches)
    result.timings = {"read": t1 - t0, "infer": time.perf_counter() - t1}
    return result


def _on_device(segmenter: Segmenter, raw: np.ndarray, tiles: list[Tile], window: tuple[slice, ...],
               region: tuple[slice, ...], tiling: Tiling, output: RegionOutput,
               nodata: float | None, batch_size: int, full_batches: bool) -> RegionResult:
    x, valid = segmenter.prepare_tensor(to_device(raw, segmenter.device), nodata)
    local = _shift(region, window)
    valid = valid[local]
    if not bool(valid.any()):  # every output pixel is nodata whatever the model says
        return _empty(segmenter, valid.numpy(force=True), output)
    x = pad_end_tensor(x, [w.stop - w.start for w in window])
    run = _Run(segmenter, x, window, region, batch_size, full_batches, shape=tuple(tiling.shape))
    keep_scores = tiling.blend != "crop" or output.probabilities is not None
    scores = run.blended(tiles, tiling) if tiling.blend != "crop" else run.cropped(tiles, keep_scores)
    ids = run.ids if scores is None else class_ids(scores, dim=0)
    return RegionResult(_class_ids(ids, valid, output), valid.numpy(force=True),
                        _probabilities(scores, valid, output))


@dataclass
class _Run:
    """Tiles of one region through the segmenter in batches, results kept on the device."""

    segmenter: Segmenter
    x: torch.Tensor  # the prepared read window (bands, *window)
    window: tuple[slice, ...]
    region: tuple[slice, ...]
    batch_size: int
    full_batches: bool = False  # pad the last batch to batch_size (see segment_region)
    ids: torch.Tensor | None = None
    shape: tuple[int, ...] = ()  # the image's, for segmenters told where their windows lie

    def batches(self, tiles: list[Tile]) -> Iterator[tuple[list[Tile], torch.Tensor]]:
        """Each batch of tiles with its scores ``(N, classes, *window)``."""
        step = max(1, self.batch_size)
        if self.full_batches:
            step = math.ceil(len(tiles) / math.ceil(len(tiles) / step))
        for start in range(0, len(tiles), step):
            batch = tiles[start : start + step]
            inputs = torch.stack([self.x[(slice(None),) + _shift(t.window, self.window)] for t in batch])
            windows = [t.window for t in batch]
            if self.full_batches and len(batch) < step:  # the padding repeats the last window's place
                inputs = torch.cat([inputs, inputs.new_zeros((step - len(batch), *inputs.shape[1:]))])
                windows += windows[-1:] * (step - len(batch))
            scores = self.segmenter.predict_tensor_at(inputs, windows, self.shape)
            _check_scores(scores, inputs, self.segmenter, self.region)
            yield batch, scores[: len(batch)]

    def cropped(self, tiles: list[Tile], keep_scores: bool) -> torch.Tensor | None:
        """Tile cores written into the region: their scores when ``keep_scores``, else only
        their arg-max (in :attr:`ids`), which needs no region-sized float buffer."""
        shape = tuple(r.stop - r.start for r in self.region)
        device = self.x.device
        out = (torch.empty((self.segmenter.n_classes,) + shape, dtype=torch.float32, device=device)
               if keep_scores else None)
        self.ids = None if keep_scores else torch.empty(shape, dtype=torch.int64, device=device)
        for batch, scores in self.batches(tiles):
            ids = None if keep_scores else class_ids(scores, dim=1)
            for i, tile in enumerate(batch):
                part, target = _shift(tile.output, tile.window), _shift(tile.output, self.region)
                if out is not None:
                    out[(slice(None),) + target] = scores[(i, slice(None)) + part]
                else:
                    self.ids[target] = ids[(i,) + part]
        return out

    def blended(self, tiles: list[Tile], tiling: Tiling) -> torch.Tensor:
        """The weighted mean of the blended windows' scores over the region."""
        shape = tuple(r.stop - r.start for r in self.region)
        device = self.x.device
        ramp = tuple(w - s for w, s in zip(tiling.window_shape, tiling.steps))
        weights = _weights(tiling.blend, tiling.window_shape, ramp).to(device)
        out = torch.zeros((self.segmenter.n_classes,) + shape, dtype=torch.float32, device=device)
        total = torch.zeros(shape, dtype=torch.float32, device=device)
        for batch, scores in self.batches(tiles):
            for i, tile in enumerate(batch):
                part, target = _shift(tile.output, tile.window), _shift(tile.output, self.region)
                out[(slice(None),) + target] += weights[part] * scores[(i, slice(None)) + part]
                total[target] += weights[part]
        return out.div_(total)


@functools.lru_cache(maxsize=16)
def _weights(mode: str, shape: tuple[int, ...], ramp: tuple[int, ...]) -> torch.Tensor:
    """A window's blend weights, kept on the host: a copy per region to a GPU costs a window of
    float32, and none stays on the device after the job (a cache of device tensors would)."""
    return torch.from_numpy(blend_weights(mode, shape, ramp))


def to_device(raw: np.ndarray, device: torch.device) -> torch.Tensor:
    """``raw`` as a tensor on ``device``, in its own dtype: shared with numpy on the CPU, copied
    once through pinned memory to a GPU."""
    native = np.ascontiguousarray(raw).astype(raw.dtype.newbyteorder("="), copy=False)
    tensor = torch.from_numpy(native)
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


_turns: dict[str, threading.Lock] = {}
_turns_lock = threading.Lock()


@contextmanager
def device_turn(device: torch.device) -> Iterator[None]:
    """One region at a time per GPU in this process; on the CPU no waiting.

    A GPU worker runs a few threads: while one holds the GPU, the others read and decode
    the next regions (a prefetch bounded by the worker's thread count), and the GPU never
    holds more than one region's buffers per process."""
    if device.type != "cuda":
        yield
        return
    index = torch.cuda.current_device() if device.index is None else device.index
    with _turns_lock:  # "cuda" and "cuda:0" are one GPU, and take one turn
        lock = _turns.setdefault(f"cuda:{index}", threading.Lock())
    with lock:
        yield


@contextmanager
def _memory_said(device: torch.device, tiles: list[Tile], batch_size: int) -> Iterator[None]:
    """Running out of memory (torch's error, the CPU allocator's or cuBLAS/cuDNN's words, numpy's
    MemoryError) as a geoseg error saying what was tried and what to lower. The failed region's
    tensors are let go first (the error's frames would keep them) and a GPU's cached blocks
    handed back, so the worker's next task starts clean."""
    try:
        yield
        return
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and not isinstance(exc, torch.OutOfMemoryError) \
                and not any(words in str(exc) for words in OUT_OF_MEMORY):
            raise
        said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        traceback.clear_frames(exc.__traceback__)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    raise DeviceMemoryError(_memory_advice(device, tiles, batch_size, clipped(said, 300))) from None


def _memory_advice(device: torch.device, tiles: list[Tile], batch_size: int, said: str) -> str:
    side = " x ".join(str(w.stop - w.start) for w in tiles[0].window)
    n = min(batch_size, len(tiles))
    tried = (f"a region of {len(tiles)} window(s) of {side} pixels, in batches of {n}")
    tile = "the tile (tile= in segment(), inference.tile in a job)"
    fix = (f"Lower the batch size (now {batch_size}: batch_size= in segment(), "
           f"inference.batch_size in a job, else GEOSEG_BATCH_SIZE) or {tile}" if n > 1
           else f"One window at a time already does not fit: lower {tile}, or the output chunks "
                "(a task's region holds its scores)")
    return f"Inference ran out of memory on {device} ({said}), segmenting {tried}. {fix}."


def _class_ids(ids: torch.Tensor, valid: torch.Tensor, output: RegionOutput) -> np.ndarray:
    """Arg-max ids as ``output.class_dtype`` on the host, ``nodata_class`` where no data; they
    cross the bus as uint8 when they fit."""
    ids = ids.masked_fill(~valid, output.nodata_class)
    small = torch.uint8 if np.dtype(output.class_dtype).itemsize == 1 else torch.int32
    return ids.to(small).numpy(force=True).astype(output.class_dtype, copy=False)


def _probabilities(scores: torch.Tensor | None, valid: torch.Tensor,
                   output: RegionOutput) -> np.ndarray | None:
    if output.probabilities is None or scores is None:
        return None
    dtype = getattr(torch, output.probabilities)
    return scores.masked_fill(~valid, float("nan")).to(dtype).numpy(force=True)


def _empty(segmenter: Segmenter, valid: np.ndarray, output: RegionOutput) -> RegionResult:
    classes = np.full(valid.shape, output.nodata_class, dtype=output.class_dtype)
    probabilities = None
    if output.probabilities is not None:
        probabilities = np.full((segmenter.n_classes, *valid.shape), np.nan, output.probabilities)
    return RegionResult(classes, valid, probabilities, empty=True)


def _check_scores(scores: torch.Tensor, inputs: torch.Tensor, segmenter: Segmenter,
                  region: tuple[slice, ...]) -> None:
    expected = (inputs.shape[0], segmenter.n_classes) + tuple(inputs.shape[2:])
    if tuple(scores.shape) != expected:
        raise ChunkResultError(
            f"{segmenter.name} returned scores of shape {tuple(scores.shape)} for a batch of shape "
            f"{tuple(inputs.shape)} in region {_fmt(region)}; expected {expected} "
            "(batch, classes, *window)."
        )


def _fmt(region: tuple[slice, ...]) -> str:
    return "[" + ", ".join(f"{r.start}:{r.stop}" for r in region) + "]"


def _shift(slices: tuple[slice, ...], origin: tuple[slice, ...]) -> tuple[slice, ...]:
    return tuple(slice(s.start - o.start, s.stop - o.start) for s, o in zip(slices, origin))
