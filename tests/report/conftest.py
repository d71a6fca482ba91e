"""A real finished run to report on: a small synthetic scene segmented by the demo U-Net,
scored against the scene's labels, on an in-process cluster (threads: quick to start)."""

from __future__ import annotations

from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from geoseg.demo import write_scene
from geoseg.jobs.runner import RunReport, run
from geoseg.jobs.spec import JobSpec


def job(folder: Path, name: str = "report-test", *, out: str = "mask.zarr",
        chunks: int = 128, **extra: object) -> JobSpec:
    scene = str(folder / "scene.zarr")
    return JobSpec.from_dict({
        "name": name, "input": {"url": scene, "variable": "image"},
        "model": {"path": "builtin:demo-unet"},
        "output": {"url": str(folder / out), "chunks": [chunks, chunks]},
        "evaluate": {"reference": {"url": scene, "variable": "labels"}},
        "runs_dir": str(folder / "runs"), **extra})


@pytest.fixture(scope="session")
def client() -> Client:
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as c:  # only where a test passes it
        yield c


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory, client: Client) -> RunReport:
    from geoseg.synth import make_scene

    folder = tmp_path_factory.mktemp("run")
    write_scene(make_scene(384, 512, seed=3), str(folder / "scene.zarr"), chunks=128)
    patch = pytest.MonkeyPatch()
    # regions of one 128-pixel chunk each (not grown to save halo reads): a map of 3 x 4 chunks
    patch.setenv("GEOSEG_REGION_BYTES", str(128 * 128 * 40))
    try:
        return run(job(folder), client=client)
    finally:
        patch.undo()
