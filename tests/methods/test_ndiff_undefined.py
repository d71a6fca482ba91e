"""A normalized difference is undefined where a + b == 0 (0/0 at a black scene border):
fits ignore those pixels, as scikit-image on numpy's NaN-free values, and segment() writes them
as no data."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from skimage import filters

import geoseg
from geoseg.methods import Feature, Threshold, fit_threshold


def bordered_scene() -> np.ndarray:
    """Four uint8 bands (red = band 3, NIR = band 4) with a black border, 0 in every band."""
    rng = np.random.default_rng(0)
    veg = rng.random((60, 200)) < 0.5
    red = np.where(veg, rng.normal(50, 5, veg.shape), rng.normal(90, 8, veg.shape))
    nir = np.where(veg, rng.normal(110, 10, veg.shape), rng.normal(120, 8, veg.shape))
    image = np.stack([red, red, red, nir]).clip(1, 255).astype(np.uint8)
    image[:, :, :150] = 0
    return image


def numpy_ndvi(image: np.ndarray) -> np.ndarray:
    a, b = image[3].astype(np.float64), image[2].astype(np.float64)
    with np.errstate(invalid="ignore"):
        return (a - b) / (a + b)  # NaN where 0/0


def test_zero_sum_is_undefined_not_zero():
    image = bordered_scene()
    values = Feature.ndiff(4, 3).compute(image, band_axis=0)
    np.testing.assert_array_equal(values, numpy_ndvi(image))  # NaN on the border, as numpy
    assert not Feature.ndiff(4, 3).defined(image, band_axis=0)[:, :150].any()


def test_otsu_fit_ignores_the_border_and_segment_writes_it_as_no_data():
    image = bordered_scene()
    raster = xr.DataArray(image, dims=("band", "y", "x"))
    ndvi = numpy_ndvi(image)
    fitted = fit_threshold(raster, "otsu", feature=(4, 3))
    expected = filters.threshold_otsu(ndvi[np.isfinite(ndvi)])
    assert fitted.thresholds[0] == pytest.approx(expected, rel=1e-12)
    classes = geoseg.segment(raster, fitted, tile=32).values
    assert (classes[:, :150] == 255).all()
    np.testing.assert_array_equal(classes[:, 150:], ndvi[:, 150:] > fitted.thresholds[0])


def test_predict_image_scores_undefined_pixels_nan():
    image = bordered_scene()
    scores = Threshold([0.1], feature=(4, 3)).predict_image(image)
    assert np.isnan(scores[:, :, :150]).all()
    assert np.isfinite(scores[:, :, 150:]).all()


def test_ensembles_write_a_members_undefined_pixels_as_no_data():
    """An ensemble prepared its own mask from no data alone: a member's undefined pixels (its
    feature NaN) came out as class 0, where the member alone writes no data."""
    image = np.zeros((2, 8, 8), np.uint8)
    image[0, :, 4:], image[1, :, 4:], image[:, :, 2:4] = 50, 10, 5
    raster = xr.DataArray(image, dims=("band", "y", "x"))
    method = Threshold([-0.5], feature=(1, 2))
    alone = geoseg.segment(raster, method).values
    assert (alone[:, :2] == 255).all() and (alone[:, 2:] == 1).all()
    for wrapped in (geoseg.Ensemble([method, method]), geoseg.TTA(method),
                    geoseg.Ensemble([geoseg.TTA(method), method]),
                    geoseg.Ensemble([geoseg.Ensemble([method, method]), method])):
        np.testing.assert_array_equal(geoseg.segment(raster, wrapped).values, alone)
