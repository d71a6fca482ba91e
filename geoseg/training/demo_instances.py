"""Train the bundled instance model ``builtin:demo-instances`` on synthetic scenes (CPU, seeded).

The network is the demo U-Net with three classes: ``background``, ``building``
(a building's interior) and ``building_edge`` (building pixels 4-adjacent to a
pixel of any other instance or of the background, which includes the wall two
touching buildings share). Interiors of touching buildings are then apart, so
they seed one instance each, and the edge pixels are shared out between the
seeds by a watershed (:func:`decode_instances_whole`). The model file records
that convention in ``extra["instances"]`` for whatever decodes its output.

Training scenes have touching neighbours (``make_scene(touching=...)``), and are
cut into tiles of which only those with buildings are kept, so chips mostly
show streets. By default the network starts from the bundled ``demo-unet``
(same architecture, already tells roofs from land) with a fresh output layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from geoseg.core.classes import ClassInfo
from geoseg.errors import ModelFileError, TrainingDataError
from geoseg.instances.panoptic import PanopticScore, panoptic_quality
from geoseg.models.header import ModelInfo
from geoseg.models.model import SegmentationModel
from geoseg.models.modelfile import load_model, save_model
from geoseg.models.unet import UNet2D
from geoseg.training.demo_unet import ChipRecipe, check_out, fit_chips
from geoseg.training.loop import seed_torch

__all__ = [
    "INSTANCE_CLASSES",
    "InstanceTrainConfig",
    "decode_instances_whole",
    "evaluate_instances",
    "instance_targets",
    "train_instance_model",
]

BACKGROUND, INTERIOR, EDGE = range(3)
INSTANCE_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo("background", (0, 0, 0)),
    ClassInfo("building", (227, 26, 28)),
    ClassInfo("building_edge", (255, 255, 153)),
)
DECODING = [{"class": "building", "interior": "building", "boundary": "building_edge"}]
COMMAND = "python -m geoseg.training.demo_instances"
_FOUR = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class InstanceTrainConfig(ChipRecipe):
    """Hyperparameters of the instance model; defaults reproduce the bundled file."""

    steps: int = 1200
    lr: float = 2e-3
    scenes: int = 8
    scene_size: int = 1024
    touching: float = 0.5
    tile: int = 256  # training scenes are cut into tiles; tiles without buildings are dropped
    min_building: float = 0.01  # share of building pixels a kept tile needs
    val_scenes: int = 2
    val_size: int = 768
    val_touching: float = 0.5
    depth: int = 3
    width: int = 16
    init: str = "builtin:demo-unet"  # weights to start from (output layer excepted); "" for none
    threads: int = 0  # torch threads; 0 keeps torch's default

    def train_seeds(self) -> list[int]:
        """Seeds of the training scenes (apart from the demo U-Net's 0-3 and 999)."""
        return [self.seed * 1000 + 100 + i for i in range(self.scenes)]

    def val_seeds(self) -> list[int]:
        """Seeds of the validation scenes, never trained on."""
        return [self.seed * 1000 + 900 + i for i in range(self.val_scenes)]


def instance_targets(instances: np.ndarray) -> np.ndarray:
    """Training classes from an instance image: 0 background, 1 interior, 2 edge.

    An edge pixel is a building pixel with a 4-neighbour of another id (another
    building or background); pixels outside the image do not count as neighbours.
    """
    ids = np.asarray(instances)
    edge = np.zeros(ids.shape, dtype=bool)
    for axis in (0, 1):
        differs = np.diff(ids, axis=axis) != 0
        lower = [slice(None)] * 2
        upper = [slice(None)] * 2
        lower[axis], upper[axis] = slice(None, -1), slice(1, None)
        edge[tuple(lower)] |= differs
        edge[tuple(upper)] |= differs
    targets = np.where(ids > 0, np.uint8(INTERIOR), np.uint8(BACKGROUND))
    targets[edge & (ids > 0)] = EDGE
    return targets


def decode_instances_whole(classes: np.ndarray, interior_id: int, boundary_id: int) -> np.ndarray:
    """Instances from a class image, whole image at once: the reference for chunked decoders.

    Seeds are the 4-connected regions of ``interior_id``; every pixel of
    ``interior_id`` or ``boundary_id`` joins the seed it reaches first by a
    watershed on the distance to the nearest interior pixel. Boundary regions
    that reach no seed stay 0. Returns ``uint32`` ids, contiguous from 1.
    """
    classes = np.asarray(classes)
    interior = classes == interior_id
    seeds, _ = ndimage.label(interior, structure=_FOUR)
    mask = interior | (classes == boundary_id)
    distance = ndimage.distance_transform_edt(~interior)
    return watershed(distance, markers=seeds, mask=mask).astype(np.uint32)


def _components(classes: np.ndarray) -> np.ndarray:
    """The baseline: 4-connected components of the building mask (interior or edge)."""
    return ndimage.label(classes != BACKGROUND, structure=_FOUR)[0].astype(np.uint32)


def evaluate_instances(model: SegmentationModel, scenes: Sequence[Any]) -> dict[str, Any]:
    """Building PQ/SQ/RQ over `scenes` for the decoded network, for plain connected
    components of its building mask, and for components of the true building mask."""
    totals: dict[str, PanopticScore] = {}
    for scene in scenes:
        classes = model.predict_image(scene.image, nodata=0).argmax(0)
        candidates = {
            "network": decode_instances_whole(classes, INTERIOR, EDGE),
            "components": _components(classes),
            "true_mask_components": _components(instance_targets(scene.instances)),
        }
        for name, pred in candidates.items():
            score = panoptic_quality(scene.instances, pred).get(1, PanopticScore(0, 0, 0, 0.0))
            totals[name] = totals[name] + score if name in totals else score
    return {name: {k: round(v, 4) if isinstance(v, float) else v
                   for k, v in score.to_dict().items()} for name, score in totals.items()}


def train_instance_model(cfg: InstanceTrainConfig, out: str | Path, overwrite: bool = False,
                         log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Train on synthetic scenes with touching buildings, validate on unseen ones, save to
    ``out``; returns the validation figures (also stored in the file's metadata)."""
    from geoseg.synth import make_scene

    check_out(out, overwrite)
    start = time.perf_counter()
    seed_torch(cfg.seed, cfg.threads)
    images, targets = _training_tiles(cfg, log)
    net, norm = _initial_network(cfg, log)
    mean, std = norm or (images.mean(axis=(0, 2, 3)), images.std(axis=(0, 2, 3)))
    mean, std = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
    fit_chips(net, (images - mean[:, None, None]) / std[:, None, None], targets, cfg, log)
    train_s = time.perf_counter() - start
    info = ModelInfo("demo-instances", "unet",
                     {"in_channels": 3, "num_classes": len(INSTANCE_CLASSES), "depth": cfg.depth,
                      "width": cfg.width},
                     INSTANCE_CLASSES, ("red", "green", "blue"), tuple(map(float, mean)),
                     tuple(map(float, std)),
                     extra={"instances": DECODING,
                            "training": {**asdict(cfg), "command": COMMAND,
                                         "train_seconds": round(train_s, 1)}})
    model = SegmentationModel(net, info, device="cpu")
    val = [make_scene(cfg.val_size, cfg.val_size, seed=s, touching=cfg.val_touching)
           for s in cfg.val_seeds()]
    metrics = {"scenes": {"seeds": cfg.val_seeds(), "size": cfg.val_size,
                          "touching": cfg.val_touching}, **evaluate_instances(model, val)}
    for name in ("network", "components", "true_mask_components"):
        m = metrics[name]
        log(f"validation {name}: PQ {m['pq']:.4f} SQ {m['sq']:.4f} RQ {m['rq']:.4f} "
            f"(TP {m['tp']}, FP {m['fp']}, FN {m['fn']})")
    model.info.extra["training"]["validation"] = metrics
    save_model(model, str(out), overwrite=overwrite)
    return metrics


def _training_tiles(cfg: InstanceTrainConfig, log: Callable[[str], Any]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Tiles of the training scenes that hold buildings: float32 images and int64 targets."""
    from geoseg.synth import make_scene

    images, targets = [], []
    for seed in cfg.train_seeds():
        scene = make_scene(cfg.scene_size, cfg.scene_size, seed=seed, touching=cfg.touching)
        target = instance_targets(scene.instances)
        for r in range(0, cfg.scene_size - cfg.tile + 1, cfg.tile):
            for c in range(0, cfg.scene_size - cfg.tile + 1, cfg.tile):
                window = (slice(r, r + cfg.tile), slice(c, c + cfg.tile))
                if (target[window] != BACKGROUND).mean() >= cfg.min_building:
                    images.append(scene.image[(slice(None), *window)])
                    targets.append(target[window])
    if not images:
        raise TrainingDataError(f"no {cfg.tile} px tile of the training scenes has >= "
                                f"{cfg.min_building} building pixels; lower min_building or use "
                                "larger scenes.")
    log(f"{len(images)} training tiles of {cfg.tile} px with buildings")
    return np.stack(images).astype(np.float32), np.stack(targets).astype(np.int64)


def _initial_network(cfg: InstanceTrainConfig, log: Callable[[str], Any]
                     ) -> tuple[UNet2D, tuple[tuple[float, ...], tuple[float, ...]] | None]:
    """A U-Net for the instance classes, with `cfg.init`'s weights but its output layer, and
    `cfg.init`'s normalization (which its features expect); ``None`` without `cfg.init`."""
    net = UNet2D(3, len(INSTANCE_CLASSES), depth=cfg.depth, width=cfg.width)
    if not cfg.init:
        return net, None
    source = load_model(cfg.init, device="cpu")
    state = {k: v for k, v in source.net.state_dict().items() if not k.startswith("head.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("head.") for k in missing):
        raise ModelFileError(f"{cfg.init} does not fit a U-Net of depth {cfg.depth} and width "
                             f"{cfg.width}: missing {missing}, unexpected {unexpected}.")
    log(f"started from {cfg.init} (all but its output layer)")
    return net, (source.info.mean, source.info.std)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m geoseg.training.demo_instances --out FILE``: train (defaults reproduce the
    bundled file); ``--evaluate MODEL``: only score a model on the validation scenes."""
    import argparse
    import json

    from geoseg.synth import make_scene

    parser = argparse.ArgumentParser(prog="python -m geoseg.training.demo_instances",
                                     description=main.__doc__)
    parser.add_argument("--out", help="model file to write")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--evaluate", metavar="MODEL", help="score MODEL instead of training")
    for name in ("steps", "seed", "scenes", "threads"):
        parser.add_argument(f"--{name}", type=int, default=getattr(InstanceTrainConfig, name))
    args = parser.parse_args(argv)
    cfg = InstanceTrainConfig(steps=args.steps, seed=args.seed, scenes=args.scenes,
                              threads=args.threads)
    if args.evaluate:
        val = [make_scene(cfg.val_size, cfg.val_size, seed=s, touching=cfg.val_touching)
               for s in cfg.val_seeds()]
        print(json.dumps(evaluate_instances(load_model(args.evaluate, device="cpu"), val),
                         indent=1))
    elif args.out:
        print(json.dumps(train_instance_model(cfg, args.out, overwrite=args.overwrite), indent=1))
    else:
        parser.error("give --out FILE to train, or --evaluate MODEL")


if __name__ == "__main__":
    main()
