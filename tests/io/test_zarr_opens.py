"""A job's tasks open their Zarr input once per process, not once per task; a lazy result
computed again reads its input as it is then."""

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


def test_a_segment_graph_computed_again_reads_the_input_as_it_is_then(tmp_path):
    """A lazy result kept the input's opened metadata across computes: once the input was
    rewritten, the second compute read every chunk as the fill value."""
    import shutil

    import dask
    import numpy as np

    import geoseg
    from geoseg.methods import Threshold

    first, second = textured_image(64, 64, bands=1, seed=1), textured_image(64, 64, bands=1, seed=2)
    url = write_zarr(tmp_path / "in.zarr", first, chunks=(32, 32))
    mask = geoseg.segment(geoseg.open_raster(url), Threshold((128.0,)), chunks=32)
    with dask.config.set(scheduler="threads"):
        np.testing.assert_array_equal(mask.values, first[0] > 128)
        shutil.rmtree(tmp_path / "in.zarr")
        write_zarr(tmp_path / "in.zarr", second, chunks=(16, 16))  # rewritten, chunked anew
        np.testing.assert_array_equal(mask.values, second[0] > 128)


def test_a_segment_graph_with_halos_computed_again_reads_no_block_the_last_compute_decoded(tmp_path):
    """Windows with halos read through a cache of decoded blocks named when the graph was
    built: computed again after its input was rewritten, the graph gave the first result."""
    import shutil

    import dask
    import numpy as np

    import geoseg
    from tests.conftest import random_unet

    first, second = textured_image(256, 256, bands=3, seed=1), textured_image(256, 256, bands=3, seed=2)
    url = write_zarr(tmp_path / "in.zarr", first, chunks=(64, 64))
    model = random_unet()
    assert max(model.halo) > 0
    mask = geoseg.segment(geoseg.open_raster(url), model, chunks=64)
    with dask.config.set(scheduler="threads"):
        before = mask.values
        shutil.rmtree(tmp_path / "in.zarr")
        write_zarr(tmp_path / "in.zarr", second, chunks=(64, 64))
        again = mask.values
        fresh = geoseg.segment(geoseg.open_raster(url), model, chunks=64).values
    assert not np.array_equal(before, fresh)  # the two images segment differently
    np.testing.assert_array_equal(again, fresh)
