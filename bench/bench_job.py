"""End-to-end job against the network alone, same pixels, same cores, measured side by side.

    python bench/bench_job.py [--size 4096] [--workers 2] [--repeats 2] [--chunks 1024]

A: ``geoseg.run``: Zarr read, model, Zarr write, on a local cluster of ``--workers``
   single-threaded worker processes (one torch thread each); its compute (tasks only) and
   its wall clock with cluster start.
B: the network alone on the job's own tiles (the same windows, halos included, batch size
   and arg-max), data already in memory as normalised float32, in this process with
   ``--workers`` torch threads: no reading, writing or scheduling.
C: ``model.predict_image`` on the whole in-memory image at once (no halos at all), for scale.
Prints each and the ratios (target: job compute >= 0.85x B). The machine is noisy, so each
repeat runs A, B and C in turn, and the best time of each is kept.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import zarr

import geoseg
from geoseg.demo import write_scene
from geoseg.jobs import JobSpec, run
from geoseg.models.tensors import pad_end_tensor
from geoseg.parallel.lazy import region_work
from geoseg.synth import make_scene
from geoseg.tiling import region_tiles, regions


def network_on_job_tiles(model: geoseg.SegmentationModel, image: torch.Tensor, work) -> float:
    """Seconds for the network over every tile the job runs, batched as the job batches them:
    each task region's tiles in batches of at most ``work.batch_size`` (a batch never spans two
    regions, so a region of one tile runs batches of one)."""
    x, _ = model.prepare_tensor(image)
    x = pad_end_tensor(x, work.tiling.padded_shape)
    start = time.perf_counter()
    for region in regions(work.tiling.shape, work.region):
        windows = [t.window for t in region_tiles(work.tiling, region)]
        for i in range(0, len(windows), work.batch_size):
            batch = torch.stack([x[(slice(None),) + w] for w in windows[i : i + work.batch_size]])
            model.predict_tensor(batch).argmax(dim=1)
    return time.perf_counter() - start


def batch_sizes(work) -> list[int]:
    """The batch sizes the job runs: per task region, as :func:`network_on_job_tiles` does."""
    sizes = []
    for region in regions(work.tiling.shape, work.region):
        n = len(list(region_tiles(work.tiling, region)))
        sizes += [min(work.batch_size, n - i) for i in range(0, n, work.batch_size)]
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--chunks", type=int, default=1024)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="geoseg-bench-"))
    src = write_scene(make_scene(args.size, args.size, seed=7), str(folder / "scene.zarr"))
    model = geoseg.load_model("builtin:demo-unet", device="cpu")
    image = torch.from_numpy(zarr.open_group(src, mode="r")["image"][:])
    work = region_work(model, image.shape[1:], regions=(args.chunks, args.chunks))
    torch.set_num_threads(args.workers)
    best = {"job": float("inf"), "compute": float("inf"), "tiles": float("inf"), "whole": float("inf")}
    for i in range(args.repeats):
        spec = JobSpec.from_dict({
            "input": {"url": src, "variable": "image"}, "model": {"path": "builtin:demo-unet"},
            "output": {"url": str(folder / f"mask{i}.zarr"), "chunks": [args.chunks, args.chunks]},
            "cluster": {"n_workers": args.workers, "threads_per_worker": 1},
            "runs_dir": str(folder / "runs")})
        report = run(spec)
        best["job"] = min(best["job"], report.seconds)
        best["compute"] = min(best["compute"], report.provenance["timings"]["compute_s"])
        best["tiles"] = min(best["tiles"], network_on_job_tiles(model, image, work))
        start = time.perf_counter()
        model.predict_image(image.numpy())
        best["whole"] = min(best["whole"], time.perf_counter() - start)
    mpx = args.size * args.size / 1e6
    print(f"scene {args.size} x {args.size} ({mpx:.1f} Mpx), {args.workers} cores, best of {args.repeats}; "
          f"tasks of {work.region}, tiles {work.tiling.tile} + halo {work.tiling.halo}, batches of "
          f"{sorted(set(batch_sizes(work)))} tile(s) (GEOSEG_BATCH_SIZE {work.batch_size}, within a task)")
    rows = [("network alone on the job's tiles", "tiles"), ("network alone, whole image at once", "whole"),
            ("job compute (tasks: read+infer+write)", "compute"), ("job end to end (with cluster start)", "job")]
    for label, key in rows:
        print(f"  {label:<40}: {best[key]:7.2f} s  {mpx / best[key]:6.3f} Mpx/s")
    print(f"  job compute / network on the same tiles : {best['tiles'] / best['compute']:5.2f}x speed (>= 0.85)")
    print(f"  job end to end / network on the same tiles: {best['tiles'] / best['job']:5.2f}x speed")
    print(f"  job compute / network on the whole image: {best['whole'] / best['compute']:5.2f}x speed")


if __name__ == "__main__":
    main()
