"""An object store's ``?`` and ``#`` are part of a key, which geoseg writes but shows and records
without them (where signed URLs keep tokens): an output whose key holds them is refused, or its
record and report would name another object (``s3://bucket/one.zarr``, another run's output)."""

from __future__ import annotations

import pytest
import yaml

from geoseg.errors import OutputLocationError
from geoseg.io.allow import check_output_url
from tests.cli import geoseg
from tests.conftest import job_dict


@pytest.mark.parametrize("url", ["s3://geoseg/out/one.zarr?v=2", "gs://bucket/a#1.zarr",
                                 "file:///tmp/o?.zarr"])
def test_an_output_key_holding_a_query_or_fragment_is_refused(url):
    with pytest.raises(OutputLocationError, match=r"received a URL whose key holds '\?' or '#' "
                                                  r".*Nothing was written"):
        check_output_url(url)


def test_a_plain_path_keeps_its_question_mark(tmp_path):
    check_output_url(str(tmp_path / "what?.zarr"))  # a file name, shown as it is


def test_a_job_writing_such_a_key_is_refused_before_anything_is_written(tmp_path, model_path):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_dict("in.zarr", model_path, "s3://geoseg/out/one.zarr?v=2")))
    result = geoseg("validate", str(job))
    said = " ".join(result.stderr.split())
    assert result.returncode == 2, said
    assert "output.url" in said and "received a URL whose key holds '?' or '#'" in said
