"""The 3D trainer's pieces: Dice loss, patch sampling, config checks, seed bookkeeping (fast)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from geoseg.errors import TrainingDataError, TrainSpecError
from geoseg.metrics import confusion_matrix, dice_per_class
from geoseg.training.unet3d import (
    Volume3DConfig,
    _sample,
    _VolumePool,
    evaluate_volume,
    soft_dice_loss,
    train_unet3d,
)

TINY = {"patch": (8, 16, 16), "z_range": (8, 10), "yx_range": (24, 32), "depth": 1, "width": 2,
        "pool_z": 0, "batch": 2, "pool": 2, "refresh": 2, "threads": 1, "log_every": 1}


def test_soft_dice_of_hard_predictions_equals_the_metric():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, (2, 6, 7, 8))
    pred = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 4, target.shape))
    logits = 50.0 * torch.nn.functional.one_hot(torch.from_numpy(pred), 4).movedim(-1, 1).double()
    loss = soft_dice_loss(logits, torch.from_numpy(target), smooth=0.0)
    reference = dice_per_class(confusion_matrix(target.ravel(), pred.ravel(), 4))[1:].mean()
    assert loss.item() == pytest.approx(1.0 - reference, abs=1e-6)


def test_soft_dice_is_zero_for_a_perfect_prediction_and_has_gradients():
    target = torch.randint(0, 3, (1, 4, 5, 6))
    logits = (30.0 * torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float()).requires_grad_()
    loss = soft_dice_loss(logits, target)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and logits.grad is not None


def test_image_and_labels_are_cut_and_flipped_together():
    cfg = Volume3DConfig(**{**TINY, "flips": (0, 1, 2), "gain": 0.0, "foreground": 0.5})
    rng = np.random.default_rng(1)
    pool = _VolumePool(cfg, rng)
    for item in pool.items:  # an image that is its labels shows any mismatch
        item.image = item.labels[None].astype(np.float32)
    for _ in range(20):
        x, y = _sample(rng, pool, cfg, 0.0, 1.0)
        assert x.shape == (2, 1, 8, 16, 16) and y.shape == (2, 8, 16, 16)
        np.testing.assert_array_equal(x[:, 0].numpy(), y.numpy())


def test_foreground_patches_contain_foreground():
    cfg = Volume3DConfig(**{**TINY, "foreground": 1.0, "patch": (8, 8, 8), "yx_range": (48, 48),
                            "z_range": (16, 16)})
    rng = np.random.default_rng(2)
    pool = _VolumePool(cfg, rng)
    assert all(any(idx.size for idx in item.foreground) for item in pool.items)
    for _ in range(20):
        labels = _sample(rng, pool, cfg, 0.0, 1.0)[1]
        assert bool((labels.flatten(1) > 0).any(dim=1).all())


def test_class_weights_choose_the_centre_class():
    cfg = Volume3DConfig(**{**TINY, "foreground": 1.0, "patch": (8, 8, 8), "yx_range": (48, 48),
                            "z_range": (16, 16), "class_weights": (1e-9, 1e-9, 1.0), "pool": 4})
    rng = np.random.default_rng(3)
    pool = _VolumePool(cfg, rng)
    assert all(item.foreground[2].size for item in pool.items)  # every volume has a lesion
    for _ in range(10):
        labels = _sample(rng, pool, cfg, 0.0, 1.0)[1]
        assert bool((labels.flatten(1) == 3).any(dim=1).all())


def test_pool_refresh_generates_new_seeds():
    cfg = Volume3DConfig(**TINY)
    pool = _VolumePool(cfg, np.random.default_rng(0))
    first = [item.labels for item in pool.items]
    pool.refresh()
    assert pool.seeds() == (1000, 1002)
    assert pool.items[0].labels is first[1] and pool.items[1].labels is not first[0]


@pytest.mark.parametrize("change, field", [
    ({"patch": (8, 15, 16)}, "patch[1] = 15"),
    ({"patch": (12, 16, 16)}, "patch[0] = 12"),
    ({"foreground": 1.5}, "foreground"),
    ({"flips": (3,)}, "flips"),
    ({"class_weights": (1.0, 0.0, 1.0)}, "class_weights"),
])
def test_bad_config_is_refused_with_the_field(change, field):
    with pytest.raises(TrainSpecError, match="invalid 3D training config: .*" + re.escape(field)):
        train_unet3d(Volume3DConfig(**{**TINY, **change}), log=lambda _: None)


def test_training_records_its_seeds_and_refuses_them_for_evaluation():
    lines: list[str] = []
    cfg = Volume3DConfig(**{**TINY, "steps": 5})
    model = train_unet3d(cfg, log=lines.append)
    assert len(lines) == 5 and all(np.isfinite(float(s.split()[3])) for s in lines)
    first, last = model.info.extra["training"]["seeds"]
    assert (first, last) == (1000, 1000 + cfg.volumes_used() - 1)
    assert not model.net.training and model.info.architecture == "unet3d"
    with pytest.raises(TrainingDataError, match="evaluation seed 1001 is one of the training"):
        evaluate_volume(model, seed=1001, shape=(8, 24, 24), chunks=(8, 12, 12), tile=(8, 8, 8))
    dice = evaluate_volume(model, seed=5, shape=(8, 24, 24), chunks=(8, 12, 12), tile=(8, 8, 8))
    assert dice.shape == (4,) and np.all((dice[~np.isnan(dice)] >= 0) & (dice[~np.isnan(dice)] <= 1))
