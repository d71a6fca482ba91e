"""Output layout: sharded Zarr v3 (one task per shard) and chunks with no input data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

import geoseg
from geoseg.errors import JobSpecError
from geoseg.jobs import JobSpec, run
from geoseg.jobs.status import verify_output
from tests.conftest import job_dict, textured_image, write_geotiff, write_zarr


def stored_objects(array_dir: Path) -> list[Path]:
    return [p for p in (array_dir / "c").rglob("*") if p.is_file()]


def test_sharded_output_equals_unsharded_with_one_task_and_one_object_per_shard(
        tmp_path, model_path, cluster_address):
    image = textured_image(150, 130, seed=7)
    src = write_zarr(tmp_path / "in.zarr", image, chunks=(50, 50))
    plain = run(JobSpec.from_dict(job_dict(src, model_path, str(tmp_path / "plain.zarr"), chunks=[32, 32])),
                scheduler=cluster_address)
    sharded_spec = job_dict(src, model_path, str(tmp_path / "sharded.zarr"), chunks=[32, 32],
                            shards=[64, 96], probabilities=True)
    sharded = run(JobSpec.from_dict(sharded_spec), scheduler=cluster_address)
    out = zarr.open_group(str(tmp_path / "sharded.zarr"), mode="r")
    assert out["classes"].chunks == (32, 32) and out["classes"].shards == (64, 96)
    assert out["probabilities"].shards == (4, 64, 96)
    expected = zarr.open_group(str(tmp_path / "plain.zarr"), mode="r")["classes"][...]
    np.testing.assert_array_equal(out["classes"][...], expected)
    assert (plain.n_tasks, sharded.n_tasks) == (5 * 5, 3 * 2)
    assert len(stored_objects(tmp_path / "sharded.zarr" / "classes")) == 3 * 2
    assert verify_output(str(tmp_path / "sharded.zarr")).ok


def test_shards_that_are_not_whole_chunks_are_refused(tmp_path, model_path):
    src = write_zarr(tmp_path / "in.zarr", textured_image(64, 64))
    spec = JobSpec.from_dict(job_dict(src, model_path, str(tmp_path / "o.zarr"), chunks=[32, 32],
                                      shards=[48, 64]))
    with pytest.raises(JobSpecError, match=r"output.shards: received \[48, 64\].*multiples"):
        run(spec)
    assert not (tmp_path / "o.zarr").exists()


def test_all_nodata_chunks_skip_the_model_and_are_still_recorded(tmp_path, model_path, cluster_address):
    image = textured_image(128, 128, seed=3)
    image[:, :64, :64] = 0  # one whole output chunk without data
    image[:, 100:, 100:] = 0  # part of another
    src = write_geotiff(tmp_path / "in.tif", image, nodata=0)
    report = run(JobSpec.from_dict(job_dict(src, model_path, str(tmp_path / "out.zarr"))),
                 scheduler=cluster_address)
    classes = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["classes"][...]
    reference = geoseg.load_model(model_path).predict_image(image, nodata=0).argmax(0)
    nodata = (image == 0).all(axis=0)
    assert (classes[nodata] == 255).all()
    np.testing.assert_array_equal(classes[~nodata], reference[~nodata])
    chunks = report.provenance["chunks"]
    assert chunks["all_nodata"] == 1 and chunks["computed"] == 4
    assert verify_output(str(tmp_path / "out.zarr")).ok  # the skipped chunk is in the manifest


def test_nan_pixels_of_a_float_input_get_the_nodata_class(tmp_path, model_path, cluster_address):
    image = textured_image(64, 64, seed=4).astype(np.float32)
    image[:, 10:20, 30:40] = np.nan
    src = write_zarr(tmp_path / "in.zarr", image, chunks=(32, 32))
    spec = job_dict(src, model_path, str(tmp_path / "out.zarr"), nodata_class=9)
    run(JobSpec.from_dict(spec), scheduler=cluster_address)
    classes = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["classes"][...]
    assert (classes[10:20, 30:40] == 9).all()
    assert (classes != 9).sum() == 64 * 64 - 100
