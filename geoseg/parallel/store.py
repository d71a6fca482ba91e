"""Store to store: each task reads its window, segments its region, writes its own chunk(s)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
from distributed import Client, as_completed

from geoseg.io.output import OutputTarget, chunk_checksum, chunk_key
from geoseg.io.sources import RasterSource
from geoseg.parallel.tasks import RegionWork, probabilities
from geoseg.tiling.plan import regions


@dataclass(frozen=True)
class RegionStats:
    """What a task reports back: never pixels, only counts and timings."""

    region: tuple[slice, ...]
    class_counts: np.ndarray  # per class id, valid pixels only
    pixels: int
    timings: dict[str, float]
    empty: bool = False  # no valid input pixel: written as nodata without running the model


def segment_to_store(region: tuple[slice, ...], work: RegionWork, source: RasterSource,
                     target: OutputTarget, n_classes: int, with_probabilities: bool,
                     chunks: tuple[int, ...]) -> RegionStats:
    """Segment one region, write it, then record it in the manifest; the task run on a worker."""
    result = work.run(source.read, region)
    t0 = time.perf_counter()
    classes = work.classes(result)
    blocks = [classes]
    target.write("classes", region, classes)
    if with_probabilities:
        blocks.append(probabilities(result).astype(np.float16))
        target.write("probabilities", region, blocks[-1])
    target.mark_done(chunk_key(region, chunks), chunk_checksum(*blocks))
    timings = {**result.timings, "write": time.perf_counter() - t0}
    counts = np.bincount(classes[result.valid].ravel(), minlength=n_classes)[:n_classes]
    return RegionStats(region, counts, int(classes.size), timings, empty=result.empty)


def run_regions(client: Client, work: RegionWork, source: RasterSource, target: OutputTarget,
                *, chunks: tuple[int, int], n_classes: int, with_probabilities: bool,
                skip: Collection[str] = frozenset(),
                on_done: Callable[[RegionStats], None] | None = None) -> list[RegionStats]:
    """Submit one task per output chunk not in ``skip`` and wait for all of them."""
    todo = [r for r in regions(source.shape[1:], chunks) if chunk_key(r, chunks) not in skip]
    futures = client.map(segment_to_store, todo, work=work, source=source, target=target,
                         n_classes=n_classes, with_probabilities=with_probabilities, chunks=chunks,
                         pure=False)
    stats = []
    try:
        for future in as_completed(futures):
            result = future.result()
            stats.append(result)
            if on_done is not None:
                on_done(result)
    except BaseException:
        client.cancel(futures)
        raise
    return stats
