"""One fitting loop for 2D and 3D networks, shared by every trainer in geoseg.

A :class:`Loop` holds a network and what fits it: the optimiser (AdamW from
:func:`adamw`), the learning-rate schedule (warm-up then cosine from
:func:`warmup_cosine`, or any other scheduler), the loss, the device and the
autocast dtype (bf16 on CUDA from Ampere on, by :func:`autocast_dtype`). :meth:`Loop.run` takes
optimiser steps over any iterable of ``(inputs, targets)`` batches, numpy arrays
or tensors of any number of spatial axes, and calls ``on_step`` after each, which
is where a trainer logs; scoring and checkpoints happen between runs.

    loop = Loop(net, opt := adamw(net, lr=3e-3, weight_decay=1e-4),
                warmup_cosine(opt, warmup=50, total=1000), nn.CrossEntropyLoss())
    losses = loop.run(batches, on_step=lambda step, loss: print(step, loss))

The trainers differ only in their data and their records: the demo U-Net
(:mod:`geoseg.training.demo_unet`), the instance model
(:mod:`geoseg.training.demo_instances`), the 3D U-Net on synthetic volumes
(:mod:`geoseg.training.unet3d`) and ``geoseg train TRAIN.yaml``
(:mod:`geoseg.training.trainer`).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from geoseg.errors import TrainingDivergedError

__all__ = [
    "Loop",
    "LossSum",
    "WarmupCosine",
    "adamw",
    "autocast",
    "autocast_dtype",
    "finite_mean",
    "seed_torch",
    "warmup_cosine",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, float], Any]
Batch = tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]
CPU = torch.device("cpu")
_SCHEDULE_FIRST = r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`"


def seed_torch(seed: int, threads: int = 0) -> None:
    """Seed torch's generator (initial weights); set its threads unless ``threads`` is 0."""
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)


def adamw(net: nn.Module, *, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """The optimiser of every trainer."""
    return torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)


class WarmupCosine:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay to ``floor``.

    A plain object with int/float attributes, so the scheduler's state is JSON.
    """

    def __init__(self, warmup: int, total: int, floor: float):
        self.warmup, self.total, self.floor = warmup, total, floor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        t = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + float(np.cos(np.pi * t)))


def warmup_cosine(optimizer: torch.optim.Optimizer, *, warmup: int, total: int,
                  floor: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule: ``warmup`` steps up to the optimiser's lr, then a cosine down to ``floor`` x lr."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup, total, floor))


def autocast_dtype(mode: str, device: torch.device,
                   capability: tuple[int, int] | None = None) -> torch.dtype | None:
    """bf16 when ``mode`` is ``"bf16"``, or ``"auto"`` on a CUDA device of compute
    ``capability`` (the device's own when not given) from Ampere (8.0) on; otherwise none
    (full precision). Before Ampere cuDNN has no bf16 convolutions, and torch's own kernels
    are many times slower than float32's; float16 would need loss scaling."""
    if mode == "bf16":
        return torch.bfloat16
    if mode != "auto" or device.type != "cuda":
        return None
    capability = capability or torch.cuda.get_device_capability(device)
    return torch.bfloat16 if tuple(capability) >= (8, 0) else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """Autocast to ``dtype`` on ``device``; nothing when ``dtype`` is ``None``."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@dataclass
class LossSum:
    """Sum and count of the finite losses of some steps (a skipped step's NaN is left out)."""

    total: float = 0.0
    count: int = 0

    def add(self, loss: float) -> None:
        if math.isfinite(loss):
            self.total, self.count = self.total + loss, self.count + 1

    @property
    def mean(self) -> float:
        """Their mean; NaN when there is none."""
        return self.total / self.count if self.count else float("nan")


@dataclass
class Loop:
    """A network and what fits it; ``step`` counts the optimiser steps taken (skipped ones too).

    ``ignore_index`` is the target value that is never trained on: a batch holding
    only that value, or only classes the loss weighs 0, has no loss, and its step is
    skipped. Any other non-finite loss raises :class:`TrainingDivergedError` ending
    with ``diverged_hint``.
    """

    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: LossFn
    device: torch.device = CPU
    amp: torch.dtype | None = None
    ignore_index: int = -100
    diverged_hint: str = "lower the learning rate or lengthen the warm-up."
    step: int = 0

    def run(self, batches: Iterable[Batch], *, on_step: StepCallback | None = None) -> list[float]:
        """One optimiser step per batch; the losses (NaN for a skipped step), in network train mode."""
        return list(self._steps(batches, on_step))

    def mean_loss(self, batches: Iterable[Batch], *, on_step: StepCallback | None = None,
                  sums: LossSum | None = None) -> float:
        """As :meth:`run`, but returns :func:`finite_mean` of the losses without keeping them:
        memory does not grow with the number of batches. The losses are added to ``sums`` (a
        fresh :class:`LossSum` by default; pass one to go on from earlier steps), each before
        ``on_step`` is called with it."""
        sums = LossSum() if sums is None else sums
        for loss in self._steps(batches, None):
            sums.add(loss)
            if on_step is not None:
                on_step(self.step - 1, loss)
        return sums.mean

    def _steps(self, batches: Iterable[Batch], on_step: StepCallback | None) -> Iterator[float]:
        """Each batch's loss after its step. A batch is let go of before the next is asked for,
        so that a loader reading ahead (:class:`~geoseg.training.data.ChipLoader`) can count on
        holding it no longer."""
        self.net.train()
        for x, y in batches:
            loss = self.train_step(x, y)
            del x, y
            if on_step is not None:
                on_step(self.step - 1, loss)
            yield loss

    def train_step(self, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
        """One optimiser step (and one schedule step) on a batch; returns its loss."""
        x, y = self._tensor(x), self._tensor(y)
        with autocast(self.device, self.amp):
            logits = self.net(x)
        loss = self.loss_fn(logits.float(), y)
        value = float("nan")
        if torch.isfinite(loss):
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            value = loss.item()
        elif self._counted(y):
            raise TrainingDivergedError(f"the loss became {loss.item()} at step {self.step + 1}; "
                                        f"{self.diverged_hint}")
        self._schedule(stepped=math.isfinite(value))
        self.step += 1
        return value

    def _schedule(self, *, stepped: bool) -> None:
        """One schedule step, also after a skipped optimiser step, so that the schedule follows
        ``step``; torch's warning that it then came before any optimiser step is not shown
        (whoever runs the loop decides what steps without a loss mean)."""
        with warnings.catch_warnings():
            if not stepped:
                warnings.filterwarnings("ignore", _SCHEDULE_FIRST, UserWarning)
            self.scheduler.step()

    def _counted(self, y: torch.Tensor) -> bool:
        """Whether some target of ``y`` counts in the loss: neither ``ignore_index`` nor a class
        the loss weighs 0 (a weighted cross-entropy over none of those is 0 / 0)."""
        counted = y != self.ignore_index
        weight = getattr(self.loss_fn, "weight", None)  # nn.CrossEntropyLoss's class weights
        if weight is not None:
            counted &= weight.to(y.device)[torch.where(counted, y, 0)] > 0
        return bool(counted.any())

    def _tensor(self, a: np.ndarray | torch.Tensor) -> torch.Tensor:
        return (a if isinstance(a, torch.Tensor) else torch.from_numpy(a)).to(self.device)


def finite_mean(losses: list[float]) -> float:
    """Mean of the finite losses of a run; NaN when there is none."""
    finite = [v for v in losses if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")
