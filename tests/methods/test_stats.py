"""Distributed statistics: chunked equals whole-array NumPy; fits read one chunk per task."""

from __future__ import annotations

import re

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.errors import BandMismatchError, PlanError
from geoseg.methods import Feature, fit_threshold, global_histogram
from geoseg.methods.kmeans import init_task, step_task
from geoseg.methods.stats import Binning, histogram_task, range_task, raster_data
from tests.methods.rasters import lazy_raster, pixel_chunks_per_task, zarr_raster


def random_chunking(draw, n: int) -> tuple[int, ...]:
    """Arbitrary (unequal) chunk sizes summing to ``n``."""
    sizes, left = [], n
    while left:
        size = draw(st.integers(1, left))
        sizes.append(size)
        left -= size
    return tuple(sizes)


@st.composite
def chunked_arrays(draw, dtype: str):
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if dtype == "int":
        image = rng.integers(-300, 700, (1, h, w)).astype(np.int16)
    else:
        image = (rng.normal(0, 1, (1, h, w)) * 10 ** draw(st.integers(-3, 3))).astype(np.float64)
        image[rng.random(image.shape) < 0.1] = np.nan
    image[rng.random(image.shape) < 0.1] = -9999
    chunks = ((1,), random_chunking(draw, h), random_chunking(draw, w))
    return image, da.from_array(image, chunks=chunks)


def whole_valid(image: np.ndarray) -> np.ndarray:
    values = image[0][image[0] != -9999]
    return values[np.isfinite(values)]


@settings(max_examples=40, deadline=None)
@given(case=chunked_arrays("int"))
def test_integer_histogram_from_random_chunkings_equals_bincount_of_the_whole(case):
    image, data = case
    values = whole_valid(image).astype(np.int64)
    with dask.config.set(scheduler="sync"):
        if values.size == 0:
            with pytest.raises(PlanError, match="no valid pixel"):
                global_histogram(data, Feature(), nodata=-9999)
            return
        hist = global_histogram(data, Feature(), nodata=-9999)
    assert hist.binning.integer
    assert (hist.value_range.low, hist.value_range.high) == (values.min(), values.max())
    np.testing.assert_array_equal(hist.counts, np.bincount(values - values.min()))
    np.testing.assert_array_equal(hist.centers, np.arange(values.min(), values.max() + 1))


@settings(max_examples=40, deadline=None)
@given(case=chunked_arrays("float"), nbins=st.integers(2, 300))
def test_float_histogram_from_random_chunkings_equals_np_histogram_of_the_whole(case, nbins):
    image, data = case
    values = whole_valid(image)
    if values.size == 0:
        return
    with dask.config.set(scheduler="sync"):
        hist = global_histogram(data, Feature(), nbins=nbins, nodata=-9999)
    counts, edges = np.histogram(values, bins=nbins)
    assert not hist.binning.integer
    assert hist.value_range.count == values.size
    assert hist.value_range.total == pytest.approx(values.sum(), rel=1e-12, abs=1e-12)
    np.testing.assert_array_equal(hist.counts, counts)
    np.testing.assert_allclose(hist.binning.edges, edges, rtol=1e-15)


def test_normalized_difference_and_mean_features_match_numpy():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 1000, (3, 61, 47)).astype(np.uint16)
    image[:, 0, 0] = 0  # a + b == 0: 0/0, undefined and left out
    data = da.from_array(
        image, chunks=(1, 17, 23)
    )  # band axis chunked too: rechunked per spatial chunk
    a, b = image[2].astype(float), image[0].astype(float)
    ndiff = ((a - b) / np.where(a + b == 0, 1, a + b))[a + b != 0]
    with dask.config.set(scheduler="sync"):
        h_nd = global_histogram(data, Feature.ndiff(3, 1), nbins=50)
        h_mean = global_histogram(data, Feature.mean(), nbins=64)
    np.testing.assert_array_equal(h_nd.counts, np.histogram(ndiff, bins=50)[0])
    np.testing.assert_array_equal(
        h_mean.counts, np.histogram(image.astype(float).mean(0), bins=64)[0]
    )
    assert not h_mean.binning.integer  # the mean of integers is not an integer


def fit_graphs(raster: xr.DataArray) -> dict:
    rd = raster_data(raster)
    feature = Feature()
    return {
        "range": range_task(rd, feature),
        "histogram": histogram_task(rd, feature, Binning(0.0, 1.0, 256, False)),
        "kmeans init": init_task(rd, [0], 10_000, 0),
        "kmeans step": step_task(rd, [0], np.array([[0.2], [0.8]])),
    }


