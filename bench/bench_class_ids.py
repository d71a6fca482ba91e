"""The arg-max over class scores on the CPU: torch's against numpy's, in a threshold job.

    python bench/bench_class_ids.py [--size 2048] [--chunk 256] [--repeats 3]

A threshold job (Zarr to Zarr, a 3-band synthetic scene, threads in this process) whose
regions take their class ids with torch's ``argmax(dim)`` (A, as before) or with
``geoseg.models.tensors.class_ids`` (B, numpy's arg-max on the CPU), alternating, ``--repeats``
times each; prints each run's compute seconds (the run record's), the best of each, and
their ratio. Classical methods score one-hot and take the arg-max like a network, so the
arg-max is most of their compute.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import zarr

from geoseg.jobs import JobSpec, run
from geoseg.parallel import region


def scene(folder: Path, size: int, chunk: int) -> str:
    """A textured 3-band uint8 Zarr array of ``size``^2 in ``chunk``^2 chunks."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    base = 128 + 60 * np.sin(xx / 37.0) * np.cos(yy / 53.0)
    image = np.stack([base + rng.normal(0, 20, base.shape) for _ in range(3)]).clip(0, 255)
    url = str(folder / "scene.zarr")
    zarr.create_array(url, data=image.astype(np.uint8), chunks=(3, chunk, chunk))
    return url


def compute_seconds(src: str, out: str, chunk: int) -> float:
    spec = JobSpec.from_dict({"input": {"url": src}, "output": {"url": out, "chunks": [chunk, chunk]},
                              "model": {"method": "threshold", "params": {"thresholds": [128], "feature": 1}}})
    return run(spec, scheduler="threads").provenance["timings"]["compute_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    arms = {"A torch argmax": lambda scores, dim: scores.argmax(dim=dim), "B class_ids": region.class_ids}
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    with tempfile.TemporaryDirectory() as folder:
        src = scene(Path(folder), args.size, args.chunk)
        for repeat in range(args.repeats):
            for i, (name, arg_max) in enumerate(arms.items()):
                region.class_ids = arg_max
                seconds[name].append(compute_seconds(src, f"{folder}/out-{repeat}-{i}.zarr", args.chunk))
    tasks = (args.size // args.chunk) ** 2
    print(f"threshold job, {args.size}^2 x 3 uint8, {args.chunk}-pixel chunks ({tasks} tasks), threads")
    for name, values in seconds.items():
        print(f"  {name}: compute {', '.join(f'{v:.3f}' for v in values)} s; best {min(values):.3f} s")
    a, b = min(seconds["A torch argmax"]), min(seconds["B class_ids"])
    print(f"  B / A = {b / a:.2f} ({a / b:.2f}x faster)")


if __name__ == "__main__":
    main()
