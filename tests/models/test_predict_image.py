"""``predict_image``, the whole-image reference a chunked ``segment`` reproduces, treats
no-data as ``segment`` does: those pixels score NaN."""

from __future__ import annotations

import dask
import numpy as np
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import geoseg
from geoseg.methods import Threshold
from tests.conftest import random_unet, textured_image


def _probabilities(model, image, nodata):
    raster = xr.DataArray(image, dims=("band", "y", "x"), attrs={"nodata": nodata})
    with dask.config.set(scheduler="sync"):
        return geoseg.segment(raster, model, output="probabilities", chunks=40).values


def test_no_data_pixels_score_nan_as_in_segment():
    image = textured_image(80, 72, seed=3).astype(np.float32)
    image[:, 10:20, 30:50] = 0  # every band no-data there
    image[0, 50, 5] = 0  # one band only: still data
    for model in (random_unet(), Threshold((100.0,), feature="mean")):
        whole = model.predict_image(image, nodata=0)
        hole = np.zeros(image.shape[1:], bool)
        hole[10:20, 30:50] = True
        assert np.isnan(whole[:, hole]).all() and np.isfinite(whole[:, ~hole]).all()
        np.testing.assert_allclose(whole, _probabilities(model, image, 0), atol=1e-5)
        assert np.isfinite(model.predict_image(image)).all()  # without nodata: all scored


def test_a_nodata_that_is_no_number_is_refused_as_segment_refuses_it():
    """nodata="0" failed inside numpy ("ufunc 'isnan' not supported"), where segment() says
    what it expects of the same value in attrs."""
    import pytest

    from geoseg.errors import ParameterError

    image = textured_image(40, 50, seed=3).astype(np.float32)
    for model in (random_unet(), Threshold((100.0,), feature="mean")):
        for value in ("0", [0, 1]):
            with pytest.raises(ParameterError, match=r"predict_image\(\): nodata: received .*"
                                                     r"expected a number"):
                model.predict_image(image, nodata=value)
    assert np.isnan(Threshold((100.0,), feature="mean").predict_image(image * 0, nodata=0)).all()


def test_a_model_or_a_classical_method_takes_an_image_as_a_nested_list():
    """A nested list failed with AttributeError ('list' object has no attribute 'astype'), or,
    for a network, was called an image of shape () (0 axes)."""
    image = textured_image(40, 50, seed=3)
    for model in (Threshold((100.0,), feature="mean"), random_unet()):
        np.testing.assert_array_equal(model.predict_image(image.tolist()), model.predict_image(image))


@settings(max_examples=80, deadline=None)
@given(dtype=st.sampled_from(["uint8", "int8", "uint16", "int32", "uint64", "float32"]),
       nodata=st.one_of(st.integers(-2**63, 2**64 - 1), st.sampled_from([-1, 255, 256, 259])))
def test_the_device_mask_marks_no_data_as_numpy_does(dtype, nodata):
    """An integer nodata is kept exact; torch wrapped one out of the pixels' range (-1 equal to a
    uint8 255, 259 to 3), which marked real pixels no data where numpy marked none."""
    import torch

    from geoseg.core.segmenter import valid_mask
    from geoseg.models.tensors import valid_mask_tensor

    info = np.iinfo(dtype) if dtype != "float32" else None
    values = [0, 3, 255] if info is None else [info.min, info.max, 3, 0]
    if info is not None and info.min <= nodata <= info.max:
        values.append(nodata)
    raw = np.array([values], dtype=dtype)
    expected = valid_mask(raw, nodata)
    assert valid_mask_tensor(torch.from_numpy(raw), nodata).numpy().tolist() == expected.tolist()


def test_a_nodata_out_of_an_images_range_marks_nothing_in_a_network():
    image = np.full((3, 8, 8), 255, np.uint8)
    image[:, :4] = 100
    model = random_unet()
    for nodata in (-1, 259):
        assert not np.isnan(model.predict_image(image, nodata=nodata)).any()
