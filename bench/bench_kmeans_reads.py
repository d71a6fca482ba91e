"""Bytes a k-means fit reads from storage, and its time, with and without the fit cache.

    python bench/bench_kmeans_reads.py [--size 2048] [--chunk 512] [--iterations 10]

A ``(4, size, size)`` uint16 Zarr (zstd, chunks of ``chunk`` pixels) is written to a temporary
folder: five cluster levels in blocks, overlapping through their noise so that Lloyd takes
every iteration it is given. The same fit (k=5, 3 starts, ``tol=0``: it stops only when no
centroid moves) runs twice on the threaded scheduler: ``cache=None`` (the raster fits
``GEOSEG_MAX_FIT_CACHE_BYTES``, so it is read once and kept in memory) and ``cache=False`` (read
once per pass). Every chunk zarr fetches from the store is counted below its decoder, so the
bytes are those a remote store would send. Prints both side by side, their ratios, and checks
that the centroids and inertia are identical.

Predicted: a fit makes ``n_iter + 2`` passes (the sample, one per iteration, the inertia), so
the bytes read fall from ``(n_iter + 2) x`` the stored raster to ``1 x``. On a local disk the
time falls only by what reading and decoding cost next to the arithmetic; from object storage
it falls by the downloads too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import dask
import numpy as np
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests/
import geoseg
from geoseg.methods import fit_kmeans
from tests.methods.rasters import counted_reads


def write_raster(path: str, size: int, chunk: int) -> None:
    """Four bands of five levels in blocks plus noise, written chunk row by chunk row."""
    array = zarr.create_array(path, shape=(4, size, size), chunks=(4, chunk, chunk),
                              dtype="uint16", dimension_names=["band", "y", "x"])
    levels = np.array([[300, 900, 1500, 2100, 2700]] * 4) + np.arange(4)[:, None] * 150
    rng = np.random.default_rng(0)
    xx = np.arange(size)
    for y in range(0, size, chunk):
        yy = np.arange(y, min(y + chunk, size))[:, None]
        cluster = ((yy // 97 + xx[None] // 131) * 7 % 5).astype(np.intp)
        noise = rng.normal(0, 450, (4, len(yy), size))
        array[:, y:y + len(yy)] = np.clip(levels[:, cluster] + noise, 0, 65535).astype(np.uint16)


def timed_fit(raster, cache: bool | None, iterations: int):
    with dask.config.set(scheduler="threads"), counted_reads() as reads:
        start = time.perf_counter()
        fitted = fit_kmeans(raster, 5, n_init=3, max_iter=iterations, tol=0, seed=0, cache=cache)
        seconds = time.perf_counter() - start
    return fitted, reads, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "raster.zarr")
        write_raster(path, args.size, args.chunk)
        stored = sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
        raster = geoseg.open_raster(path)
        print(f"raster {raster.shape} {raster.dtype}, {raster.nbytes / 2**20:.0f} MiB decoded, "
              f"{stored / 2**20:.1f} MiB stored, {len(raster.data.to_delayed().ravel())} chunks")
        cached, once, t_cached = timed_fit(raster, None, args.iterations)
        plain, each, t_plain = timed_fit(raster, False, args.iterations)
    assert cached.centroids == plain.centroids and cached.inertia == plain.inertia
    passes = plain.n_iter + 2
    print(f"fit: k=5, n_init=3, {plain.n_iter} iterations, {passes} passes; centroids and inertia "
          "identical with and without the cache")
    print(f"{'':24}{'cache':>14}{'no cache':>14}{'no cache / cache':>20}")
    print(f"{'MiB read from storage':24}{once.bytes / 2**20:14.1f}{each.bytes / 2**20:14.1f}"
          f"{each.bytes / once.bytes:20.2f}")
    print(f"{'chunk reads':24}{sum(once.chunks.values()):14d}{sum(each.chunks.values()):14d}"
          f"{sum(each.chunks.values()) / sum(once.chunks.values()):20.2f}")
    print(f"{'fit time (s)':24}{t_cached:14.2f}{t_plain:14.2f}{t_plain / t_cached:20.2f}")


if __name__ == "__main__":
    main()
