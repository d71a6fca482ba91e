"""Read-only commands (``geoseg status``, an export reading an output) refused access said the
credentials "may write (s3:PutObject, s3:DeleteObject)": they only read."""

from __future__ import annotations

import pytest
from moto.core.authorization import enable_iam_authentication

from geoseg.errors import StorageAccessError
from geoseg.io.georef import GeoRef
from geoseg.io.output import create_output, output_exists
from geoseg.jobs.status import output_status

URL = "s3://geoseg/hostile-readonly/out.zarr"


@pytest.mark.parametrize("read", [output_exists, output_status])
def test_reading_an_output_names_read_permissions(s3_server, read):
    options = {**s3_server, "skip_instance_cache": True}
    with enable_iam_authentication(), pytest.raises(StorageAccessError) as caught:
        read(URL, options)  # the fixture's made-up key is unknown to the server
    said = str(caught.value)
    assert "may read (s3:GetObject, s3:ListBucket)" in said and "PutObject" not in said, said
    assert s3_server["secret"] not in said


def test_creating_an_output_still_names_write_permissions(s3_server):
    options = {**s3_server, "skip_instance_cache": True}
    with enable_iam_authentication(), pytest.raises(StorageAccessError) as caught:
        create_output(URL, shape=(16, 16), chunks=(16, 16), georef=GeoRef(), class_names=["a"],
                      class_dtype="uint8", nodata_class=255, storage_options=options)
    assert "may write (s3:PutObject, s3:DeleteObject)" in str(caught.value)
