"""The classical methods refuse arguments of the wrong kind with a geoseg error saying what was
received and what is expected, never a raw TypeError or ValueError from inside NumPy."""

from __future__ import annotations

import re

import numpy as np
import pytest
import xarray as xr

from geoseg.errors import MethodParameterError
from geoseg.methods import fit_kmeans, fit_threshold
from geoseg.methods.features import Feature, as_feature
from geoseg.methods.kmeans import unfitted_kmeans


@pytest.fixture(scope="module")
def raster() -> xr.DataArray:
    image = np.random.default_rng(0).integers(0, 255, (3, 40, 40)).astype(np.uint8)
    return xr.DataArray(image, dims=("band", "y", "x")).chunk({"band": -1, "y": 20, "x": 20})


@pytest.mark.parametrize(("classes", "fragment"), [
    ("3", r"classes: received '3'; expected a whole number >= 2 \(this is text"),
    (3.0, r"classes: received 3.0; expected a whole number >= 2"),
    (True, r"classes: received True; expected a whole number >= 2"),
    (1, r"classes: received 1; expected a whole number >= 2"),
])
def test_fit_threshold_refuses_classes_that_are_no_whole_number(raster, classes, fragment):
    with pytest.raises(MethodParameterError, match=fragment):
        fit_threshold(raster.isel(band=[0]), "multiotsu", classes=classes)


@pytest.mark.parametrize("nodata", ["x", "0", [0], True])
def test_fit_threshold_refuses_a_nodata_that_is_no_number(raster, nodata):
    with pytest.raises(MethodParameterError, match=rf"nodata: received {re.escape(repr(nodata))}; expected a number"):
        fit_threshold(raster.isel(band=[0]), nodata=nodata)


def test_fit_threshold_still_takes_a_numeric_nodata(raster):
    assert fit_threshold(raster.isel(band=[0]), nodata=np.uint8(0)).n_classes == 2


def test_fit_kmeans_takes_one_band_number_as_a_list_of_one(raster):
    one = fit_kmeans(raster, 2, bands=2, n_init=1, max_iter=3)
    listed = fit_kmeans(raster, 2, bands=[2], n_init=1, max_iter=3)
    assert one.features == listed.features == (2,)
    assert one.centroids == listed.centroids
    assert unfitted_kmeans(("a", "b", "c"), 2, bands=np.int64(3)).features == (3,)


@pytest.mark.parametrize("bands", ["2", [2.5], [True], {"b": 1}])
def test_fit_kmeans_refuses_bands_that_are_no_band_numbers(raster, bands):
    with pytest.raises(MethodParameterError,
                       match=r"bands: received .*; expected a list of 1-based band numbers"):
        fit_kmeans(raster, 2, bands=bands, n_init=1)


@pytest.mark.parametrize("spec", [(2, 2), (np.int64(1), 1)])
def test_a_normalized_difference_of_a_band_with_itself_is_refused(spec):
    with pytest.raises(MethodParameterError, match=r"feature: received the pair \(\d, \d\), "
                                                   r"\(b\d - b\d\) / \(b\d \+ b\d\), 0 everywhere; "
                                                   r"expected two different bands"):
        as_feature(spec)
    with pytest.raises(MethodParameterError, match=r"expected two different bands"):
        Feature.ndiff(*spec)


@pytest.mark.parametrize(("spec", "shown"), [((1.5, 2), "1.5"), ((2, 1.0), "1.0"), ((True, 2), "True"),
                                             (("2", 1), "'2'")])
def test_a_feature_refuses_band_numbers_that_are_not_whole(spec, shown):
    with pytest.raises(MethodParameterError, match=rf"feature: received band number {re.escape(shown)} "
                                                   r"\(\w+\); expected a whole number >= 1"):
        as_feature(spec)


def test_a_feature_still_takes_numpy_band_numbers():
    assert as_feature((np.int64(4), np.uint8(3))) == Feature.ndiff(4, 3) == Feature("ndiff", (4, 3))
    assert Feature.band(np.int32(2)).bands == (2,)
