"""Peak worker memory of a threshold job on rasters of growing size: it must not grow with the raster.

    python bench/bench_memory.py [--sizes 16384,32768] [--chunks 1024] [--workers 2] [--keep]
    python bench/bench_memory.py --full          # the issue's sizes: 32768 (1.07 Gpx) and 65536 (4.29 Gpx)

Target (issue): peak worker memory for a 1 Gpx and a 4 Gpx raster (a cheap segmenter such as a
threshold) within 10% of each other and under 1.5 GB.

Each size is a single-band uint8 Zarr v3 array (zstd, chunks ``--chunks``) of a cheap pattern,
written lazily with dask strip by strip (progress printed). A manual threshold job
(``model: {method: threshold, params: {thresholds: [127]}}``, output chunks ``--chunks``) then runs on a
fresh ``LocalCluster`` of ``--workers`` single-threaded worker processes started here and handed to
``run(spec, client=...)``. Just before the cluster closes, each worker process reports its peak
resident memory (``ru_maxrss``); its resident memory before the job (after start-up) is printed too,
and so is the per-worker cache of decoded input chunks in effect (``--read-cache-bytes`` sets it).
The mask is checked on a few random windows. Data are deleted at the end unless ``--keep``.

Measured on 2 cores: ``--full`` peaks 496 MiB (1.07 Gpx) and 520 MiB (4.29 Gpx), ratio 1.050;
default sizes 488 and 495 MiB (1.014). Workers start at 432 MiB. (When threshold jobs still read
through the 512 MiB cache of decoded chunks: 573 and 986 MiB at the default sizes.)
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import psutil
import zarr
from distributed import Client, LocalCluster
from zarr.codecs import ZstdCodec

from geoseg import config
from geoseg.jobs import JobSpec, run

THRESHOLD = 127
LIMIT = 1.5e9  # bytes
TOLERANCE = 0.10


def pattern(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
    """Stripes and checks of period 64 with a diagonal ramp: cheap, compressible, both classes."""
    (y0, y1), (x0, x1) = block_info[None]["array-location"]
    y = np.arange(y0, y1, dtype=np.uint32)[:, None]
    x = np.arange(x0, x1, dtype=np.uint32)[None, :]
    return ((((y >> 5) ^ (x >> 5)) & 1) * 128 + ((y + x) & 127)).astype(np.uint8)


def expected(window: tuple[slice, slice]) -> np.ndarray:
    y = np.arange(window[0].start, window[0].stop, dtype=np.uint32)[:, None]
    x = np.arange(window[1].start, window[1].stop, dtype=np.uint32)[None, :]
    values = (((y >> 5) ^ (x >> 5)) & 1) * 128 + ((y + x) & 127)
    return (values > THRESHOLD).astype(np.uint8)


def write_raster(url: str, size: int, chunks: int) -> None:
    """A ``size`` x ``size`` uint8 Zarr v3 array, zstd, written by dask a strip of chunk rows at a time."""
    target = zarr.create_array(url, shape=(size, size), chunks=(chunks, chunks), dtype="uint8",
                               compressors=[ZstdCodec(level=1)], dimension_names=["y", "x"], fill_value=0)
    data = da.zeros((size, size), dtype=np.uint8, chunks=chunks).map_blocks(pattern, dtype=np.uint8)
    strip = max(chunks, (256 << 20) // size // chunks * chunks)  # about 256 MB per dask.store call
    t0 = time.perf_counter()
    with dask.config.set(scheduler="threads"):
        for y in range(0, size, strip):
            stop = min(y + strip, size)
            da.store(data[y:stop], target, regions=(slice(y, stop), slice(None)), lock=False)
            print(f"    written {stop / size:6.1%} of {size}^2 ({time.perf_counter() - t0:5.0f} s)",
                  flush=True)


def peak_rss() -> int:
    """This process's peak resident memory in bytes (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss() -> int:
    return psutil.Process().memory_info().rss


