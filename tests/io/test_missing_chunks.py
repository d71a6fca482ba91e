"""A job's Zarr input with a chunk file deleted: an error naming the store and the chunk key, on
the client before a job (one listing) and in every read (the worker's own check), unless
``input.missing_chunks`` (or a fill value that is the declared nodata) says absent chunks
are meant; then they read as the fill value and the job logs how many there are. Readers
outside a job (open_raster, exports) keep zarr's way: absent chunks read as the fill value."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from geoseg.errors import CorruptInputError
from geoseg.io import missing
from geoseg.io.readers import open_source
from geoseg.jobs import checks
from tests.conftest import job_dict, textured_image

IMAGE = textured_image(130, 120)
KEYS = {2: "0.1.1", 3: "c/0/1/1"}  # the chunk at y 64:128, x 64:120


def holed_store(path: Path, zarr_format: int, *, shards: bool = False, fill: int = 0,
                nodata: int | None = None) -> tuple[str, str]:
    """A Zarr array of IMAGE with its chunk at y 1, x 1 deleted; (url, deleted key)."""
    attrs = {} if nodata is None else {"nodata": nodata}
    kwargs = {"shards": (3, 64, 64), "chunks": (3, 32, 32)} if shards else {"chunks": (3, 64, 64)}
    array = zarr.create_array(str(path), shape=IMAGE.shape, dtype="uint8", fill_value=fill,
                              zarr_format=zarr_format, attributes=attrs, **kwargs)
    array[:] = IMAGE
    key = KEYS[zarr_format]
    os.remove(path / key)
    return str(path), key


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_reading_a_window_over_an_absent_chunk_names_it(tmp_path, zarr_format):
    url, key = holed_store(tmp_path / "in.zarr", zarr_format)
    source = checks.with_missing_chunks(open_source(url), "auto")
    np.testing.assert_array_equal(source.read((slice(0, 64), slice(0, 120))), IMAGE[:, :64])
    with pytest.raises(CorruptInputError) as err:
        source.read((slice(32, 100), slice(32, 100)))
    said = str(err.value)
    assert said.startswith(f"input window y 32:100, x 32:100: {url}: chunk(s) absent from the "
                           f"store ({key}): they would read as the fill value 0"), said
    assert "input.missing_chunks: fill" in said


def test_an_absent_shard_is_named_by_its_key(tmp_path):
    url, key = holed_store(tmp_path / "in.zarr", 3, shards=True)
    with pytest.raises(CorruptInputError, match=f"absent from the store \\({key}\\)"):
        checks.with_missing_chunks(open_source(url), "error").read((slice(64, 128), slice(64, 120)))


def test_fill_reads_the_fill_value_where_asked(tmp_path):
    """As zarr does, and as geoseg's readers outside a job do (open_raster, exports)."""
    url, _ = holed_store(tmp_path / "in.zarr", 3, fill=7)
    source = open_source(url)
    assert source.missing_chunks == "fill"
    block = source.read((slice(64, 128), slice(64, 120)))
    assert (block == 7).all()
    with pytest.raises(CorruptInputError):
        checks.with_missing_chunks(source, "error").read((slice(64, 128), slice(64, 120)))


def test_a_fill_value_that_is_the_nodata_means_absent_chunks_are_nodata(tmp_path):
    url, _ = holed_store(tmp_path / "in.zarr", 3, fill=0, nodata=0)
    source = checks.with_missing_chunks(open_source(url), "auto")
    assert (source.read((slice(64, 128), slice(64, 120))) == 0).all()
    with pytest.raises(CorruptInputError):
        checks.with_missing_chunks(source, "error").read((slice(64, 128), slice(64, 120)))


def test_a_group_array_lists_and_checks_its_own_keys(tmp_path):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    array = group.create_array("image", shape=IMAGE.shape, chunks=(3, 64, 64), dtype="uint8")
    array[:] = IMAGE
    os.remove(tmp_path / "g.zarr" / "image" / "c" / "0" / "2" / "0")
    source = checks.with_missing_chunks(open_source(str(tmp_path / "g.zarr"), variable="image"),
                                        "error")
    assert missing.count_missing(source.open_array()) == (["image/c/0/2/0"], 6)
    with pytest.raises(CorruptInputError, match=r"\(image/c/0/2/0\)"):
        source.read((slice(100, 130), slice(0, 10)))


