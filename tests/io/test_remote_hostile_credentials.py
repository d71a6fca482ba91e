"""Credentials in an output URL (``s3://KEY:SECRET@bucket/...``): botocore's refusal quoted
them ("internal error: ParamValidationError: ... Invalid bucket name \\"KEY:SECRET@bucket\\"")."""

from __future__ import annotations

import pytest

from geoseg.errors import GeosegError, ParameterError, StorageAccessError
from geoseg.io import remote
from geoseg.io.output import output_exists, remove_output

SECRET = "Hunter2-secretXYZ"
URL = f"s3://AKIAXKEYID:{SECRET}@geoseg/out/one.zarr"


@pytest.mark.parametrize("call", [output_exists, remove_output])
def test_an_output_url_with_credentials_is_refused_without_them(s3_server, call):
    with pytest.raises(StorageAccessError) as caught:
        call(URL, s3_server)
    said = str(caught.value)
    assert said.startswith("Output s3://geoseg/out/one.zarr: received a URL with credentials"), said
    assert SECRET not in said and "AKIAXKEYID" not in said and caught.value.__cause__ is None


def test_storage_errors_hide_credentials_botocore_quotes(s3_server):
    import s3fs

    fs = s3fs.S3FileSystem(**s3_server, skip_instance_cache=True)
    with pytest.raises(StorageAccessError) as caught, remote.storage_errors(URL, s3_server,
                                                                             "Reading"):
        fs.exists(URL)
    assert SECRET not in str(caught.value) and "AKIAXKEYID" not in str(caught.value)


def test_a_bucket_name_s3_does_not_allow_is_a_clear_error(s3_server):
    url = "s3://Not_A*Bucket/out.zarr"
    with pytest.raises(GeosegError) as caught:
        output_exists(url, s3_server)
    assert isinstance(caught.value, ParameterError), repr(caught.value)
    assert "Reading output s3://Not_A*Bucket/out.zarr failed: the S3 client refused" in str(
        caught.value)
