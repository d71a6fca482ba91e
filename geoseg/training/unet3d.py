"""Train the 3D U-Net on synthetic volumes (CPU-friendly, seeded), and score it on a fresh one.

The training data never runs out: patches come from a pool of small synthetic
volumes (:func:`geoseg.synth.volumes.make_volume`) whose oldest member is
replaced by a freshly generated one every few steps, so the network sees
hundreds of different bodies rather than memorising three. Patches are centred
on a foreground voxel (of a class drawn with ``class_weights``) with some probability, so
the small kidneys and lesions are seen often; the loss is cross-entropy plus a soft
Dice over the foreground classes; AdamW with a linear warm-up and a cosine decay.

Training volumes use seeds from ``cfg.seed * 100_000 + 1000`` upwards; the
range is recorded in the model's ``extra["training"]["seeds"]`` and
:func:`evaluate_volume` refuses a volume of a seed in it.

    from geoseg.training.unet3d import Volume3DConfig, evaluate_volume, train_unet3d
    model = train_unet3d(Volume3DConfig())         # about 16 CPU minutes, one thread
    dice = evaluate_volume(model, seed=123)        # per class, background first

The optimisation is the shared loop's (:mod:`geoseg.training.loop`); what is
3D here is the data (the pool, the patches) and the Dice term of the loss.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import dask
import numpy as np
import torch
import xarray as xr
from numpy.typing import NDArray
from torch import nn

from geoseg.errors import TrainingDataError, TrainSpecError
from geoseg.metrics import confusion_matrix, dice_per_class
from geoseg.models.header import ModelInfo
from geoseg.models.model import SegmentationModel
from geoseg.models.registry import build_network
from geoseg.synth.volumes import VOLUME_CLASSES, Volume, make_volume
from geoseg.tiling.plan import coerce_per_axis
from geoseg.training.loop import Loop, adamw, seed_torch, warmup_cosine

Triple = tuple[int, int, int]
SEED_OFFSET = 1000  # training seeds start here (times 100_000 * cfg.seed): small seeds stay unseen
EVAL_SHAPE: Triple = (40, 112, 120)
EVAL_CHUNKS: Triple = (20, 56, 60)
EVAL_TILE: Triple = (16, 48, 48)


@dataclass(frozen=True)
class Volume3DConfig:
    """Hyperparameters; the defaults are the configuration the benchmark reports."""

    steps: int = 1500
    seed: int = 0
    batch: int = 4
    patch: Triple = (24, 64, 64)
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup: float = 0.05  # fraction of the steps with a linear warm-up
    dice_weight: float = 1.0  # loss = cross-entropy + dice_weight * (1 - soft Dice)
    foreground: float = 0.5  # probability that a patch is centred on a foreground voxel
    class_weights: tuple[float, ...] = (1.0, 1.0, 2.0)  # odds of centring on organ_a, organ_b, lesion
    flips: tuple[int, ...] = (0, 1, 2)  # patch axes (z, y, x) flipped at random
    gain: float = 0.1  # intensities scaled by a random factor in [1 - gain, 1 + gain]
    pool: int = 24  # volumes held at once
    refresh: int = 5  # steps between replacing the oldest volume by a fresh one
    z_range: tuple[int, int] = (32, 48)  # training volume sizes, inclusive ranges
    yx_range: tuple[int, int] = (96, 128)
    depth: int = 3
    width: int = 8
    pool_z: int = 2
    threads: int = 1  # torch threads; 0 keeps torch's default
    log_every: int = 100

    def network_config(self) -> dict[str, Any]:
        """The ``unet3d`` architecture config."""
        return {"in_channels": 1, "num_classes": len(VOLUME_CLASSES), "depth": self.depth,
                "width": self.width, "pool_z": self.pool_z}

    def first_seed(self) -> int:
        """Seed of the first training volume; the others follow it."""
        return self.seed * 100_000 + SEED_OFFSET

    def volumes_used(self) -> int:
        """How many different volumes training draws patches from."""
        return self.pool + (self.steps - 1) // self.refresh


@dataclass
class _Item:
    """A training volume: raw image, labels and the flat indices of each foreground class."""

    image: NDArray[np.float32]
    labels: NDArray[np.uint8]
    foreground: list[NDArray[np.int64]]


class _VolumePool:
    """The volumes patches are drawn from; :meth:`refresh` swaps the oldest for a new one."""

    def __init__(self, cfg: Volume3DConfig, rng: np.random.Generator):
        self.cfg, self.rng = cfg, rng
        self.next_seed = cfg.first_seed()
        self.items: deque[_Item] = deque(self._make() for _ in range(cfg.pool))

    def _make(self) -> _Item:
        lo_z, hi_z = self.cfg.z_range
        lo, hi = self.cfg.yx_range
        shape = (self.rng.integers(lo_z, hi_z + 1), *self.rng.integers(lo, hi + 1, size=2))
        volume = make_volume(*map(int, shape), seed=self.next_seed)
        self.next_seed += 1
        flat = volume.labels.ravel()
        fg = [np.flatnonzero(flat == c) for c in range(1, len(VOLUME_CLASSES))]
        return _Item(volume.image, volume.labels, fg)

    def refresh(self) -> None:
        self.items.popleft()
        self.items.append(self._make())

    def seeds(self) -> tuple[int, int]:
        """First and last seed generated so far (inclusive)."""
        return self.cfg.first_seed(), self.next_seed - 1


def _check_config(cfg: Volume3DConfig, stride: Triple) -> None:
    """Patches must tile the network's stride and fit in the smallest training volume."""
    problems = []
    if len(cfg.patch) != 3:
        problems.append(f"patch must be 3 sizes (z, y, x), got {cfg.patch}")
    smallest = (cfg.z_range[0], cfg.yx_range[0], cfg.yx_range[0])
    for axis, (p, s, n) in enumerate(zip(cfg.patch, stride, smallest)):
        if p % s or p > n:
            problems.append(f"patch[{axis}] = {p} must be a multiple of the stride {s} and at most "
                            f"the smallest volume size {n}")
    if cfg.z_range[0] > cfg.z_range[1] or cfg.yx_range[0] > cfg.yx_range[1]:
        problems.append(f"z_range {cfg.z_range} and yx_range {cfg.yx_range} must be (low, high)")
    if min(cfg.z_range[0], cfg.yx_range[0]) < 8:
        problems.append(f"volume sizes must be at least 8, got z_range {cfg.z_range} and "
                        f"yx_range {cfg.yx_range}")
    if cfg.steps < 1 or cfg.batch < 1 or cfg.pool < 1 or cfg.refresh < 1:
        problems.append(f"steps, batch, pool and refresh must be >= 1, got {cfg.steps}, "
                        f"{cfg.batch}, {cfg.pool}, {cfg.refresh}")
    if not 0.0 <= cfg.foreground <= 1.0 or not 0.0 <= cfg.gain < 1.0:
        problems.append(f"foreground must be in [0, 1] and gain in [0, 1), got {cfg.foreground} "
                        f"and {cfg.gain}")
    if len(cfg.class_weights) != len(VOLUME_CLASSES) - 1 or min(cfg.class_weights) <= 0:
        problems.append(f"class_weights must be {len(VOLUME_CLASSES) - 1} positive numbers (one per "
                        f"foreground class), got {cfg.class_weights}")
    if any(a not in (0, 1, 2) for a in cfg.flips):
        problems.append(f"flips are axes 0 (z), 1 (y), 2 (x); got {cfg.flips}")
    if problems:
        raise TrainSpecError("invalid 3D training config: " + "; ".join(problems)
                             + ". Change these fields of Volume3DConfig.")


