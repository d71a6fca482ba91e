"""Ensembles and TTA on synthetic scenes: per-member, ensemble (mean, vote) and TTA mIoU.

Trains three small U-Nets (different seeds and widths) for a few steps with the
demo trainer, then scores them on a fresh scene none of them saw::

    .venv/bin/python bench/bench_ensemble.py --steps 300 --out /tmp/bench-ensemble
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geoseg.ensembles import TTA, Ensemble
from geoseg.metrics import confusion_matrix, mean_iou
from geoseg.models import Segmenter, load_model
from geoseg.synth import make_scene
from geoseg.training.demo_unet import TrainConfig, train_demo_model

MEMBERS = ((0, 8), (1, 8), (2, 12))  # (seed, width)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per member")
    parser.add_argument("--scene-size", type=int, default=256, help="training scene side, pixels")
    parser.add_argument("--test-size", type=int, default=384, help="test scene side, pixels")
    parser.add_argument("--test-seed", type=int, default=424242, help="seed of the unseen test scene")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", type=Path, default=Path("bench-ensemble"), help="folder for model files")
    return parser.parse_args()


def train_members(args: argparse.Namespace) -> list[Segmenter]:
    """Train (or reuse) the member models; returns them loaded."""
    args.out.mkdir(parents=True, exist_ok=True)
    models = []
    for seed, width in MEMBERS:
        path = args.out / f"unet-s{seed}-w{width}-{args.steps}.safetensors"
        if not path.exists():
            cfg = TrainConfig(steps=args.steps, seed=seed, width=width, depth=3, chip=64, batch=8,
                              scenes=2, scene_size=args.scene_size, val_size=args.scene_size,
                              threads=args.threads)
            t0 = time.perf_counter()
            train_demo_model(cfg, path, log=lambda _: None)
            print(f"trained seed={seed} width={width} in {time.perf_counter() - t0:.1f} s", flush=True)
        models.append(load_model(str(path)))
    return models


def miou(segmenter: Segmenter, image: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean IoU of ``segmenter`` on one scene, and the seconds inference took."""
    t0 = time.perf_counter()
    pred = segmenter.predict_image(image).argmax(0)
    seconds = time.perf_counter() - t0
    return mean_iou(confusion_matrix(labels, pred, segmenter.n_classes)), seconds


def main() -> dict[str, Any]:
    args = parse_args()
    torch.set_num_threads(args.threads)
    members = train_members(args)
    scene = make_scene(args.test_size, args.test_size, seed=args.test_seed)
    candidates: dict[str, Segmenter] = {f"member s{s} w{w}": m for (s, w), m in zip(MEMBERS, members)}
    candidates["ensemble mean"] = Ensemble(members, combine="mean")
    candidates["ensemble vote"] = Ensemble(members, combine="vote")
    candidates["ensemble max"] = Ensemble(members, combine="max")
    candidates[f"TTA d4 of member s{MEMBERS[0][0]}"] = TTA(members[0])
    results = {}
    for name, segmenter in candidates.items():
        score, seconds = miou(segmenter, scene.image, scene.labels)
        results[name] = {"miou": round(score, 4), "seconds": round(seconds, 2)}
        print(f"{name:28s} mIoU {score:.4f}  ({seconds:.2f} s)", flush=True)
    print(json.dumps({"steps": args.steps, "test_size": args.test_size, "results": results}))
    return results


if __name__ == "__main__":
    main()
