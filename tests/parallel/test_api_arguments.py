"""segment() and open_raster() refuse arguments they cannot use with a geoseg error that says
what was received and what is expected, before anything is computed."""

from __future__ import annotations

import re
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import geoseg
from geoseg.errors import ParameterError, PlanError
from tests.conftest import textured_image, write_geotiff

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(model_path: str):
    """The random U-Net of the test suite: 3 bands, 4 classes."""
    return geoseg.load_model(model_path, device="cpu")


@pytest.fixture(scope="module")
def tif(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_geotiff(tmp_path_factory.mktemp("api") / "a.tif", textured_image(64, 64))


@pytest.fixture(scope="module")
def raster(tif: str) -> xr.DataArray:
    return geoseg.open_raster(tif)


# --- open_raster ---------------------------------------------------------------------------


def test_open_raster_takes_a_pathlib_path(tif):
    assert geoseg.open_raster(Path(tif)).shape == (3, 64, 64)
    assert geoseg.open_raster([Path(tif)]).shape == (3, 64, 64)


def test_open_raster_refuses_a_numpy_array_and_says_it_goes_to_segment(raster):
    with pytest.raises(ParameterError, match=r"received a value of type ndarray of shape \(3, 64, 64\); "
                                             r"expected a path or URL.*geoseg.segment a DataArray"):
        geoseg.open_raster(raster.values)


def test_open_raster_refuses_a_dataarray(raster):
    with pytest.raises(ParameterError, match=r"received a value of type DataArray.*dims \(band, y, x\)"):
        geoseg.open_raster(raster)


def test_open_raster_takes_one_band_number_as_an_int(tif):
    one = geoseg.open_raster(tif, bands=2)
    assert one.shape == (1, 64, 64)
    np.testing.assert_array_equal(one.values, geoseg.open_raster(tif, bands=[2]).values)


def test_open_raster_refuses_bands_that_are_not_numbers(tif):
    with pytest.raises(ParameterError, match=r"bands: received '2'; expected a list of 1-based band "
                                             r"numbers, e.g. \[2\]"):
        geoseg.open_raster(tif, bands="2")


@pytest.mark.parametrize("level", [1.5, 1.0, -1, True, "1"])
def test_open_raster_refuses_a_level_that_is_not_a_whole_number_at_least_0(tif, level):
    """1.5 was read as level 1; what a reader cannot take is refused, never rounded."""
    with pytest.raises(ParameterError, match=rf"level: received {re.escape(repr(level))}; expected "
                                             r"a resolution level, a whole number >= 0"):
        geoseg.open_raster(tif, level=level)


def test_open_raster_refuses_chunks_of_zero(tif):
    with pytest.raises(PlanError, match=r"chunks=0: expected sizes >= 1"):
        geoseg.open_raster(tif, chunks=0)


def test_open_raster_refuses_storage_options_that_are_not_a_dict(tif):
    with pytest.raises(ParameterError, match=r"storage_options: received a value of type list "
                                             r"\(its contents not shown.*expected a dict") as err:
        geoseg.open_raster(tif, storage_options=[("secret", "S3CR3T-VALUE")])
    assert "S3CR3T-VALUE" not in str(err.value)  # a misshapen option list may hold credentials


# --- segment -------------------------------------------------------------------------------


def test_segment_refuses_a_numpy_array(raster, model):
    with pytest.raises(ParameterError, match=r"raster: received a value of type ndarray.*expected an "
                                             r"xarray.DataArray with dims \(band, y, x\).*xr.DataArray\(arr"):
        geoseg.segment(raster.values, model)


def test_segment_refuses_a_dask_array(raster, model):
    with pytest.raises(ParameterError, match=r"raster: received a value of type Array.*expected an "
                                             r"xarray.DataArray"):
        geoseg.segment(da.from_array(raster.values), model)


def test_segment_refuses_a_model_that_is_neither_a_segmenter_nor_a_url(raster):
    with pytest.raises(ParameterError, match=r"model: received 5 \(of type int\); expected a segmenter "
                                             r".*or a model path/URL"):
        geoseg.segment(raster, 5)


def test_segment_takes_a_model_path(raster, model_path):
    assert geoseg.segment(raster, Path(model_path)).shape == (64, 64)


@pytest.mark.parametrize("batch_size", ["4", 0, -2, 1.5, True])
def test_segment_checks_batch_size_when_called(raster, model, batch_size):
    with pytest.raises(PlanError, match=rf"batch_size={batch_size!r}: expected a whole number >= 1"):
        geoseg.segment(raster, model, batch_size=batch_size)


@pytest.mark.parametrize("nodata_class", [300, -1])
def test_segment_refuses_a_nodata_class_the_class_array_cannot_hold(raster, model, nodata_class):
    with pytest.raises(ParameterError, match=rf"nodata_class: received {nodata_class}.*stored as uint8, "
                                             r"which holds 0 to 255; give a whole number from 4 to 255"):
        geoseg.segment(raster, model, nodata_class=nodata_class)


def test_segment_refuses_a_nodata_class_equal_to_a_class_id(raster, model):
    with pytest.raises(ParameterError, match=r"nodata_class: received 2, but the model's 4 classes "
                                             r"\(ids 0 to 3\).*above the class ids"):
        geoseg.segment(raster, model, nodata_class=2)


def test_segment_takes_a_nodata_class_above_the_class_ids(raster, model):
    assert geoseg.segment(raster, model, nodata_class=np.int64(4)).attrs["nodata"] == 4


def test_segment_refuses_a_negative_halo(raster, model):
    with pytest.raises(PlanError, match=r"halo=-1: expected sizes >= 0 on every axis"):
        geoseg.segment(raster, model, chunks=32, tile=32, halo=-1)
    with pytest.raises(PlanError, match=r"halo=\(2, -1\): expected sizes >= 0"):
        geoseg.segment(raster, model, chunks=32, tile=32, halo=(2, -1))


def test_a_torch_network_or_an_array_is_named_on_one_line_with_what_to_do(raster):
    """Their repr ran over several lines of the one-line message."""
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.ReLU())
    with pytest.raises(ParameterError, match=r"received Sequential\(.*of type Sequential.*"
                                             r"geoseg.SegmentationModel\(net") as refused:
        geoseg.segment(raster, net)
    assert "\n" not in str(refused.value)
    with pytest.raises(ParameterError, match=r"url: received array\(.*\.\.\. \(of type ndarray\)") as refused:
        geoseg.load_model(np.zeros((50, 50)))
    assert "\n" not in str(refused.value)


def test_an_axis_beyond_band_and_space_is_named_with_the_selection_that_removes_it(raster):
    """A time series got "rename the spatial dimensions", which were already named right."""
    series = xr.concat([raster, raster], dim="time")
    with pytest.raises(PlanError, match=r"'time' is not an axis a model segments.*"
                                        r"raster\.isel\(time=0\)"):
        geoseg.segment(series, "builtin:demo-unet")


@pytest.mark.parametrize("shape, said", [((0, 8, 8), "no bands"), ((3, 0, 8), "no pixels")])
def test_a_raster_with_no_bands_or_no_pixels_is_refused_saying_so(shape, said):
    """No bands was told to "use a model trained on 0 band(s)"."""
    empty = xr.DataArray(np.zeros(shape, np.uint8), dims=("band", "y", "x"))
    with pytest.raises(ParameterError, match=rf"shape \({shape[0]}, {shape[1]}, 8\): {said}"):
        geoseg.segment(empty, "builtin:demo-unet")


def test_a_one_axis_array_is_told_to_take_rows_and_columns():
    with pytest.raises(ParameterError, match=r"shape \(5,\).*at least two axes \(y, x\)"):
        geoseg.segment(np.zeros(5), "builtin:demo-unet")
