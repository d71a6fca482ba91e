"""One list of version fields identifies a stored input for run records, training checksums
and batch identities alike."""

from __future__ import annotations

import numpy as np
import pytest
import s3fs

from geoseg.io.identity import stored_path
from geoseg.io.readers import open_source
from geoseg.io.versions import file_stamp, version_marks
from geoseg.jobs import provenance
from geoseg.jobs.identity import input_identity
from geoseg.training import checksums
from tests.conftest import textured_image, write_geotiff, write_zarr


def test_marks_are_strongest_first_and_skip_empty_fields():
    info = {"name": "a", "size": 3, "mtime": 1.5, "VersionId": "v1", "ETag": '"abc"', "etag": ""}
    assert list(version_marks(info)) == ["ETag", "VersionId", "mtime"]
    assert file_stamp(info) == "etag:abc;size=3"
    assert file_stamp({"size": 3, "mtime": 1.5, "VersionId": "v1"}) == "stat:size=3;VersionId=v1"
    assert file_stamp({"size": 3, "LastModified": "then"}) == "stat:size=3;mtime=then"
    assert file_stamp({"size": 3, "name": "a"}) is None


def test_stored_path_is_the_zarr_arrays_folder(tmp_path):
    url = write_zarr(tmp_path / "in.zarr", textured_image(1, 16, 16))
    fs, path = stored_path(open_source(url))
    assert fs.exists(f"{path}/zarr.json") or fs.exists(f"{path}/.zarray")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["local", "s3"])
def test_record_checksum_and_batch_identity_read_the_same_marks(tmp_path, s3_server, monkeypatch,
                                                                 where):
    path = write_geotiff(tmp_path / "in.tif", textured_image(1, 16, 16).astype(np.uint8))
    url, options = str(path), {}
    if where == "s3":
        url, options = "s3://geoseg/identity-marks/in.tif", s3_server
        s3fs.S3FileSystem(skip_instance_cache=True, **s3_server).put_file(str(path), url)
    source = open_source(url, options)
    monkeypatch.setattr(checksums, "CONTENT_LIMIT", 0)  # read the info, not the bytes
    fs, stored = stored_path(source)
    marks = version_marks(fs.info(stored))
    record = provenance.identity(source)
    assert marks and {k: v for k, v in record.items() if k not in ("object", "size")} == marks
    assert checksums.source_checksum(source)["info"] == marks
    assert input_identity(url, options) == file_stamp(fs.info(stored))
    assert options.get("secret", "-") not in str(record) + str(marks)
