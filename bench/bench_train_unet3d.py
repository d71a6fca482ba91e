"""Train a small 3D U-Net on synthetic volumes; report Dice on a fresh volume, segmented tiled.

    python bench/bench_train_unet3d.py [--steps 600] [--threads 2]

Not a test: it takes minutes on 2 CPU cores. The fresh volume is segmented through
geoseg.segment (chunked, halo = the receptive field), so the figure covers the executor too.
"""

from __future__ import annotations

import argparse
import time

import dask
import numpy as np
import torch
import xarray as xr
from torch import nn

import geoseg
from geoseg.metrics import confusion_matrix, dice_per_class
from geoseg.models import ModelInfo, SegmentationModel, build_network
from geoseg.synth.volumes import make_volume

PATCH = (24, 64, 64)


def sample(rng, images, labels, batch):
    xs, ys = [], []
    for _ in range(batch):
        i = rng.integers(len(images))
        _, z, y, x = images[i].shape
        o = [rng.integers(n - p + 1) for n, p in zip((z, y, x), PATCH)]
        window = tuple(slice(a, a + p) for a, p in zip(o, PATCH))
        xi, yi = images[i][(slice(None),) + window], labels[i][window]
        if rng.integers(2):
            xi, yi = xi[..., ::-1], yi[..., ::-1]
        xs.append(xi)
        ys.append(yi)
    return torch.from_numpy(np.ascontiguousarray(np.stack(xs))), torch.from_numpy(
        np.ascontiguousarray(np.stack(ys)).astype(np.int64))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    train = [make_volume(48, 128, 128, seed=s) for s in range(3)]
    fresh = make_volume(40, 112, 120, seed=123)
    mean = float(np.mean([v.image.mean() for v in train]))
    std = float(np.mean([v.image.std() for v in train]))
    images = [(v.image - mean) / std for v in train]
    labels = [v.labels for v in train]
    classes = train[0].classes
    config = {"in_channels": 1, "num_classes": len(classes), "depth": 2, "width": 8, "pool_z": 1}
    net = build_network("unet3d", config)
    freq = np.bincount(np.concatenate([lab.ravel() for lab in labels]), minlength=len(classes)) + 1
    weights = torch.tensor((1 / np.sqrt(freq / freq.sum())), dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weights / weights.mean())
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=args.steps, pct_start=0.1)
    start = time.perf_counter()
    net.train()
    for step in range(args.steps):
        x, y = sample(rng, images, labels, 4)
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    info = ModelInfo("bench-unet3d", "unet3d", config, classes, ("intensity",), (mean,), (std,))
    model = SegmentationModel(net.eval(), info, device="cpu")
    volume = xr.DataArray(fresh.image, dims=("band", "z", "y", "x"))
    with dask.config.set(scheduler="sync"):
        pred = geoseg.segment(volume, model, chunks=(20, 56, 60), tile=(16, 48, 48)).values
    dice = dice_per_class(confusion_matrix(fresh.labels, pred, len(classes)))
    names = [c.name for c in classes]
    print("Dice per class on a fresh volume (40x112x120, seed 123): "
          + ", ".join(f"{n} {d:.3f}" for n, d in zip(names, dice)))
    print(f"mean Dice over foreground classes: {np.nanmean(dice[1:]):.3f} "
          f"(training {time.perf_counter() - start:.0f} s, {args.steps} steps)")


if __name__ == "__main__":
    main()
