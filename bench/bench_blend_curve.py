"""How far blended tiles are from whole-image inference, for a model with global context.

    python bench/bench_blend_curve.py MODEL.safetensors [--size 2048] [--tile 512]

DeepLabv3+ pools over its whole input (ASPP image pooling), so no halo makes tiles
exact. On a synthetic demo scene this prints, for gaussian blending at several
overlaps, the fraction of pixels whose class differs from the model run on the whole
image at once (and the same for cropped tiles without blending, for comparison).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import dask
import numpy as np

import geoseg
from geoseg.demo import write_scene
from geoseg.synth import make_scene


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlaps", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75])
    args = parser.parse_args()
    model = geoseg.load_model(args.model, device="cpu")
    scene = make_scene(args.size, args.size, seed=2026)
    url = write_scene(scene, str(Path(tempfile.mkdtemp()) / "scene.zarr"))
    raster = geoseg.open_raster(url, variable="image")
    whole = model.predict_image(scene.image, nodata=0).argmax(0)
    print(f"{model.name} ({model.info.architecture}), scene {args.size}^2, tile {args.tile}")
    print(f"{'mode':>10} {'overlap':>8} {'differ from whole image':>24} {'seconds':>8}")
    runs = [("crop", 0.0)] + [("gaussian", o) for o in args.overlaps]
    for mode, overlap in runs:
        start = time.perf_counter()
        with dask.config.set(scheduler="threads", num_workers=1):
            classes = geoseg.segment(raster, model, chunks=1024, tile=args.tile, blend=mode,
                                     overlap=overlap, halo=0 if mode == "crop" else None).values
        differ = float(np.mean(classes != whole))
        print(f"{mode:>10} {overlap:8.2f} {differ:23.4%} {time.perf_counter() - start:8.1f}")


if __name__ == "__main__":
    main()
