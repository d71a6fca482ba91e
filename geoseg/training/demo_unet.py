"""The demo U-Net on synthetic scenes (CPU-friendly, seeded): ``builtin:demo-unet``.

``geoseg train --out FILE`` reproduces the bundled model. Chips with random flips
and quarter turns are fitted by the shared loop (:mod:`geoseg.training.loop`)
under a one-cycle schedule; :mod:`geoseg.training.demo_instances` fits the same
way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geoseg.core.classes import ClassInfo
from geoseg.errors import OutputExistsError
from geoseg.io.files import check_creatable
from geoseg.metrics import confusion_matrix, iou_per_class, mean_iou
from geoseg.models.header import ModelInfo
from geoseg.models.model import SegmentationModel
from geoseg.models.modelfile import save_model
from geoseg.models.unet import UNet2D
from geoseg.training.loop import Loop, adamw, seed_torch

__all__ = ["ChipRecipe", "TrainConfig", "fit_chips", "train_demo_model"]


@dataclass(frozen=True)
class ChipRecipe:
    """How chips are drawn and fitted: the first fields of both demo configs, in their order."""

    steps: int = 1500
    seed: int = 0
    chip: int = 128
    batch: int = 8
    lr: float = 3e-3
    weight_decay: float = 1e-4


@dataclass(frozen=True)
class TrainConfig(ChipRecipe):
    """Hyperparameters of the demo model; defaults reproduce the bundled file."""

    scenes: int = 4
    scene_size: int = 1024
    val_size: int = 768
    depth: int = 3
    width: int = 16
    threads: int = 0  # torch threads; 0 keeps torch's default


def train_demo_model(cfg: TrainConfig, out: str | Path, *, overwrite: bool = False,
                     log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Train on synthetic scenes, validate on an unseen one, save to ``out``; returns metrics."""
    from geoseg.synth import SCENE_CLASSES, make_scene

    check_out(out, overwrite)
    seed_torch(cfg.seed, cfg.threads)
    scenes = [make_scene(cfg.scene_size, cfg.scene_size, seed=cfg.seed * 1000 + i) for i in range(cfg.scenes)]
    val = make_scene(cfg.val_size, cfg.val_size, seed=cfg.seed * 1000 + 999)
    images = np.stack([s.image for s in scenes]).astype(np.float32)
    labels = np.stack([s.labels for s in scenes]).astype(np.int64)
    mean, std = images.mean(axis=(0, 2, 3)), images.std(axis=(0, 2, 3))
    classes = tuple(ClassInfo(c.name, tuple(c.color)) for c in SCENE_CLASSES)
    net = UNet2D(3, len(classes), depth=cfg.depth, width=cfg.width)
    fit_chips(net, (images - mean[:, None, None]) / std[:, None, None], labels, cfg, log)
    info = ModelInfo("demo-unet", "unet", {"in_channels": 3, "num_classes": len(classes), "depth": cfg.depth,
                                           "width": cfg.width},
                     classes, ("red", "green", "blue"), tuple(map(float, mean)), tuple(map(float, std)),
                     extra={"training": {**asdict(cfg), "command": "geoseg train"}})
    model = SegmentationModel(net, info, device="cpu")
    confusion = confusion_matrix(val.labels, model.predict_image(val.image).argmax(0), len(classes))
    metrics = {"val_miou": mean_iou(confusion),
               "val_iou": dict(zip([c.name for c in classes], iou_per_class(confusion).round(4).tolist()))}
    log(f"validation mIoU {metrics['val_miou']:.4f}: {metrics['val_iou']}")
    model.info.extra["training"]["validation"] = metrics
    save_model(model, str(out), overwrite=overwrite)
    return metrics


def check_out(out: str | Path, overwrite: bool) -> None:
    """Refuse, before any training, an ``out`` that cannot take the model file: a folder, a path
    under a file, or an existing file without ``overwrite``."""
    check_creatable(str(out), "--out")
    if Path(out).exists() and not overwrite:
        raise OutputExistsError(f"{out} already exists; pass --overwrite to replace it.")


def fit_chips(net: nn.Module, images: np.ndarray, labels: np.ndarray, cfg: ChipRecipe,
              log: Callable[[str], Any]) -> None:
    """Fit ``net`` on random chips of normalized ``images`` under a one-cycle schedule."""
    weights = _class_weights(labels, net.head.out_channels)
    opt = adamw(net, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    loop = Loop(net, opt, sched, nn.CrossEntropyLoss(weight=torch.from_numpy(weights)))
    start = time.perf_counter()

    def report(step: int, loss: float) -> None:
        if step % 100 == 0 or step == cfg.steps - 1:
            log(f"step {step:5d}/{cfg.steps} loss {loss:.4f} ({time.perf_counter() - start:.0f} s)")

    loop.run(_chips(np.random.default_rng(cfg.seed), images, labels, cfg), on_step=report)
    net.eval()


def _chips(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray,
           cfg: ChipRecipe) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for _ in range(cfg.steps):
        yield _sample_batch(rng, images, labels, cfg.chip, cfg.batch)


def _class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse square-root frequency, normalized to mean 1: rare thin roads still count."""
    freq = np.bincount(labels.ravel(), minlength=n_classes).astype(np.float64) / labels.size
    weights = 1.0 / np.sqrt(np.maximum(freq, 1e-4))
    return (weights / weights.mean()).astype(np.float32)


def _sample_batch(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, chip: int,
                  batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Random chips with random flips and quarter turns."""
    xs, ys = [], []
    n, _, height, width = images.shape
    for _ in range(batch):
        i, r, c = rng.integers(n), rng.integers(height - chip + 1), rng.integers(width - chip + 1)
        x, y = images[i, :, r:r + chip, c:c + chip], labels[i, r:r + chip, c:c + chip]
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k, axes=(0, 1))
        if flip:
            x, y = x[:, :, ::-1], y[:, ::-1]
        xs.append(x)
        ys.append(y)
    return np.ascontiguousarray(np.stack(xs)), np.ascontiguousarray(np.stack(ys))