def measure(url: str, out: str, size: int, chunks: int, workers: int) -> dict:
    """Run the threshold job on a fresh cluster; peak and start-up RSS per worker, seconds."""
    spec = JobSpec.from_dict({
        "input": {"url": url}, "model": {"method": "threshold", "params": {"thresholds": [THRESHOLD]}},
        "output": {"url": out, "chunks": [chunks, chunks]}})
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        before = client.run(current_rss)
        report = run(spec, client=client)
        peaks = client.run(peak_rss)
    return {"before": before, "peaks": peaks, "seconds": report.seconds, "tasks": report.n_tasks,
            "compute": report.provenance["timings"]["compute_s"]}


def check_mask(out: str, size: int, windows: int = 6) -> None:
    mask = zarr.open_group(out, mode="r")["classes"]
    rng = np.random.default_rng(0)
    for _ in range(windows):
        y, x = (int(v) for v in rng.integers(0, size - 700, 2))
        window = (slice(y, y + 700), slice(x, x + 700))
        np.testing.assert_array_equal(mask[window], expected(window))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16384,32768",
                        help="pixels per side, comma-separated, smallest first")
    parser.add_argument("--full", action="store_true", help="the issue's sizes, 32768,65536 (1 and 4 Gpx)")
    parser.add_argument("--chunks", type=int, default=1024, help="input and output chunks")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--folder", default=None,
                        help="where to write the data (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the rasters and masks")
    parser.add_argument("--read-cache-bytes", default=None,
                        help="GEOSEG_READ_CACHE_BYTES for the workers (default: the environment's, "
                             "else geoseg's)")
    args = parser.parse_args()
    if args.read_cache_bytes is not None:
        os.environ["GEOSEG_READ_CACHE_BYTES"] = args.read_cache_bytes  # the worker processes inherit it
    sizes = [32768, 65536] if args.full else [int(s) for s in args.sizes.split(",")]
    folder = Path(args.folder or tempfile.mkdtemp(prefix="geoseg-bench-memory-"))
    folder.mkdir(parents=True, exist_ok=True)
    results = {}
    try:
        for size in sizes:
            url, out = str(folder / f"raster-{size}.zarr"), str(folder / f"mask-{size}.zarr")
            print(f"size {size}^2 = {size * size / 1e9:.2f} Gpx: writing {url}", flush=True)
            t0 = time.perf_counter()
            write_raster(url, size, args.chunks)
            stored = sum(f.stat().st_size for f in Path(url).rglob("*") if f.is_file())
            print(f"  written in {time.perf_counter() - t0:.0f} s, {stored / 1e6:.1f} MB stored; "
                  "running the job", flush=True)
            results[size] = measure(url, out, size, args.chunks, args.workers)
            check_mask(out, size)
            print(f"  job: {results[size]['tasks']} tasks in {results[size]['seconds']:.0f} s "
                  f"(compute {results[size]['compute']:.0f} s); mask checked on 6 random windows",
                  flush=True)
            if not args.keep:
                shutil.rmtree(url)
                shutil.rmtree(out)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    mib = 2**20
    cache = int(config.read_cache_bytes())
    print(f"threshold job, {args.workers} workers x 1 thread, chunks {args.chunks}, "
          f"GEOSEG_READ_CACHE_BYTES {cache} ({cache / mib:.0f} MiB of decoded input chunks per worker)")
    for size, r in results.items():
        per_worker = ", ".join(f"{r['peaks'][w] / mib:6.0f}" for w in sorted(r["peaks"]))
        start = ", ".join(f"{r['before'][w] / mib:4.0f}" for w in sorted(r["before"]))
        print(f"  {size:>6}^2 ({size * size / 1e9:5.2f} Gpx): peak worker RSS [{per_worker}] MiB "
              f"(after start-up [{start}] MiB); max {max(r['peaks'].values()) / mib:.0f} MiB")
    small, large = (max(results[s]["peaks"].values()) for s in (sizes[0], sizes[-1]))
    ratio = large / small
    worst = max(small, large)
    print(f"  ratio max peak {sizes[-1]}^2 / {sizes[0]}^2: {ratio:.3f} (target within {TOLERANCE:.0%}: "
          f"{'met' if abs(ratio - 1) <= TOLERANCE else 'missed'})")
    print(f"  largest peak {worst / 1e9:.2f} GB (target < {LIMIT / 1e9:.1f} GB: "
          f"{'met' if worst < LIMIT else 'missed'})")


if __name__ == "__main__":
    main()