# --- jobs --------------------------------------------------------------------------------


def write_job(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.timeout(120)
def test_geoseg_run_refuses_an_input_with_an_absent_chunk(tmp_path, model_path):
    from tests.test_errors_cli import assert_clean, geoseg

    url, key = holed_store(tmp_path / "in.zarr", 2)
    job = write_job(tmp_path, job_dict(url, model_path, str(tmp_path / "out.zarr")))
    result = geoseg("run", str(job))
    assert_clean(result, 2, f"input.url: {url}: 1 of its 6 chunks are absent from the store ({key})")
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.timeout(120)
def test_workers_check_the_chunks_they_read(tmp_path, model_path, cluster_address, monkeypatch):
    """With the client's listing skipped (as for an array of very many chunks), the task whose
    window reaches the absent chunk fails the run, naming it."""
    from geoseg.jobs import JobSpec, run

    url, key = holed_store(tmp_path / "in.zarr", 3)
    monkeypatch.setattr(missing, "MAX_LISTED", 0)
    spec = JobSpec.from_dict(job_dict(url, model_path, str(tmp_path / "out.zarr")))
    with pytest.raises(CorruptInputError, match=rf"{url}: chunk\(s\) absent from the store \({key}\)"):
        run(spec, scheduler=cluster_address)


def test_fill_logs_how_many_chunks_are_absent(tmp_path, model_path, caplog):
    from geoseg.jobs import JobSpec, prepare

    url, _ = holed_store(tmp_path / "in.zarr", 2)
    data = job_dict(url, model_path, str(tmp_path / "out.zarr"))
    data["input"]["missing_chunks"] = "fill"
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        prepare(JobSpec.from_dict(data))
    assert "1 of 6 chunks are absent from the store and read as the fill value 0" in caplog.text
    data["input"]["missing_chunks"] = "sometimes"
    from geoseg.errors import JobSpecError

    with pytest.raises(JobSpecError, match="input.missing_chunks"):
        JobSpec.from_dict(data)




def test_chunks_absent_as_nodata_are_a_line_not_a_warning(tmp_path, model_path, caplog):
    """A store whose fill value is its nodata (a sparse mosaic) holds no data where chunks are
    absent, by its own convention: logged at INFO, where a fill that is not nodata warns."""
    from geoseg.jobs import JobSpec, prepare

    for nodata, level in ((0, logging.INFO), (None, logging.WARNING)):
        url, _ = holed_store(tmp_path / f"in-{nodata}.zarr", 3, nodata=nodata)
        data = job_dict(url, model_path, str(tmp_path / "out.zarr"))
        data["input"]["missing_chunks"] = "fill"
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="geoseg"):
            prepare(JobSpec.from_dict(data))
        [record] = [r for r in caplog.records if "are absent from the store" in r.message]
        assert record.levelno == level, record.message
        assert ("its nodata" in record.message) == (nodata is not None)


def test_validate_on_a_converted_geotiff_with_empty_blocks_warns_of_nothing(tmp_path):
    """geoseg convert skips chunks that are all nodata; a job on its output is not alarmed."""
    import rasterio
    import yaml

    from tests.cli import geoseg
    from tests.conftest import CRS, TRANSFORM

    image = np.full((1, 128, 128), 50, np.uint8)
    image[:, :64, :64] = 0
    tif = tmp_path / "in.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=128, height=128, count=1, dtype="uint8",
                       crs=CRS, transform=TRANSFORM, nodata=0) as dst:
        dst.write(image)
    assert geoseg("convert", str(tif), str(tmp_path / "in.zarr"), "--chunks", "64").returncode == 0
    job = {"input": {"url": str(tmp_path / "in.zarr")}, "output": {"url": str(tmp_path / "o.zarr")},
           "model": {"method": "threshold", "params": {"thresholds": [40]}}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    result = geoseg("validate", str(tmp_path / "job.yaml"))
    assert result.returncode == 0 and "warning" not in result.stdout + result.stderr, result.stderr
