"""Slow: the 3D U-Net reaches mean Dice >= 0.75 on an unseen synthetic volume (run with -m slow).

The benchmark's default configuration (``python bench/bench_train_unet3d.py``), scored the
same way: its training took 945 s of CPU on one thread there.
"""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.training.unet3d import Volume3DConfig, evaluate_volume, train_unet3d


@pytest.mark.slow
@pytest.mark.timeout(3600)  # about 16 CPU minutes; more wall time on a busy machine
def test_unet3d_reaches_075_mean_dice_on_a_fresh_volume():
    model = train_unet3d(Volume3DConfig(threads=1), log=lambda _: None)
    first, last = model.info.extra["training"]["seeds"]
    assert not first <= 123 <= last
    dice = evaluate_volume(model, seed=123)  # 40 x 112 x 120, segmented tiled by geoseg.segment
    assert np.nanmean(dice[1:]) >= 0.75, f"Dice per class (background first): {dice.round(3)}"
