"""The demo: a synthetic scene to local Zarr, segmented on a local cluster, scored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import zarr

from geoseg import budgets
from geoseg.errors import OutputExistsError
from geoseg.io import remote
from geoseg.io.georef import GeoRef
from geoseg.io.output import output_exists, remove_output, write_georef
from geoseg.jobs.runner import RunReport, run
from geoseg.jobs.spec import JobSpec
from geoseg.metrics import confusion_matrix_dask, iou_per_class, mean_iou
from geoseg.parallel.cluster import connect

#: Bytes of memory a demo scene takes per pixel while it is made (85 measured at 1024 x 1024:
#: bands, labels, instances and their intermediates), written and scored, all in memory.
SCENE_BYTES_PER_PIXEL = 96
MODEL = "builtin:demo-unet"
INSTANCE_MODEL = "builtin:demo-instances"
TOUCHING = 0.5  # share of buildings given touching neighbours: what separating instances is about


@dataclass
class DemoResult:
    report: RunReport
    miou: float
    per_class_iou: dict[str, float]
    scene_url: str
    instance_report: RunReport | None = None
    panoptic: dict[str, dict[str, float]] = field(default_factory=dict)  # route -> PQ, SQ, RQ


def write_scene(scene: Any, url: str, *, chunks: int = 1024) -> str:
    """Write a :class:`~geoseg.synth.Scene` as a georeferenced Zarr group (``image``, ``labels``)."""
    group = zarr.open_group(url, mode="w-", attributes={"geoseg": {"demo_scene": True}})
    height, width = scene.labels.shape
    grid = {"grid_mapping": "spatial_ref", "nodata": 0, "band_names": list(scene.bands)}
    image = group.create_array("image", shape=scene.image.shape, dtype="uint8", chunks=(3, chunks, chunks),
                               dimension_names=["band", "y", "x"], attributes=grid)
    image[:] = scene.image
    labels = group.create_array("labels", shape=(height, width), dtype="uint8", chunks=(chunks, chunks),
                                dimension_names=["y", "x"],
                                attributes={"class_names": [c.name for c in scene.classes]})
    labels[:] = scene.labels
    truth = group.create_array("instances", shape=(height, width), dtype="uint32",
                               chunks=(chunks, chunks), dimension_names=["y", "x"])
    truth[:] = scene.instances
    write_georef(group, GeoRef.from_crs(scene.crs, scene.transform, 0), (height, width))
    return url


def run_demo(out: str | Path, *, size: int = 4096, seed: int = 2026, overwrite: bool = False,
             scheduler: str | None = None, on_start: Callable[[int], None] | None = None,
             on_done: Callable[[Any], None] | None = None,
             log: Callable[[str], Any] = print) -> DemoResult:
    """Generate, write, segment and score a ``size`` x ``size`` scene under ``out``.

    Two jobs on one cluster: the demo U-Net's classes with the connected components of
    its buildings, then the instance model's buildings (interior and boundary classes
    grown into instances); both scored by panoptic quality against the scene's truth.
    """
    from geoseg.synth import make_scene

    check_scene_size(size)
    urls = {name: str(Path(out) / f"{name}.zarr") for name in ("scene", "mask", "instances")}
    for url in urls.values():
        if output_exists(url) and not overwrite:
            raise OutputExistsError(f"{url} already exists; pass --overwrite to replace the demo outputs.")
    remove_output(urls["scene"])
    log(f"generating a {size} x {size} synthetic scene (seed {seed})")
    scene = make_scene(size, size, seed=seed, touching=TOUCHING)
    with remote.storage_errors(urls["scene"], {}, "Writing the demo scene"):
        write_scene(scene, urls["scene"])
    semantic, instances = (_demo_job(urls["scene"], urls[name], model, classes, scored)
                           for name, model, classes, scored in (
                               ("mask", MODEL, ["building"], True),
                               ("instances", INSTANCE_MODEL, None, False)))
    with connect(scheduler) as client:
        report = run(semantic, client=client, overwrite=overwrite, on_start=on_start, on_done=on_done)
        log("instances: the bundled instance model on the same scene")
        instance_report = run(instances, client=client, overwrite=overwrite)
    truth = da.from_zarr(zarr.open_group(urls["scene"], mode="r")["labels"])
    pred = da.from_zarr(zarr.open_group(urls["mask"], mode="r")["classes"])
    confusion = confusion_matrix_dask(truth, pred, len(scene.classes))
    ious = dict(zip([c.name for c in scene.classes], iou_per_class(confusion).tolist()))
    panoptic = {"instance model": _building_pq(scene, urls["instances"]),
                "components of the U-Net's buildings": _building_pq(scene, urls["mask"])}
    return DemoResult(report, mean_iou(confusion), ious, urls["scene"], instance_report, panoptic)


def check_scene_size(size: int) -> None:
    """Refuse a scene whose making would take more memory than ``GEOSEG_MAX_WINDOW_BYTES``
    (2 GiB), before any of it is allocated: the demo holds its whole scene in memory, as a
    task does its window (the default 4096 x 4096 takes 1.5 GiB)."""
    n_bytes = SCENE_BYTES_PER_PIXEL * size * size
    budgets.check(n_bytes, budgets.MAX_WINDOW_BYTES,
                  f"--size {size} makes a {size} x {size} scene held in memory, which takes about "
                  f"{budgets.size(n_bytes)} ({SCENE_BYTES_PER_PIXEL} bytes a pixel)",
                  "Give a smaller --size (4096, the default, takes 1.5 GiB), or raise the limit "
                  "if this machine has the memory.")


def _demo_job(scene_url: str, out_url: str, model: str, classes: list[str] | None,
              scored: bool) -> JobSpec:
    """A job of the demo; ``scored``: its tasks also score their chunks against the scene's
    labels, so that its run record and report hold the confusion matrix and the IoUs."""
    spec: dict[str, Any] = {"name": "demo", "input": {"url": scene_url, "variable": "image"},
                            "model": {"path": model},
                            "output": {"url": out_url, "chunks": [1024, 1024]},
                            "instances": {"classes": classes}}
    if scored:
        spec["evaluate"] = {"reference": {"url": scene_url, "variable": "labels"}}
    return JobSpec.from_dict(spec)


def _building_pq(scene: Any, output_url: str) -> dict[str, float]:
    """Panoptic quality of an output's instances against the scene's buildings (in memory: the
    demo's scene is)."""
    from geoseg.instances import PanopticScore, panoptic_quality

    pred = zarr.open_group(output_url, mode="r")["instances"][...]
    score = panoptic_quality(scene.instances, pred).get(1, PanopticScore(0, 0, 0, 0.0))
    return {"PQ": score.pq, "SQ": score.sq, "RQ": score.rq}
