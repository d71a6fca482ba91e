"""The demo: a synthetic scene to local Zarr, segmented on a local cluster, scored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import zarr

from geoseg.errors import OutputExistsError
from geoseg.io.georef import GeoRef
from geoseg.io.output import output_exists, remove_output, write_georef
from geoseg.jobs.runner import RunReport, run
from geoseg.jobs.spec import JobSpec
from geoseg.metrics import confusion_matrix_dask, iou_per_class, mean_iou

MODEL = "builtin:demo-unet"


@dataclass
class DemoResult:
    report: RunReport
    miou: float
    per_class_iou: dict[str, float]
    scene_url: str


def write_scene(scene: Any, url: str, *, chunks: int = 1024) -> str:
    """Write a :class:`~geoseg.synth.Scene` as a georeferenced Zarr group (``image``, ``labels``)."""
    group = zarr.open_group(url, mode="w-")
    height, width = scene.labels.shape
    grid = {"grid_mapping": "spatial_ref", "nodata": 0, "band_names": list(scene.bands)}
    image = group.create_array("image", shape=scene.image.shape, dtype="uint8", chunks=(3, chunks, chunks),
                               dimension_names=["band", "y", "x"], attributes=grid)
    image[:] = scene.image
    labels = group.create_array("labels", shape=(height, width), dtype="uint8", chunks=(chunks, chunks),
                                dimension_names=["y", "x"],
                                attributes={"class_names": [c.name for c in scene.classes]})
    labels[:] = scene.labels
    write_georef(group, GeoRef.from_crs(scene.crs, scene.transform, 0), (height, width))
    return url


def run_demo(out: str | Path, *, size: int = 4096, seed: int = 2026, overwrite: bool = False,
             scheduler: str | None = None, on_start: Callable[[int], None] | None = None,
             on_done: Callable[[Any], None] | None = None,
             log: Callable[[str], Any] = print) -> DemoResult:
    """Generate, write, segment and score a ``size`` x ``size`` scene under ``out``."""
    from geoseg.synth import make_scene

    scene_url, mask_url = str(Path(out) / "scene.zarr"), str(Path(out) / "mask.zarr")
    for url in (scene_url, mask_url):
        if output_exists(url) and not overwrite:
            raise OutputExistsError(f"{url} already exists; pass --overwrite to replace the demo outputs.")
    remove_output(scene_url)
    log(f"generating a {size} x {size} synthetic scene (seed {seed})")
    scene = make_scene(size, size, seed=seed)
    write_scene(scene, scene_url)
    spec = JobSpec.from_dict({"name": "demo", "input": {"url": scene_url, "variable": "image"},
                              "model": {"path": MODEL}, "output": {"url": mask_url, "chunks": [1024, 1024]}})
    report = run(spec, scheduler=scheduler, overwrite=overwrite, on_start=on_start, on_done=on_done)
    truth = da.from_zarr(zarr.open_group(scene_url, mode="r")["labels"])
    pred = da.from_zarr(zarr.open_group(mask_url, mode="r")["classes"])
    confusion = confusion_matrix_dask(truth, pred, len(scene.classes))
    ious = dict(zip([c.name for c in scene.classes], iou_per_class(confusion).tolist()))
    return DemoResult(report, mean_iou(confusion), ious, scene_url)
