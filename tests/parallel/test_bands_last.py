"""An image whose bands are its last axis, (y, x, band) as numpy, PIL and most image tools hold
it, is not read as hundreds of bands of a raster 3 pixels wide: opening it, fitting it or
segmenting it says how to name or move its axes, and named axes are read as named."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr

import geoseg
from geoseg.core.segmenter import bands_last
from geoseg.errors import ParameterError, PlanError, UnsupportedFormatError
from geoseg.methods import fit_kmeans, fit_threshold
from tests.conftest import textured_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A (y, x, band) uint8 image."""
    return np.moveaxis(textured_image(48, 40), 0, -1).copy()


@pytest.mark.parametrize("shape, expected", [
    ((48, 40, 3), True), ((512, 512, 4), True), ((300, 200, 1), True),
    ((3, 48, 40), False), ((4, 512, 512), False), ((200, 64, 64), False),
    ((48, 40, 5), False),  # five bands last stay ambiguous: read as written
    ((12, 40, 3), False), ((2, 16, 16), False), ((16, 16), False), ((3, 16, 16, 16), False),
])
def test_bands_last_is_told_by_the_shape(shape, expected):
    assert bands_last(shape) is expected


def test_fits_refuse_an_array_with_its_bands_last_and_say_how_to_move_them(image):
    for fit in (lambda a: fit_kmeans(a, k=2), lambda a: fit_threshold(a, "otsu", feature=1)):
        with pytest.raises(PlanError, match=r"shape \(48, 40, 3\).*48 bands of 40 x 3 pixels.*"
                                            r"np\.moveaxis\(array, -1, 0\)"):
            fit(image)


def test_fits_read_named_axes_with_the_bands_last(image):
    last = fit_kmeans(xr.DataArray(image, dims=("y", "x", "band")), k=2, seed=0)
    first = fit_kmeans(np.moveaxis(image, -1, 0), k=2, seed=0)
    np.testing.assert_allclose(sorted(last.centroids), sorted(first.centroids))
    assert len(last.centroids[0]) == 3


def test_segment_refuses_bands_last_data_named_band_first(image, model_path):
    wrong = xr.DataArray(image, dims=("band", "y", "x"))
    with pytest.raises(ParameterError, match=r"shape \(48, 40, 3\): 48 bands.*dims=\(\"y\", \"x\", \"band\"\)"):
        geoseg.segment(wrong, model_path)


def test_segment_given_the_bare_array_names_the_bands_last_fix(image, model_path):
    with pytest.raises(ParameterError, match=r"its last axis looks like its bands: "
                                             r"xr\.DataArray\(arr, dims=\(\"y\", \"x\", \"band\"\)\)"):
        geoseg.segment(image, model_path)


def test_segment_reads_named_axes_with_the_bands_last(image, model_path):
    model = geoseg.load_model(model_path, device="cpu")
    last = geoseg.segment(xr.DataArray(image, dims=("y", "x", "band")), model).values
    first = geoseg.segment(xr.DataArray(np.moveaxis(image, -1, 0), dims=("band", "y", "x")), model).values
    np.testing.assert_array_equal(last, first)


def test_an_unnamed_zarr_array_with_its_bands_last_is_refused_naming_the_fix(tmp_path, image):
    url = str(tmp_path / "rgb.zarr")
    zarr.create_array(url, shape=image.shape, chunks=(16, 16, 3), dtype="uint8")[:] = image
    with pytest.raises(UnsupportedFormatError, match=r"shape \(48, 40, 3\) and no dimension names.*"
                                                     r"48 bands of 40 x 3 pixels.*\[\"y\", \"x\", \"band\"\]"):
        geoseg.open_raster(url)
    named = str(tmp_path / "named.zarr")
    zarr.create_array(named, shape=image.shape, chunks=(16, 16, 3), dtype="uint8",
                      dimension_names=["y", "x", "band"])[:] = image
    np.testing.assert_array_equal(geoseg.open_raster(named).values, np.moveaxis(image, -1, 0))
