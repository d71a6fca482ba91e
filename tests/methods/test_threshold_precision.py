"""Histogram thresholds equal scikit-image's where float arithmetic could move them: integers
far from 0 (found on values shifted to start at 0) and float16 bands (binned in float16, as
scikit-image bins a float16 image)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from skimage import data as skdata
from skimage import filters

import geoseg
from geoseg.methods import fit_threshold

SHIFT_INVARIANT = ["otsu", "yen", "isodata", "triangle", "minimum"]
FLOAT16 = SHIFT_INVARIANT + ["mean"]


def skimage_threshold(method: str, image: np.ndarray) -> float:
    return float(getattr(filters, f"threshold_{method}")(image))


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
@pytest.mark.parametrize("method", SHIFT_INVARIANT)
def test_integer_thresholds_far_from_zero_equal_the_unshifted_ones(method, dtype):
    image = skdata.camera()
    offset = 2**40
    fitted = fit_threshold(xr.DataArray(image.astype(dtype) + dtype(offset), dims=("y", "x")),
                           method)
    assert fitted.thresholds[0] - offset == skimage_threshold(method, image.astype(np.int64))


def test_otsu_far_from_zero_segments_as_the_unshifted_image():
    image = skdata.camera().astype(np.int64)
    raster = xr.DataArray(image + 2**40, dims=("y", "x"))
    classes = geoseg.segment(raster, fit_threshold(raster, "otsu"), chunks=256).values
    np.testing.assert_array_equal(classes, image > filters.threshold_otsu(image))


@pytest.mark.parametrize("method", FLOAT16)
def test_float16_thresholds_equal_scikit_image(method):
    image = (skdata.camera().astype(np.float32) / 255).astype(np.float16)
    raster = xr.DataArray(image, dims=("y", "x"))
    fitted = fit_threshold(raster, method)
    expected = skimage_threshold(method, image)
    assert fitted.thresholds[0] == expected
    classes = geoseg.segment(raster, fitted, chunks=256).values
    np.testing.assert_array_equal(classes, image > expected)


def test_float16_with_more_bins_than_float16_steps_is_binned_in_float64():
    """float16 edges of 8192 bins over 0..1 would repeat (steps of 2**-11 near 1): the fit then
    bins in float64, within a bin of scikit-image's float64 Otsu, rather than refuse."""
    image = (skdata.camera().astype(np.float32) / 255).astype(np.float16)
    fitted = fit_threshold(xr.DataArray(image, dims=("y", "x")), "otsu", nbins=8192)
    expected = filters.threshold_otsu(image.astype(np.float64), nbins=8192)
    assert abs(fitted.thresholds[0] - expected) <= 1 / 8192
