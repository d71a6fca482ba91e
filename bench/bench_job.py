"""End-to-end job against the model alone, same pixels, same cores, measured side by side.

    python bench/bench_job.py [--size 2048] [--workers 2] [--repeats 2]

A: ``geoseg.run``: Zarr read, model, Zarr write, on a local cluster of
   ``--workers`` single-threaded worker processes (one torch thread each).
B: ``model.predict_image`` on the whole in-memory image in this process, with
   ``--workers`` torch threads: no I/O, no halo, no scheduling.
Prints both and their ratio; the machine is noisy, so each is repeated and the
best time kept, alternating A and B.
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
from geoseg.synth import make_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--chunks", type=int, default=1024)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="geoseg-bench-"))
    scene = make_scene(args.size, args.size, seed=7)
    src = write_scene(scene, str(folder / "scene.zarr"))
    model = geoseg.load_model("builtin:demo-unet", device="cpu")
    torch.set_num_threads(args.workers)
    job_best = compute_best = model_best = float("inf")
    for i in range(args.repeats):
        spec = JobSpec.from_dict({
            "input": {"url": src, "variable": "image"}, "model": {"path": "builtin:demo-unet"},
            "output": {"url": str(folder / f"mask{i}.zarr"), "chunks": [args.chunks, args.chunks]},
            "cluster": {"n_workers": args.workers, "threads_per_worker": 1}})
        report = run(spec)
        job_best = min(job_best, report.seconds)
        compute_best = min(compute_best, report.provenance["timings"]["compute_s"])
        image = zarr.open_group(src, mode="r")["image"][:]
        start = time.perf_counter()
        model.predict_image(image)
        model_best = min(model_best, time.perf_counter() - start)
    mpx = args.size * args.size / 1e6
    print(f"scene {args.size} x {args.size} ({mpx:.1f} Mpx), {args.workers} cores, best of {args.repeats}")
    print(f"  model alone, one process          : {model_best:7.2f} s  {mpx / model_best:6.3f} Mpx/s")
    print(f"  job compute (tasks, read+infer+write): {compute_best:7.2f} s  {mpx / compute_best:6.3f} Mpx/s")
    print(f"  job end to end (with cluster start): {job_best:7.2f} s  {mpx / job_best:6.3f} Mpx/s")
    print(f"  ratio job compute / model alone   : {compute_best / model_best:5.2f}")
    print(f"  ratio job end to end / model alone: {job_best / model_best:5.2f}")


if __name__ == "__main__":
    main()
