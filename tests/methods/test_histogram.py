"""Histogram modes: grey levels and valleys of the global histogram, fitted chunk by chunk."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr
from skimage import filters

from geoseg.errors import MethodParameterError
from geoseg.methods import HistogramModes, find_modes, fit_histogram_modes
from tests.methods.rasters import memory_raster, photo, run_segment, zarr_raster


def fit(raster, **kwargs) -> HistogramModes:
    with dask.config.set(scheduler="sync"):
        return fit_histogram_modes(raster, **kwargs)


@pytest.mark.parametrize("name", ["coins", "camera"])
def test_two_modes_equal_threshold_minimum_on_the_whole_photo(tmp_path, name):
    image = photo(name)
    raster = zarr_raster(tmp_path, image)
    modes = fit(raster)
    assert modes.thresholds == (float(filters.threshold_minimum(image[0])),)
    np.testing.assert_array_equal(run_segment(raster, modes), image[0] > modes.thresholds[0])


def test_levels_are_the_peaks_and_the_larger_mode_is_the_background():
    rng = np.random.default_rng(0)
    image = np.full((1, 151, 233), 60, np.uint8)
    image[0, 40:90, 50:120] = 190  # a bright object, about 10% of the pixels
    image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    modes = fit(memory_raster(image))
    assert modes.levels[0] == pytest.approx(60, abs=3) and modes.levels[1] == pytest.approx(
        190, abs=3
    )
    assert modes.background_level == modes.levels[0] and modes.object_level == modes.levels[1]
    assert [c.name for c in modes.classes] == ["background", "object"]
    assert modes.fractions[1] == pytest.approx(50 * 70 / (151 * 233), abs=0.01)
    truth = np.zeros(image.shape[1:], bool)
    truth[40:90, 50:120] = True
    assert np.mean(run_segment(memory_raster(image), modes) == truth) > 0.999


def test_three_modes_of_a_float_raster():
    rng = np.random.default_rng(1)
    levels = np.array([0.1, 0.5, 0.85])
    image = levels[rng.integers(0, 3, (1, 97, 131))] + rng.normal(0, 0.03, (1, 97, 131))
    modes = fit(memory_raster(image), classes=3, nbins=128)
    width = (image.max() - image.min()) / 128
    np.testing.assert_allclose(modes.levels, levels, atol=3 * width + 0.02)
    assert [c.name for c in modes.classes] == ["mode_0", "mode_1", "mode_2"]
    counts, edges = np.histogram(image, bins=128)
    expected = find_modes(counts, (edges[:-1] + edges[1:]) / 2, classes=3)
    assert modes.thresholds == expected.thresholds  # same histogram, whole image vs chunks


def test_unimodal_histogram_is_explained():
    values = np.repeat(np.arange(100), np.arange(100, 0, -1))  # value v appears 100 - v times
    image = np.random.default_rng(2).permutation(values).astype(np.uint8).reshape(1, 101, 50)
    with pytest.raises(ValueError, match="1 mode.*not the 2 asked for.*fit_threshold"):
        fit(memory_raster(image))


def test_max_smoothing_below_one_is_refused_before_a_pixel_is_read():
    """No smoothing pass counted no mode at all: 'the histogram has 0 mode(s)', after a fit."""
    from geoseg.errors import MethodParameterError
    from tests.methods.rasters import unreadable_raster

    with pytest.raises(MethodParameterError, match="max_smoothing: received 0; expected a whole "
                                                   "number >= 1"):
        fit_histogram_modes(unreadable_raster(bands=1), max_smoothing=0)


@pytest.mark.parametrize("uncached", ["cache=False", "limit one byte below"])
def test_a_modes_fit_reads_each_chunk_once_when_the_raster_fits_the_cache(tmp_path, monkeypatch,
                                                                          uncached):
    from tests.methods.rasters import counted_reads

    image = photo("coins")[:, ::2, ::2]  # (1, 152, 192) uint8: 20 stored chunks of 40 x 40
    raster = zarr_raster(tmp_path, image)
    monkeypatch.setenv("GEOSEG_MAX_FIT_CACHE_BYTES", str(image.nbytes))  # just fits
    kwargs = {"cache": False} if uncached == "cache=False" else {}
    with dask.config.set(scheduler="threads"), counted_reads() as once:
        cached = fit_histogram_modes(raster)
    if not kwargs:
        monkeypatch.setenv("GEOSEG_MAX_FIT_CACHE_BYTES", str(image.nbytes - 1))
    with dask.config.set(scheduler="threads"), counted_reads() as each:
        plain = fit_histogram_modes(raster, **kwargs)
    assert len(once.chunks) == len(each.chunks) == 20
    assert set(once.chunks.values()) == {1}
    assert set(each.chunks.values()) == {2}  # the value range, then the histogram
    assert cached == plain


def test_a_modes_fit_asked_for_a_cache_over_the_limit_is_refused_before_a_read(monkeypatch):
    from geoseg.errors import BudgetError
    from tests.methods.rasters import unreadable_raster

    monkeypatch.setenv("GEOSEG_MAX_FIT_CACHE_BYTES", "1000")
    message = "the histogram modes of the mean of the bands would keep 12 KiB"
    with pytest.raises(BudgetError, match=message):
        fit_histogram_modes(unreadable_raster(), feature="mean", cache=True)


def test_a_constant_image_is_refused_as_one_spike_not_as_zero_modes():
    """scikit-image finds no two maxima either; the message said "0 mode(s)" for one population."""
    image = np.full((1, 64, 64), 100, np.uint8)
    with pytest.raises(RuntimeError):
        filters.threshold_minimum(image[0])
    with dask.config.set(scheduler="sync"), \
            pytest.raises(MethodParameterError, match="Every valid pixel has the value 100: the "
                                                      "histogram is one spike"):
        fit_histogram_modes(xr.DataArray(image, dims=("band", "y", "x")))
