"""A job's tasks open their Zarr input once per process, not once per task."""

from __future__ import annotations

import zarr

from geoseg.jobs import JobSpec, run
from tests.conftest import textured_image, write_zarr


def test_a_jobs_tasks_read_the_inputs_metadata_once_per_run_and_process(tmp_path, monkeypatch):
    """Each of 64 tasks opened the input (its zarr.json, and .zarray/.zattrs probed): a request
    each on an object store. A second run opens it again: its metadata may have changed."""
    from geoseg.io.readers import _zarr

    src = write_zarr(tmp_path / "in.zarr", textured_image(256, 256, bands=1), chunks=(32, 32))
    opened = []
    open_array = zarr.open_array

    def counted(store, **kwargs):
        opened.append(kwargs.get("path"))
        return open_array(store, **kwargs)

    monkeypatch.setattr(_zarr.zarr, "open_array", counted)
    for n in (1, 2):
        out = str(tmp_path / f"out{n}.zarr")
        run(JobSpec.from_dict({"input": {"url": src}, "output": {"url": out, "chunks": [32, 32]},
                               "model": {"method": "threshold", "params": {"thresholds": [128]}}}),
            scheduler="threads")
        assert zarr.open_group(out, mode="r").attrs["geoseg"]["status"] == "complete"
        during = len(opened)
        opened.clear()
        assert during <= 8, f"run {n} opened its input {during} times for 64 tasks"
