"""open_raster keeps the stored chunking unless asked, and logs when it groups chunks."""

from __future__ import annotations

import logging

import dask
import numpy as np
import pytest

import geoseg
from geoseg.methods import Threshold
from tests.conftest import textured_image, write_zarr


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> str:
    """A 1000 x 900 Zarr array stored in 301 x 257 chunks (16 of them)."""
    image = textured_image(1000, 900, bands=1, seed=3)
    return write_zarr(tmp_path_factory.mktemp("chunks") / "a.zarr", image, chunks=(301, 257))


def test_the_stored_chunking_is_kept_and_segment_follows_it(stored, caplog):
    with caplog.at_level(logging.INFO, logger="geoseg"):
        raster = geoseg.open_raster(stored)
    assert raster.data.chunks[1:] == ((301, 301, 301, 97), (257, 257, 257, 129))
    assert not caplog.records  # nothing grouped, nothing to say
    with dask.config.set(scheduler="sync"):
        mask = geoseg.segment(raster, Threshold((100,)))
        assert mask.data.chunks == raster.data.chunks[1:]
        np.testing.assert_array_equal(mask.values, raster.values[0] > 100)


def test_grouping_when_asked_is_logged_with_the_figures(stored, caplog):
    with caplog.at_level(logging.INFO, logger="geoseg"):
        raster = geoseg.open_raster(stored, chunks="grouped")
    assert raster.data.chunks[1:] == ((602, 398), (514, 386))
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    assert "stored chunks 301 x 257 grouped into 602 x 514 as asked" in record.getMessage()
    assert "4 tasks instead of 16" in record.getMessage()


def test_grouping_when_the_task_budget_requires_it(stored, caplog, monkeypatch):
    monkeypatch.setenv("GEOSEG_MAX_TASKS", "9")
    with caplog.at_level(logging.INFO, logger="geoseg"):
        raster = geoseg.open_raster(stored)
    assert raster.data.chunks[1:] == ((602, 398), (514, 386))  # the least multiple that fits
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "to stay within GEOSEG_MAX_TASKS=9: 4 tasks instead of 16" in record.getMessage()
    np.testing.assert_array_equal(raster.values, geoseg.open_raster(stored, chunks=500).values)


def test_explicit_chunks_and_unknown_words(stored):
    assert geoseg.open_raster(stored, chunks=(400, 300)).data.chunksize == (1, 400, 300)
    with pytest.raises(ValueError, match="chunks='auto'; expected None .*'grouped'"):
        geoseg.open_raster(stored, chunks="auto")
