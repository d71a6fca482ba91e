"""The shared fitting loop: 2D and 3D networks, skipped and diverged steps, schedule, autocast."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from geoseg.errors import TrainingDivergedError
from geoseg.training.loop import (
    Loop,
    WarmupCosine,
    adamw,
    autocast_dtype,
    finite_mean,
    warmup_cosine,
)


def _loop(net: nn.Module, steps: int = 20, lr: float = 0.05, **kw) -> Loop:
    opt = adamw(net, lr=lr, weight_decay=0.0)
    return Loop(net, opt, warmup_cosine(opt, warmup=2, total=steps), nn.CrossEntropyLoss(ignore_index=255),
                ignore_index=255, **kw)


def _batches(shape: tuple[int, ...], steps: int, seed: int = 0):
    """Inputs whose one channel says the class (0 below zero, 1 above): learnable by a 1x1 conv."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = rng.normal(size=(4, 1, *shape)).astype(np.float32)
        yield x, (x[:, 0] > 0).astype(np.int64)


@pytest.mark.parametrize("conv, shape", [(nn.Conv2d, (8, 8)), (nn.Conv3d, (4, 8, 8))])
def test_fits_2d_and_3d_networks_and_counts_steps(conv, shape):
    torch.manual_seed(0)
    loop = _loop(conv(1, 2, 1), steps=30, lr=0.3)
    seen: list[tuple[int, float]] = []
    losses = loop.run(_batches(shape, 30), on_step=lambda step, loss: seen.append((step, loss)))
    assert loop.step == 30 and [s for s, _ in seen] == list(range(30))
    assert [v for _, v in seen] == losses
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert loop.scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)  # cosine ran to its end


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_a_batch_of_ignored_targets_skips_its_step():
    torch.manual_seed(0)
    net = nn.Conv2d(1, 2, 1)
    loop = _loop(net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = np.ones((2, 1, 4, 4), np.float32)
    losses = loop.run([(x, np.full((2, 4, 4), 255))])
    assert np.isnan(losses[0]) and loop.step == 1 and np.isnan(finite_mean(losses))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not loop.optimizer.state  # no Adam moments: the optimiser never stepped
    assert loop.scheduler.last_epoch == 1  # the schedule still moves on


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_a_batch_of_only_classes_weighted_zero_skips_its_step_and_others_train():
    """torch's weighted cross-entropy over targets all weighted 0 is 0 / 0: no loss, not a
    divergence that a lower learning rate would cure."""
    torch.manual_seed(0)
    net = nn.Conv2d(1, 3, 1)
    opt = adamw(net, lr=0.05, weight_decay=0.0)
    loss = nn.CrossEntropyLoss(weight=torch.tensor([0.0, 1.0, 1.0]), ignore_index=255)
    loop = Loop(net, opt, warmup_cosine(opt, warmup=2, total=4), loss, ignore_index=255)
    x = np.ones((2, 1, 4, 4), np.float32)
    zeros_and_ignored = np.zeros((2, 4, 4), np.int64)
    zeros_and_ignored[0] = 255
    assert torch.isnan(loss(net(torch.from_numpy(x)), torch.from_numpy(zeros_and_ignored)))
    mixed = zeros_and_ignored.copy()
    mixed[1, 0, 0] = 2
    losses = loop.run([(x, zeros_and_ignored), (x, mixed)])
    assert np.isnan(losses[0]) and np.isfinite(losses[1]) and loop.step == 2


def test_a_non_finite_loss_on_labelled_targets_says_how_to_fix_it():
    loop = _loop(nn.Conv2d(1, 2, 1), diverged_hint="lower training.lr.")
    x = np.full((2, 1, 4, 4), np.inf, np.float32)
    with pytest.raises(TrainingDivergedError, match=r"the loss became nan at step 1; lower training\.lr\."):
        loop.run([(x, np.zeros((2, 4, 4), np.int64))])


def test_bf16_autocast_runs_and_the_loss_is_float32():
    torch.manual_seed(0)
    loop = _loop(nn.Conv2d(1, 2, 1), amp=torch.bfloat16)
    losses = loop.run(_batches((8, 8), 3))
    assert all(np.isfinite(losses)) and next(loop.net.parameters()).dtype == torch.float32


def test_warmup_then_cosine_to_the_floor():
    schedule = WarmupCosine(warmup=4, total=12, floor=0.1)
    assert [schedule(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert schedule(8) == pytest.approx(0.55)  # half way down
    assert schedule(12) == pytest.approx(0.1) and schedule(40) == pytest.approx(0.1)


def test_autocast_is_bf16_on_cuda_from_ampere_on_or_when_asked():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("auto", cuda, (8, 0)) == torch.bfloat16
    assert autocast_dtype("auto", cuda, (9, 0)) == torch.bfloat16
    assert autocast_dtype("auto", cuda, (7, 5)) is None  # T4: no bf16 convolutions in cuDNN
    assert autocast_dtype("auto", cpu) is None
    assert autocast_dtype("bf16", cpu) == torch.bfloat16 and autocast_dtype("off", cuda) is None


def test_finite_mean_skips_skipped_steps():
    assert finite_mean([1.0, float("nan"), 3.0]) == 2.0 and np.isnan(finite_mean([]))
