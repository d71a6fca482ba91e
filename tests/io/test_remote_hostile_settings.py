"""A bad storage setting is named as a setting: ``GEOSEG_RETRIES=101 geoseg validate`` said
"error: input.url: GEOSEG_RETRIES: ...", as if the input were at fault."""

from __future__ import annotations

import json

import pytest

from geoseg.errors import SettingError
from geoseg.jobs import checks
from tests.cli import geoseg
from tests.conftest import textured_image, write_zarr


@pytest.mark.parametrize(("name", "value"), [("GEOSEG_RETRIES", "101"),
                                             ("GEOSEG_READ_TIMEOUT", "0"),
                                             ("GEOSEG_CONNECT_TIMEOUT", "-1"),
                                             ("GEOSEG_RETRY_DELAY", "601")])
def test_validate_names_a_bad_storage_setting_not_the_input(tmp_path, name, value):
    write_zarr(tmp_path / "in.zarr", textured_image(32, 32))
    job = tmp_path / "job.yaml"
    job.write_text(json.dumps({
        "input": {"url": str(tmp_path / "in.zarr")},
        "model": {"method": "threshold", "params": {"thresholds": [128], "feature": 1}},
        "output": {"url": str(tmp_path / "out.zarr")}}))
    said = geoseg("validate", str(job), env={name: value})
    assert said.returncode == 2, said.stderr
    assert said.stderr.startswith(f"error: {name}: received '{value}'"), said.stderr
    assert "input.url" not in said.stderr


def test_a_setting_error_goes_through_a_job_key_unprefixed():
    with pytest.raises(SettingError, match="^GEOSEG_RETRIES: bad$"), checks._key("input.url"):
        raise SettingError("GEOSEG_RETRIES: bad")
