"""``geoseg.segment`` with small output chunks against plain dask at the same chunking.

    python bench/bench_small_chunks.py [--size 600] [--chunks 64 16 8] [--repeats 3]

A: ``geoseg.segment(raster, Threshold((128,)), chunks=c)``: planning (building the graph)
   and computing it on the threaded scheduler, separately.
B: plain dask: the same raster rechunked to ``c`` and compared with the same threshold.
Both give a ``c``-chunked array of the same classes (checked). Prints each and the ratio
A / B per chunk size; the best of ``--repeats``, alternating, as the machine is noisy.
"""

from __future__ import annotations

import argparse
import time

import dask
import dask.array as da
import numpy as np
import xarray as xr

import geoseg
from geoseg.methods import Threshold


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def geoseg_path(raster: xr.DataArray, chunks: int) -> tuple[float, float, np.ndarray]:
    plan_s, out = timed(lambda: geoseg.segment(raster, Threshold((128.0,)), chunks=chunks))
    assert out.data.chunksize == (min(chunks, raster.shape[1]), min(chunks, raster.shape[2]))
    compute_s, classes = timed(out.data.compute)
    return plan_s, compute_s, classes


def dask_path(raster: xr.DataArray, chunks: int) -> tuple[float, np.ndarray]:
    compute_s, mask = timed(lambda: (raster.data[0].rechunk(chunks) > 128).astype("uint8").compute())
    return compute_s, mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=600)
    parser.add_argument("--chunks", type=int, nargs="+", default=[64, 16, 8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    image = np.random.default_rng(0).integers(0, 255, (1, args.size, args.size), dtype=np.uint8)
    raster = xr.DataArray(da.from_array(image, chunks=(1, 64, 64)), dims=("band", "y", "x"))
    geoseg_path(raster, 64)  # imports and first-call costs out of the figures
    print(f"{args.size} x {args.size} uint8, threshold, threaded scheduler")
    print(f"{'chunks':>6} {'tasks':>7} {'plan s':>7} {'compute s':>9} {'dask s':>7} {'ratio':>6}")
    with dask.config.set(scheduler="threads"):
        for chunks in args.chunks:
            best_plan = best_compute = best_dask = float("inf")
            for _ in range(args.repeats):
                plan_s, compute_s, classes = geoseg_path(raster, chunks)
                dask_s, mask = dask_path(raster, chunks)
                np.testing.assert_array_equal(classes, mask)
                best_plan, best_compute = min(best_plan, plan_s), min(best_compute, compute_s)
                best_dask = min(best_dask, dask_s)
            out = geoseg.segment(raster, Threshold((128.0,)), chunks=chunks)
            tasks = len(out.data.__dask_graph__())
            ratio = (best_plan + best_compute) / best_dask
            print(f"{chunks:>6} {tasks:>7} {best_plan:>7.2f} {best_compute:>9.2f} "
                  f"{best_dask:>7.2f} {ratio:>6.2f}")


if __name__ == "__main__":
    main()
