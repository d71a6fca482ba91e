"""A small job end to end against the segmentation itself, measured side by side.

    python bench/bench_small_job.py [--image ../shared/data/RGB.byte.tif] [--repeats 3]

The Landsat sample (791 x 718 x 3) when present, else a synthetic scene of that size, through
the bundled demo U-Net:
A: the segmentation itself: ``predict_image`` on the whole image in this process, the model
   already loaded (what the job cannot go below);
B: ``geoseg run`` as a user types it, wall clock of the command (Python start, imports,
   cluster, model load, read, write, run record);
C: the same command with ``GEOSEG_INPROCESS_PIXELS=0``: worker processes even for this job,
   as every local run started before small jobs ran on threads.
Prints the best of ``--repeats`` runs of each (alternating), each as the command's wall clock
and as the job's own seconds (its log: spec to run record, without interpreter start and
imports), and their ratios to A.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import yaml

import geoseg
from geoseg.synth import make_scene

SAMPLE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "RGB.byte.tif"


def image_url(given: str | None, folder: Path) -> str:
    """The image to segment: ``given``, else the Landsat sample, else a synthetic GeoTIFF."""
    if given or SAMPLE.exists():
        return given or str(SAMPLE.resolve())
    scene = make_scene(718, 791, seed=1)
    path = folder / "scene.tif"
    profile = {"driver": "GTiff", "width": 791, "height": 718, "count": 3, "dtype": "uint8",
               "crs": scene.crs, "transform": scene.transform}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(scene.image)
    return str(path)


def segmentation_seconds(url: str) -> float:
    """A: the model on the whole in-memory image, best of three, model loaded beforehand."""
    with rasterio.open(url) as src:
        image = src.read()
    model = geoseg.load_model("builtin:demo-unet")
    best = np.inf
    for _ in range(3):
        start = time.perf_counter()
        model.predict_image(image).argmax(0)
        best = min(best, time.perf_counter() - start)
    return best


def command_seconds(job: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall clock of ``geoseg run JOB --overwrite`` in a new process, and the job's own seconds
    (from loading the spec to the run record, as its log reports them: no interpreter start or
    imports)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "geoseg.cli", "run", str(job), "--overwrite"],
                          check=True, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    return wall, float(re.search(r"seconds=([\d.]+)", done.stderr).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url = image_url(args.image, folder)
        job = folder / "job.yaml"
        job.write_text(yaml.safe_dump({"name": "small", "input": {"url": url},
                                       "model": {"path": "builtin:demo-unet"},
                                       "output": {"url": str(folder / "mask.zarr")},
                                       "runs_dir": str(folder / "runs")}))
        env = {**os.environ, "GEOSEG_DEVICE": "cpu"}
        threads, processes = (np.inf, np.inf), (np.inf, np.inf)
        for _ in range(args.repeats):
            # the best wall clock and the best job time apart (they may come from other runs)
            threads = tuple(map(min, threads, command_seconds(job, env)))
            processes = tuple(map(min, processes, command_seconds(
                job, {**env, "GEOSEG_INPROCESS_PIXELS": "0"})))
        alone = segmentation_seconds(url)
    print(f"image: {url}")
    print(f"A segmentation itself (predict_image, model loaded): {alone:6.2f} s")
    for name, (wall, own) in (("B geoseg run, small job on threads", threads),
                              ("C geoseg run with worker processes", processes)):
        print(f"{name}: command wall {wall:6.2f} s ({wall / alone:5.2f}x A), "
              f"the job itself {own:6.2f} s ({own / alone:5.2f}x A)")


if __name__ == "__main__":
    main()
