"""Whole files (tables, polygons, exported GeoTIFFs) and a stage's chunk sha256s written to S3
through transient faults (moto behind :class:`FaultProxy`): retried up to ``GEOSEG_RETRIES``
as chunk writes are, and once the retries run out, a geoseg error naming the object."""

from __future__ import annotations

import dask.array as da
import fsspec
import numpy as np
import pytest
import zarr

from geoseg.errors import StorageUnavailableError
from geoseg.io.files import staged_file, write_whole
from geoseg.io.output import OutputTarget
from geoseg.io.stages import hashes_name, store_hashed

pytestmark = pytest.mark.timeout(90)
FAULTS = 3  # one more than botocore's two attempts: only geoseg's own loop gets past them


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setenv("GEOSEG_RETRY_DELAY", "0.05")
    monkeypatch.setenv("GEOSEG_RETRIES", "4")


def cat(url: str, options: dict) -> bytes:
    return fsspec.filesystem("s3", skip_instance_cache=True, **options).cat_file(url)


def test_a_throttled_whole_file_upload_is_retried(s3_server, proxy, tmp_path):
    url = f"s3://geoseg/uploads/{tmp_path.name}/polygons.geojson"
    proxy.inject("slowdown", method="PUT", path=r"polygons\.geojson$", times=FAULTS)
    write_whole(url, '{"type": "FeatureCollection"}', storage_options=proxy.options(s3_server),
                what="Writing instance polygons")
    assert cat(url, s3_server) == b'{"type": "FeatureCollection"}'
    assert proxy.count("slowdown", "PUT") == FAULTS


def test_a_whole_file_upload_failing_for_good_names_the_object(s3_server, proxy, tmp_path,
                                                               monkeypatch):
    monkeypatch.setenv("GEOSEG_RETRIES", "1")
    url = f"s3://geoseg/uploads/{tmp_path.name}/table.parquet"
    proxy.inject("slowdown", method="PUT", path=r"table\.parquet$", times=100)
    with pytest.raises(StorageUnavailableError) as caught:
        write_whole(url, b"rows", storage_options=proxy.options(s3_server),
                    what="Writing the instance table")
    said = str(caught.value)
    assert f"Writing the instance table {url} failed 2 time(s)" in said, said
    assert "GEOSEG_RETRIES" in said and s3_server["secret"] not in said
    assert proxy.count("slowdown", "PUT") == 4  # 2 tries of geoseg's, 2 attempts of botocore's


def test_a_throttled_upload_of_a_staged_file_is_retried(s3_server, proxy, tmp_path):
    url = f"s3://geoseg/uploads/{tmp_path.name}/c1.tif"
    proxy.inject("slowdown", method="PUT", path=r"c1\.tif$", times=FAULTS)
    with staged_file(url, proxy.options(s3_server)) as staged:
        staged.write_bytes(b"a GeoTIFF")
    assert cat(url, s3_server) == b"a GeoTIFF"
    assert proxy.count("slowdown", "PUT") == FAULTS


def test_an_upload_of_a_staged_file_failing_for_good_names_the_object(s3_server, proxy,
                                                                      tmp_path, monkeypatch):
    monkeypatch.setenv("GEOSEG_RETRIES", "1")
    url = f"s3://geoseg/uploads/{tmp_path.name}/c2.tif"
    proxy.inject("503", method="PUT", path=r"c2\.tif$", times=100)
    with pytest.raises(StorageUnavailableError) as caught, \
            staged_file(url, proxy.options(s3_server)) as staged:
        staged.write_bytes(b"a GeoTIFF")
    said = str(caught.value)
    assert f"Writing {url} failed 2 time(s)" in said, said
    assert s3_server["secret"] not in said


@pytest.fixture()
def classified(s3_server, tmp_path) -> str:
    """A geoseg-like output group on S3: a 64 x 64 ``classes`` array in 32 x 32 chunks."""
    url = f"s3://geoseg/uploads/{tmp_path.name}/out.zarr"
    group = zarr.open_group(url, mode="w", storage_options=s3_server, attributes={"geoseg": {}})
    group.create_array("classes", shape=(64, 64), chunks=(32, 32), dtype="uint8", fill_value=0,
                       dimension_names=["y", "x"])
    return url


def test_a_throttled_write_of_a_stage_chunk_sha256_is_retried(s3_server, proxy, classified):
    data = da.from_array(np.arange(64 * 64, dtype=np.uint32).reshape(64, 64), chunks=32)
    hashes = rf"/{hashes_name('instances')}/c/1/0/0$"
    proxy.inject("slowdown", method="PUT", path=hashes, times=FAULTS)
    digest = store_hashed(OutputTarget(classified, proxy.options(s3_server)), "instances", data)
    assert proxy.count("slowdown", "PUT", hashes) == FAULTS
    group = zarr.open_group(classified, mode="r", storage_options=s3_server)
    assert np.array_equal(group["instances"][...], data.compute())
    assert np.count_nonzero(group[hashes_name("instances")][...].any(axis=-1)) == 4
    assert digest == store_hashed(OutputTarget(classified, s3_server), "instances", data)


def test_a_stage_chunk_sha256_failing_for_good_names_the_object(s3_server, proxy, classified,
                                                                monkeypatch):
    monkeypatch.setenv("GEOSEG_RETRIES", "1")
    data = da.from_array(np.ones((64, 64), dtype=np.uint32), chunks=32)
    proxy.inject("slowdown", method="PUT", path=r"_sha256/c/0/1/0$", times=100)
    with pytest.raises(StorageUnavailableError) as caught:
        store_hashed(OutputTarget(classified, proxy.options(s3_server)), "instances", data)
    said = str(caught.value)
    assert f"Writing the sha256 of instances chunk 0.1 into {classified} failed 2 time(s)" \
        in said, said
    assert s3_server["secret"] not in said
