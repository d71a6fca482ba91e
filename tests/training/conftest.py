"""Small synthetic scenes on real stores (Zarr, GeoTIFF) and tiny training specs."""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geoseg.demo import write_scene
from geoseg.io.sources import GeoTIFFSource, ZarrSource
from geoseg.synth import SCENE_CLASSES, make_scene
from tests.conftest import write_geotiff

SIZE = 160
CHIP = 32
CLASSES = [c.name for c in SCENE_CLASSES]


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Every training test: torch on one thread (restored after the module)."""


@pytest.fixture(scope="session")
def scene() -> Any:
    return make_scene(SIZE, SIZE, seed=3)


@pytest.fixture(scope="session")
def scene_zarr(tmp_path_factory: pytest.TempPathFactory, scene: Any) -> str:
    """A Zarr group with ``image`` (band, y, x) and ``labels`` (y, x), in 64-pixel chunks."""
    return write_scene(scene, str(tmp_path_factory.mktemp("zarr") / "scene.zarr"), chunks=64)


@pytest.fixture(scope="session")
def scene_tiffs(tmp_path_factory: pytest.TempPathFactory, scene: Any) -> tuple[str, str]:
    """The same scene as two tiled GeoTIFFs: image (nodata 0) and labels (no nodata)."""
    folder = tmp_path_factory.mktemp("tiff")
    image = write_geotiff(folder / "image.tif", scene.image, nodata=0)
    labels = write_geotiff(folder / "labels.tif", scene.labels[None], nodata=None)
    return image, labels


def zarr_pair(url: str, window: list[int] | None = None) -> dict[str, Any]:
    pair: dict[str, Any] = {"image": {"url": url, "variable": "image"}, "labels": {"url": url, "variable": "labels"}}
    if window is not None:
        pair["window"] = window
    return pair


def tiny_spec(pairs: list[dict[str, Any]], out: Path, **sections: Any) -> dict[str, Any]:
    """A spec that trains in about a second: a 2-level U-Net of width 4, 32-pixel chips."""
    spec: dict[str, Any] = {
        "name": "tiny",
        "seed": 0,
        "data": {"train": pairs, "classes": CLASSES, "normalization": {"samples": 6}},
        "model": {"architecture": "unet", "config": {"depth": 2, "width": 4}},
        "training": {"epochs": 2, "steps_per_epoch": 3, "batch_size": 4, "chip": CHIP, "lr": 0.01,
                     "loader_threads": 2},
        "validation": {"tile": CHIP, "max_windows": 5},
        "output": {"model": str(out / "model.safetensors")},
    }
    for key, value in sections.items():
        section, _, name = key.partition("__")
        if name:
            spec[section] = {**spec.get(section, {}), name: value}
        else:
            spec[section] = value
    return copy.deepcopy(spec)


class ReadLog:
    """Records the window of every ``RasterSource.read`` call (from any thread)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, int]] = []
        self._lock = threading.Lock()

    def wrap(self, cls: type) -> Any:
        original = cls.read

        def read(source: Any, window: tuple[slice, slice]) -> np.ndarray:
            with self._lock:
                self.calls.append((type(source).__name__, source.url,
                                   window[0].stop - window[0].start, window[1].stop - window[1].start))
            return original(source, window)

        return read

    def largest(self) -> int:
        return max(max(h, w) for _, _, h, w in self.calls)


@pytest.fixture()
def read_log(monkeypatch: pytest.MonkeyPatch) -> ReadLog:
    log = ReadLog()
    for cls in (ZarrSource, GeoTIFFSource):
        monkeypatch.setattr(cls, "read", log.wrap(cls))
    return log