def test_fit_graphs_of_a_20k_raster_read_one_chunk_per_task():
    raster = lazy_raster(20_000, 2048)  # 1.6 GB as float32; only the graph is built here
    n_chunks = raster.data.npartitions
    for name, task in fit_graphs(raster).items():
        stats = pixel_chunks_per_task(task, raster)
        print(f"{name}: {stats}")
        assert stats["max_chunks_per_task"] == 1, name
        assert stats["reading_tasks"] == n_chunks, name  # each chunk read once, by its own task
        assert stats["max_fan_in"] <= 8, name  # a tree, not one task gathering every summary


def test_fit_graph_from_storage_reads_one_chunk_per_task(tmp_path):
    raster = zarr_raster(
        tmp_path, np.random.default_rng(0).integers(0, 255, (1, 130, 170), dtype=np.uint8)
    )
    for name, task in fit_graphs(raster).items():
        stats = pixel_chunks_per_task(task, raster)
        assert (
            stats["max_chunks_per_task"] == 1 and stats["reading_tasks"] == raster.data.npartitions
        ), name


def test_no_valid_pixel_and_bad_bands_fail_with_clear_messages():
    empty = np.full((1, 20, 20), 7, np.uint8)
    with (
        dask.config.set(scheduler="sync"),
        pytest.raises(PlanError, match="no valid pixel.*nodata"),
    ):
        fit_threshold(xr.DataArray(empty, dims=("band", "y", "x"), attrs={"nodata": 7}))
    three = xr.DataArray(np.zeros((3, 8, 8), np.uint8), dims=("band", "y", "x"))
    with pytest.raises(BandMismatchError, match=r"only band.*has 3 bands.*1 to 3.*feature=\(2, 1\)"):
        fit_threshold(three)
    grey_alpha = xr.DataArray(np.zeros((2, 8, 8), np.uint8), dims=("band", "y", "x"))
    with pytest.raises(BandMismatchError, match="alpha channel.*values in band 1") as refused:
        fit_threshold(grey_alpha)  # the advice named bands 4 and 3 whatever the input had
    assert not re.search(r"b[3-9]|feature=[3-9]", str(refused.value))
    with pytest.raises(BandMismatchError, match=r"band\(s\) \[5\].*has 3 band"):
        fit_threshold(three, feature=(5, 1))
    with pytest.raises(ValueError, match="feature='nir' is not understood"):
        fit_threshold(three, feature="nir")


@pytest.mark.parametrize("key", ["_FillValue", "missing_value", "fill_value", "nodata"])
def test_fits_leave_out_the_nodata_segment_leaves_out_whatever_attribute_declares_it(key):
    """rioxarray's open_rasterio keeps a GeoTIFF's nodata in _FillValue: segment() left those
    pixels out, the fits counted them (an Otsu threshold of 46 for scikit-image's 104)."""
    from skimage.filters import threshold_otsu

    from geoseg.methods import fit_histogram_modes, fit_kmeans

    rng = np.random.default_rng(3)
    image = np.concatenate([rng.normal(80, 10, (1, 40, 30)), rng.normal(170, 12, (1, 40, 30))],
                           axis=2).clip(1, 255).astype(np.uint8)
    image[:, :, :25] = 0  # the no-data edge of a scene
    raster = xr.DataArray(image, dims=("band", "y", "x"), attrs={key: 0})
    fitted = fit_threshold(raster, "otsu")
    assert fitted.thresholds == (threshold_otsu(image[image != 0]),)
    told = xr.DataArray(image, dims=("band", "y", "x"))
    modes = fit_histogram_modes(raster, 2)
    assert modes.thresholds == fit_histogram_modes(told, 2, nodata=0).thresholds
    centres = fit_kmeans(raster, 2, seed=1).centroids
    np.testing.assert_array_equal(centres, fit_kmeans(told, 2, nodata=0, seed=1).centroids)
    assert np.min(centres) > 40  # no centroid spent on the no-data pixels


def test_a_volume_named_z_y_x_is_one_band_to_the_fits_as_to_segment():
    """Its 20 planes were taken for 20 bands: k-means fitted 20-feature centroids, Otsu said
    "the raster has 20 bands", while segment() read the same array as a volume."""
    from skimage.filters import threshold_otsu

    from geoseg.methods import fit_kmeans

    volume = np.random.default_rng(4).normal(100, 30, (20, 24, 30)).clip(0, 255).astype(np.uint8)
    volume[5:12, 6:18, 8:20] += 80
    for dims, data in ((("z", "y", "x"), volume), (("y", "z", "x"), volume.transpose(1, 0, 2))):
        raster = xr.DataArray(data, dims=dims)
        assert fit_threshold(raster, "otsu").thresholds == (threshold_otsu(volume),)
        assert np.shape(fit_kmeans(raster, 2, seed=0).centroids) == (2, 1)
