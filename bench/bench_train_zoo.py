"""Quality per architecture: train each on synthetic scenes, score mIoU on a fresh one.

    python bench/bench_train_zoo.py [--archs unet segnet fcn deeplabv3plus] [--steps 480]
                                    [--chip 128] [--batch 8] [--scene-size 768] [--scenes 3]
                                    [--set segnet.width=16 ...]

Writes ``--scenes`` training scenes and one validation scene to Zarr
(:func:`geoseg.demo.write_scene`), trains every architecture with
:func:`geoseg.training.train` (small CPU-friendly configs, below), reloads the
saved model file with :func:`geoseg.load_model` and scores it on a *fresh*
scene (another seed, never seen in training or validation). Prints one line per
architecture and a summary table; the target is mIoU >= 0.75 each.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

import geoseg
from geoseg.demo import write_scene
from geoseg.metrics import confusion_matrix, iou_per_class, mean_iou
from geoseg.synth import SCENE_CLASSES, make_scene
from geoseg.training import train

TARGET = 0.75
STEPS_PER_EPOCH = 60
CONFIGS: dict[str, dict[str, Any]] = {
    "unet": {"depth": 3, "width": 8},
    "segnet": {"depth": 3, "width": 8},
    "fcn": {"depth": 3, "width": 8},
    "deeplabv3plus": {"backbone": "resnet18", "width": 16, "output_stride": 8},
}


def main() -> None:
    args = _parse()
    for item in args.set:
        _override(item)
    torch.set_num_threads(args.threads)
    folder = Path(args.out or tempfile.mkdtemp(prefix="geoseg-train-zoo-"))
    train_urls, val_url = _write_scenes(folder, args)
    test = make_scene(args.scene_size, args.scene_size, seed=args.test_seed)
    print(f"data in {folder}: {args.scenes} training scene(s) + 1 validation scene of "
          f"{args.scene_size}^2 px; test scene seed {args.test_seed}; {args.steps} steps of "
          f"{args.batch} x {args.chip}^2 chips; {args.threads} torch thread(s)")
    rows = []
    for arch in args.archs:
        rows.append(_bench(arch, folder, train_urls, val_url, test, args))
        _print_row(rows[-1])
    _print_summary(rows)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=480, help="optimizer steps per architecture")
    parser.add_argument("--chip", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--scene-size", type=int, default=768)
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument("--test-seed", type=int, default=2027)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="folder for scenes and models (default: a temp folder)")
    parser.add_argument("--set", action="append", default=[], metavar="ARCH.KEY=VALUE",
                        help="override an architecture's config entry, e.g. segnet.width=16 (repeatable)")
    return parser.parse_args()


def _override(item: str) -> None:
    """Apply ``ARCH.KEY=VALUE`` (VALUE read as YAML) to :data:`CONFIGS`."""
    target, _, value = item.partition("=")
    arch, _, key = target.partition(".")
    if arch not in CONFIGS or not key or not value:
        raise SystemExit(f"--set {item!r}: expected ARCH.KEY=VALUE with ARCH one of {', '.join(CONFIGS)}")
    CONFIGS[arch][key] = yaml.safe_load(value)


def _write_scenes(folder: Path, args: argparse.Namespace) -> tuple[list[str], str]:
    urls = []
    for i in range(args.scenes + 1):
        url = str(folder / f"scene-{i}.zarr")
        if not Path(url).exists():
            write_scene(make_scene(args.scene_size, args.scene_size, seed=100 + i), url, chunks=256)
        urls.append(url)
    return urls[:-1], urls[-1]


def _spec(arch: str, folder: Path, train_urls: list[str], val_url: str,
          args: argparse.Namespace) -> dict[str, Any]:
    per_epoch = min(STEPS_PER_EPOCH, args.steps)

    def pair(url: str) -> dict[str, Any]:
        return {"image": {"url": url, "variable": "image"}, "labels": {"url": url, "variable": "labels"}}

    return {
        "name": f"zoo-{arch}", "seed": 0,
        "data": {"train": [pair(u) for u in train_urls], "validation": [pair(val_url)],
                 "classes": [{"name": c.name, "color": list(c.color)} for c in SCENE_CLASSES],
                 "normalization": {"samples": 64}},
        "model": {"architecture": arch, "config": CONFIGS[arch]},
        "training": {"epochs": max(1, args.steps // per_epoch), "steps_per_epoch": per_epoch,
                     "batch_size": args.batch, "chip": args.chip, "lr": args.lr, "warmup": 0.05,
                     "keep": "best"},
        "validation": {"tile": 256, "max_windows": 9},
        "output": {"model": str(folder / f"{arch}.safetensors"), "overwrite": True},
    }


def _bench(arch: str, folder: Path, train_urls: list[str], val_url: str, test: Any,
           args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    spec = _spec(arch, folder, train_urls, val_url, args)
    result = train(spec, log=lambda line: print("   ", line, flush=True))
    seconds = time.perf_counter() - start
    model = geoseg.load_model(result.model_url, device="cpu")
    pred = model.predict_image(test.image).argmax(0)
    confusion = confusion_matrix(test.labels, pred, len(SCENE_CLASSES))
    params = sum(p.numel() for p in model.net.parameters())
    return {"arch": arch, "config": CONFIGS[arch], "params": params, "seconds": seconds,
            "steps": result.history[-1]["step"] if result.history else 0, "val_miou": result.best_val_miou,
            "best_epoch": result.best_epoch, "test_miou": mean_iou(confusion),
            "test_iou": dict(zip([c.name for c in SCENE_CLASSES],
                                 np.round(iou_per_class(confusion), 3).tolist()))}


def _print_row(row: dict[str, Any]) -> None:
    verdict = "ok" if row["test_miou"] >= TARGET else f"MISSES target by {TARGET - row['test_miou']:.3f}"
    print(f"{row['arch']:>14}: fresh-scene mIoU {row['test_miou']:.3f} ({verdict}); validation mIoU "
          f"{row['val_miou']:.3f} @ epoch {row['best_epoch']}; per class {row['test_iou']}; "
          f"{row['params'] / 1e3:.0f}k params, {row['steps']} steps in {row['seconds'] / 60:.1f} min",
          flush=True)


def _print_summary(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'architecture':>14}  {'config':<52} {'val mIoU':>8} {'test mIoU':>9}  target {TARGET}")
    for row in rows:
        config = ", ".join(f"{k}={v}" for k, v in row["config"].items())
        print(f"{row['arch']:>14}  {config:<52} {row['val_miou']:8.3f} {row['test_miou']:9.3f}  "
              f"{'ok' if row['test_miou'] >= TARGET else 'miss'}")


if __name__ == "__main__":
    main()
