"""Seconds per output megapixel of the bundled U-Net at several tile cores and batch sizes.

    python bench/bench_tiles_cpu.py [--threads 1] [--tiles 256,512,1024] [--batches 1,4] [--repeats 2]

The network alone (normalised input already in memory, arg-max included) on windows of tile
core + 2 x halo (the model's receptive field rounded to its stride), counted in core pixels, the
output a tile writes; the best of ``--repeats``, configurations alternating. Informs the
defaults GEOSEG_TILE and GEOSEG_BATCH_SIZE on the CPU (docs/performance.md).
"""

from __future__ import annotations

import argparse
import time

import torch

import geoseg
from geoseg.tiling.plan import round_up


def seconds_per_mpx(model: geoseg.SegmentationModel, tile: int, batch: int, halo: int) -> float:
    side = tile + 2 * halo
    raw = torch.rand(3, side, side, generator=torch.Generator().manual_seed(tile)) * 255
    x = model.prepare_tensor(raw)[0][None].expand(batch, -1, -1, -1).contiguous()
    calls = max(1, 4 // batch) if tile < 1024 else 1
    start = time.perf_counter()
    for _ in range(calls):
        model.predict_tensor(x).argmax(dim=1)
    return (time.perf_counter() - start) / (calls * batch * tile * tile / 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tiles", default="256,512,1024")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = geoseg.load_model("builtin:demo-unet", device="cpu")
    halo = round_up(max(model.halo), max(model.stride))
    configs = [(int(t), int(b)) for t in args.tiles.split(",") for b in args.batches.split(",")]
    best = {c: float("inf") for c in configs}
    for i in range(args.repeats):
        for config in configs if i % 2 == 0 else configs[::-1]:
            best[config] = min(best[config], seconds_per_mpx(model, *config, halo))
    print(f"demo U-Net, {args.threads} torch thread(s), halo {halo}, best of {args.repeats}")
    for (tile, batch), seconds in sorted(best.items()):
        print(f"  tile {tile:5d} + 2 x {halo}, batch {batch}: {seconds:6.2f} s per output Mpx")


if __name__ == "__main__":
    main()
