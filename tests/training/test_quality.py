"""Slow: the trainer reaches the quality target on synthetic scenes (run with -m slow)."""

from __future__ import annotations

import pytest
import torch

import geoseg
from geoseg.demo import write_scene
from geoseg.metrics import confusion_matrix, mean_iou
from geoseg.synth import SCENE_CLASSES, make_scene
from geoseg.training import train


@pytest.mark.slow
def test_unet_reaches_075_miou_on_a_fresh_scene(tmp_path):
    torch.set_num_threads(2)
    urls = [write_scene(make_scene(512, 512, seed=200 + i), str(tmp_path / f"s{i}.zarr"), chunks=256)
            for i in range(3)]

    def pair(url: str) -> dict:
        return {"image": {"url": url, "variable": "image"}, "labels": {"url": url, "variable": "labels"}}

    result = train({
        "name": "quality", "data": {"train": [pair(u) for u in urls[:2]], "validation": [pair(urls[2])],
                                    "classes": [c.name for c in SCENE_CLASSES]},
        "model": {"architecture": "unet", "config": {"depth": 3, "width": 8}},
        "training": {"epochs": 6, "steps_per_epoch": 50, "batch_size": 8, "chip": 128, "lr": 3e-3},
        "validation": {"tile": 256, "max_windows": 4},
        "output": {"model": str(tmp_path / "unet.safetensors")},
    }, log=lambda _: None)
    test = make_scene(512, 512, seed=299)
    pred = geoseg.load_model(result.model_url, device="cpu").predict_image(test.image).argmax(0)
    assert mean_iou(confusion_matrix(test.labels, pred, len(SCENE_CLASSES))) >= 0.75
