"""A chunked Otsu job (distributed fit + per-chunk apply) against scikit-image on the same image.

    python bench/bench_otsu.py [--size 8192] [--chunks 1024] [--workers 2] [--scheduler threads]

A: ``fit_threshold(raster, "otsu")`` (two tree reductions: range, histogram) then
   ``geoseg.segment(raster, otsu).compute()``, the raster read from a Zarr store
   chunk by chunk, on dask's threaded scheduler (``--scheduler threads``) or a
   local cluster of single-threaded worker processes (``--scheduler processes``),
   ``--workers`` of them.
B: ``threshold_otsu(image)`` and ``image > t`` with scikit-image on the whole
   in-memory image, one thread.
Prints both times (best of ``--repeats``), the ratio A / B, and the ratio per
core (A's time times its cores, over B's time: 1.0 would mean no overhead).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import dask
import numpy as np
import zarr
from skimage import filters

import geoseg
from geoseg.methods import fit_threshold


def make_image(size: int, seed: int = 0) -> np.ndarray:
    """A uint8 scene: blocky bright objects on a darker background, with noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.ogrid[0:size, 0:size]
    objects = ((yy // 97 + xx // 131) % 4 == 0).astype(np.float32)
    image = 70 + 110 * objects + rng.normal(0, 20, (size, size)).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)[None]


def write(image: np.ndarray, chunks: int, folder: Path) -> str:
    path = str(folder / "scene.zarr")
    arr = zarr.create_array(
        path,
        shape=image.shape,
        chunks=(1, chunks, chunks),
        dtype=image.dtype,
        dimension_names=["band", "y", "x"],
    )
    arr[:] = image
    return path


def run_geoseg(url: str, chunks: int) -> tuple[float, float, float, np.ndarray]:
    raster = geoseg.open_raster(url, chunks=chunks)
    start = time.perf_counter()
    otsu = fit_threshold(raster, "otsu")
    fitted = time.perf_counter()
    mask = geoseg.segment(raster, otsu, chunks=chunks).compute().values
    return fitted - start, time.perf_counter() - fitted, otsu.thresholds[0], mask


def run_skimage(image: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    start = time.perf_counter()
    threshold = filters.threshold_otsu(image[0])
    fitted = time.perf_counter()
    mask = image[0] > threshold
    return fitted - start, time.perf_counter() - fitted, float(threshold), mask


def scheduler(kind: str, workers: int):
    if kind == "threads":
        return dask.config.set(scheduler="threads", num_workers=workers)
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    return Client(cluster)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--chunks", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scheduler", choices=("threads", "processes"), default="threads")
    args = parser.parse_args()
    image = make_image(args.size)
    best_a, best_b = (float("inf"),) * 3, (float("inf"),) * 3
    with tempfile.TemporaryDirectory(prefix="geoseg-bench-otsu-") as folder:
        url = write(image, args.chunks, Path(folder))
        with scheduler(args.scheduler, args.workers):
            for _ in range(args.repeats):  # alternate A and B: the machine is noisy
                fit_a, apply_a, t_a, mask_a = run_geoseg(url, args.chunks)
                fit_b, apply_b, t_b, mask_b = run_skimage(image)
                best_a = min(best_a, (fit_a + apply_a, fit_a, apply_a))
                best_b = min(best_b, (fit_b + apply_b, fit_b, apply_b))
    assert t_a == t_b and np.array_equal(mask_a, mask_b), "chunked Otsu differs from scikit-image"
    report(args, t_a, best_a, best_b)


def report(
    args: argparse.Namespace, threshold: float, geoseg_times: tuple, skimage_times: tuple
) -> None:
    """Print both timings (total, fit, apply), the ratio, and the ratio per core."""
    mpx = args.size * args.size / 1e6
    print(
        f"image {args.size} x {args.size} uint8 ({mpx:.0f} Mpx), chunks {args.chunks}, "
        f"{args.workers} {args.scheduler}, best of {args.repeats}; threshold {threshold:g} in both"
    )
    for label, (total, fit, apply) in (
        ("geoseg fit + apply (Zarr, dask)", geoseg_times),
        ("scikit-image, in memory, 1 core", skimage_times),
    ):
        print(
            f"  {label:34}: {total:7.3f} s (fit {fit:.3f}, apply {apply:.3f})"
            f"  {mpx / total:6.1f} Mpx/s"
        )
    ratio = geoseg_times[0] / skimage_times[0]
    print(f"  {'ratio geoseg / scikit-image':34}: {ratio:7.2f}")
    print(f"  {f'ratio per core (x {args.workers} cores)':34}: {ratio * args.workers:7.2f}")


if __name__ == "__main__":
    main()