def _origin(rng: np.random.Generator, item: _Item, cfg: Volume3DConfig) -> list[int]:
    """Patch corner: around a voxel of a random foreground class, or anywhere."""
    shape, patch = item.labels.shape, cfg.patch
    present = [c for c, idx in enumerate(item.foreground) if idx.size]
    if present and rng.random() < cfg.foreground:
        odds = np.array([cfg.class_weights[c] for c in present])
        idx = item.foreground[present[rng.choice(len(present), p=odds / odds.sum())]]
        centre = np.unravel_index(idx[rng.integers(idx.size)], shape)
        corner = [int(c) - int(rng.integers(p // 4, p - p // 4 + 1)) for c, p in zip(centre, patch)]
        return [min(max(c, 0), n - p) for c, n, p in zip(corner, shape, patch)]
    return [int(rng.integers(n - p + 1)) for n, p in zip(shape, patch)]


def _sample(rng: np.random.Generator, pool: _VolumePool, cfg: Volume3DConfig, mean: float,
            std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of normalized patches ``(N, 1, Z, Y, X)`` and their labels ``(N, Z, Y, X)``."""
    xs, ys = [], []
    for _ in range(cfg.batch):
        item = pool.items[int(rng.integers(len(pool.items)))]
        corner = _origin(rng, item, cfg)
        window = tuple(slice(c, c + p) for c, p in zip(corner, cfg.patch))
        x, y = item.image[(0,) + window], item.labels[window]
        axes = tuple(a for a in cfg.flips if rng.random() < 0.5)
        if axes:
            x, y = np.flip(x, axes), np.flip(y, axes)
        scale = 1.0 + rng.uniform(-cfg.gain, cfg.gain)
        xs.append((x * np.float32(scale) - np.float32(mean)) / np.float32(std))
        ys.append(y)
    x = torch.from_numpy(np.stack(xs)[:, None].astype(np.float32))
    y = torch.from_numpy(np.stack(ys).astype(np.int64))
    return x.contiguous(memory_format=torch.channels_last_3d), y


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, *, smooth: float = 1.0) -> torch.Tensor:
    """``1 -`` the mean soft Dice of the foreground classes (1..C-1), over the whole batch.

    ``logits`` is ``(N, C, ...)``, ``target`` the class ids ``(N, ...)``. Sums run
    over the batch and all voxels per class ("batch Dice"), so a class absent
    from one patch does not dominate.
    """
    probs = torch.softmax(logits.float(), dim=1)[:, 1:]
    onehot = nn.functional.one_hot(target, logits.shape[1]).movedim(-1, 1)[:, 1:].to(probs.dtype)
    dims = (0,) + tuple(range(2, probs.ndim))
    inter = (probs * onehot).sum(dims)
    sizes = probs.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2.0 * inter + smooth) / (sizes + smooth)).mean()


def _statistics(pool: _VolumePool) -> tuple[float, float]:
    """Intensity mean and std over the initial pool's voxels."""
    values = np.concatenate([item.image.ravel() for item in pool.items])
    return float(values.mean()), float(values.std())


def train_unet3d(cfg: Volume3DConfig = Volume3DConfig(), *,
                 log: Callable[[str], Any] = print) -> SegmentationModel:
    """Train a ``unet3d`` on fresh synthetic volumes; returns the model on the CPU, in eval mode.

    Raises
    ------
    TrainSpecError
        If the patch does not fit the volumes or the network's stride, or a
        count or probability is out of range.
    """
    seed_torch(cfg.seed, cfg.threads)
    net = build_network("unet3d", cfg.network_config())
    _check_config(cfg, coerce_per_axis(net.stride, 3, "stride"))
    rng = np.random.default_rng(cfg.seed)
    pool = _VolumePool(cfg, rng)
    mean, std = _statistics(pool)
    _fit(net.to(memory_format=torch.channels_last_3d), pool, cfg, (mean, std), log)
    net = net.to(memory_format=torch.contiguous_format).eval()
    first, last = pool.seeds()
    extra = {"training": {**asdict(cfg), "seeds": [first, last],
                          "command": "geoseg.training.unet3d.train_unet3d"}}
    info = ModelInfo("synthetic-unet3d", "unet3d", cfg.network_config(), VOLUME_CLASSES,
                     ("intensity",), (mean,), (std,), extra=extra)
    return SegmentationModel(net, info, device="cpu")


def _fit(net: nn.Module, pool: _VolumePool, cfg: Volume3DConfig, norm: tuple[float, float],
         log: Callable[[str], Any]) -> None:
    """Fit on patches of the pool (refreshed every ``cfg.refresh`` steps); logs mean losses."""
    opt = adamw(net, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ce = nn.CrossEntropyLoss()

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ce(logits, y) + cfg.dice_weight * soft_dice_loss(logits, y)

    loop = Loop(net, opt, warmup_cosine(opt, warmup=max(1, round(cfg.warmup * cfg.steps)),
                                        total=cfg.steps), loss_fn)
    loop.run(_patches(np.random.default_rng(cfg.seed + 1), pool, cfg, norm), on_step=_Report(cfg, log))
    net.eval()


def _patches(rng: np.random.Generator, pool: _VolumePool, cfg: Volume3DConfig,
             norm: tuple[float, float]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for step in range(cfg.steps):
        if step and step % cfg.refresh == 0:
            pool.refresh()
        yield _sample(rng, pool, cfg, *norm)


class _Report:
    """Logs the mean loss every ``cfg.log_every`` steps and at the last."""

    def __init__(self, cfg: Volume3DConfig, log: Callable[[str], Any]):
        self.cfg, self.log = cfg, log
        self.start, self.running = time.perf_counter(), 0.0

    def __call__(self, step: int, loss: float) -> None:
        self.running += loss
        if (step + 1) % self.cfg.log_every == 0 or step == self.cfg.steps - 1:
            done = (step % self.cfg.log_every) + 1
            self.log(f"step {step + 1}/{self.cfg.steps} loss {self.running / done:.4f} "
                     f"({time.perf_counter() - self.start:.0f} s)")
            self.running = 0.0


def evaluate_volume(model: SegmentationModel, *, seed: int = 123, shape: Triple = EVAL_SHAPE,
                    chunks: Triple = EVAL_CHUNKS, tile: Triple = EVAL_TILE) -> NDArray[np.float64]:
    """Dice per class (background first) on a fresh volume, segmented tiled by ``geoseg.segment``.

    The volume is cut into ``chunks`` (one task each, synchronous scheduler),
    each segmented in tiles of ``tile`` plus the model's receptive field.

    Raises
    ------
    TrainingDataError
        If ``seed`` is among the seeds the model was trained on.
    """
    seeds = model.info.extra.get("training", {}).get("seeds")
    if seeds and seeds[0] <= seed <= seeds[1]:
        raise TrainingDataError(f"evaluation seed {seed} is one of the training seeds "
                                f"{seeds[0]}..{seeds[1]}; evaluate on a seed outside that range.")
    volume = make_volume(*shape, seed=seed)
    return dice_of(model, volume, chunks=chunks, tile=tile)


def dice_of(model: SegmentationModel, volume: Volume, *, chunks: Triple = EVAL_CHUNKS,
            tile: Triple = EVAL_TILE) -> NDArray[np.float64]:
    """Dice per class of ``model`` on ``volume``, segmented through ``geoseg.segment``."""
    from geoseg.parallel.lazy import segment

    image = xr.DataArray(volume.image, dims=("band", "z", "y", "x"))
    with dask.config.set(scheduler="sync"):
        pred = segment(image, model, chunks=chunks, tile=tile).values
    return dice_per_class(confusion_matrix(volume.labels, pred, len(volume.classes)))
