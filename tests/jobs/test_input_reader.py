"""``input.reader`` names the reader a job opens its input with, instead of the guess."""

from __future__ import annotations

import pytest

from geoseg.errors import JobSpecError, UnsupportedFormatError
from geoseg.jobs import JobSpec, prepare
from tests.conftest import textured_image, write_geotiff


def spec(url: str, model_path: str, out: str, **inp: object) -> JobSpec:
    return JobSpec.from_dict({"input": {"url": url, **inp}, "model": {"path": model_path},
                              "output": {"url": out}})


def test_the_named_reader_opens_the_input(tmp_path, model_path):
    tif = write_geotiff(tmp_path / "scene.tif", textured_image(64, 64))
    out = str(tmp_path / "out.zarr")
    assert prepare(spec(tif, model_path, out)).source.format == "geotiff"
    assert prepare(spec(tif, model_path, out, reader="geotiff")).source.format == "geotiff"
    with pytest.raises(UnsupportedFormatError, match=r"input.url: The reader .zarr. .*cannot read .*scene.tif: something is there.*claim it: geotiff"):
        prepare(spec(tif, model_path, out, reader="zarr"))


def test_an_unknown_reader_is_a_spec_error_listing_the_installed_ones(tmp_path, model_path):
    with pytest.raises(JobSpecError, match=r"input\.reader: received 'tiff'.*geotiff.*zarr"):
        spec(str(tmp_path / "scene.tif"), model_path, str(tmp_path / "out.zarr"), reader="tiff")
