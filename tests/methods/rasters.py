"""Rasters and graph helpers shared by the classical-method tests."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr
import zarr.storage
from dask.core import get_dependencies
from skimage import data as skdata

import geoseg
from tests.conftest import write_zarr

CHUNKS = (
    37,
    53,
)  # odd on purpose; every test that segments also uses tile=CHUNKS, so windows are small


def photo(name: str) -> np.ndarray:
    """A photograph bundled with scikit-image (no download), as ``(1, y, x)`` uint8."""
    return getattr(skdata, name)()[None]


def zarr_raster(
    tmp_path: Path, image: np.ndarray, name: str = "in.zarr", **attrs: object
) -> xr.DataArray:
    """``image`` written to a Zarr store (chunks 40 x 40) and opened lazily with open_raster."""
    return geoseg.open_raster(write_zarr(tmp_path / name, image, chunks=(40, 40), **attrs))


def memory_raster(
    image: np.ndarray, chunks: tuple[int, int] = CHUNKS, **attrs: object
) -> xr.DataArray:
    """An in-memory DataArray cut into dask chunks."""
    raster = xr.DataArray(image, dims=("band", "y", "x"), attrs=attrs)
    return raster.chunk({"band": -1, "y": chunks[0], "x": chunks[1]})


def run_segment(raster: xr.DataArray, segmenter, output: str = "classes", **kwargs) -> np.ndarray:
    """``geoseg.segment`` on ``CHUNKS`` output chunks with one tile per chunk, synchronously."""
    kwargs.setdefault("chunks", CHUNKS)
    kwargs.setdefault("tile", CHUNKS)
    with dask.config.set(scheduler="sync"):
        return geoseg.segment(raster, segmenter, output=output, **kwargs).values


def lazy_raster(size: int = 20_000, chunk: int = 2048) -> xr.DataArray:
    """A ``(1, size, size)`` float32 raster built chunk by chunk (never materialized).

    Two grey levels in a blocky pattern plus noise, so thresholds are meaningful.
    """

    def block(block_info: dict | None = None) -> np.ndarray:
        info = block_info[None]
        (_, _), (y0, y1), (x0, x1) = info["array-location"]
        rng = np.random.default_rng(info["chunk-location"])
        yy, xx = np.ogrid[y0:y1, x0:x1]
        pattern = ((yy // 300 + xx // 500) % 3 == 0).astype(np.float32)
        noise = rng.standard_normal((1, y1 - y0, x1 - x0), dtype=np.float32) * np.float32(0.08)
        return 0.3 + 0.4 * pattern[None] + noise

    sizes = tuple(min(chunk, size - i) for i in range(0, size, chunk))
    data = da.map_blocks(block, chunks=((1,), sizes, sizes), dtype=np.float32, name="lazy-raster")
    return xr.DataArray(data, dims=("band", "y", "x"))


def pixel_chunks_per_task(delayed, raster: xr.DataArray) -> dict[str, int]:
    """For a lazy fit step: the most raster chunks any task depends on, and task counts."""
    graph = dict(delayed.__dask_graph__())
    name = raster.data.name
    is_chunk = {k: isinstance(k, tuple) and k[0] == name for k in graph}
    per_task = [
        sum(1 for d in get_dependencies(graph, k) if is_chunk.get(d, False))
        for k in graph
        if not is_chunk[k]
    ]
    fan_in = [len(get_dependencies(graph, k)) for k in graph if not is_chunk[k]]
    return {
        "max_chunks_per_task": max(per_task),
        "tasks": len(per_task),
        "chunk_tasks": sum(is_chunk.values()),
        "reading_tasks": sum(1 for c in per_task if c),
        "max_fan_in": max(fan_in),
    }


def unreadable_raster(bands: int = 3, size: int = 64, dtype: str = "uint8") -> xr.DataArray:
    """A ``(bands, size, size)`` raster whose every chunk fails when read: a fit refused on its
    parameters alone, before any compute, never notices."""

    def block(block_info: dict | None = None) -> np.ndarray:
        raise AssertionError("a pixel was read")

    data = da.map_blocks(block, chunks=((bands,), (size // 2,) * 2, (size // 2,) * 2),
                         dtype=dtype, name="unreadable-raster")
    return xr.DataArray(data, dims=("band", "y", "x"))


METADATA_KEYS = ("zarr.json", ".zarray", ".zgroup", ".zattrs")


@dataclass
class StoreReads:
    """What zarr fetched from local stores: times each chunk key was read, and their bytes."""

    chunks: Counter = field(default_factory=Counter)
    bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@contextlib.contextmanager
def counted_reads() -> Iterator[StoreReads]:
    """Count, in this process, every chunk that zarr reads from a local store (its own storage
    layer, below every decoder and cache), by key; metadata documents are not counted."""
    reads = StoreReads()
    original = zarr.storage.LocalStore.get

    async def get(self, key, prototype=None, byte_range=None):
        buffer = await original(self, key, prototype, byte_range)
        if buffer is not None and not key.endswith(METADATA_KEYS):
            with reads.lock:
                reads.chunks[key] += 1
                reads.bytes += len(buffer)
        return buffer

    zarr.storage.LocalStore.get = get
    try:
        yield reads
    finally:
        zarr.storage.LocalStore.get = original
