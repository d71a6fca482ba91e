"""Bounds of the threshold methods: multi-Otsu's bins x bins table on wide integer ranges, manual
thresholds outside what the input's dtype holds, and a LocalThreshold's block_size."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
from skimage.filters import threshold_multiotsu

from geoseg.errors import BudgetError, MethodParameterError
from geoseg.methods import LocalThreshold, Threshold, fit_threshold
from geoseg.methods.threshold import check_in_range, check_manual_in_range, group_values


def spanning(span: int, shape: tuple[int, int] = (200, 200), seed: int = 0) -> np.ndarray:
    """A uint16 image of random values in ``[0, span)``, both ends present."""
    image = np.random.default_rng(seed).integers(0, span, shape).astype(np.uint16)
    image[0, 0], image[0, 1] = 0, span - 1
    return image


def raster(image: np.ndarray) -> xr.DataArray:
    return xr.DataArray(image[None], dims=("band", "y", "x"))


FIT_IN_SUBPROCESS = """
import json, resource, sys
from tests.methods.test_threshold_bounds import raster, spanning
from geoseg.methods import fit_threshold
span, nbins = int(sys.argv[1]), (None if sys.argv[2] == "none" else int(sys.argv[2]))
image = raster(spanning(span))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    found = list(fit_threshold(image, "multiotsu", classes=3, nbins=nbins).thresholds)
except Exception as error:
    found = f"{type(error).__name__}: {error}"
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"found": found, "grown_kib": grown}))
"""


def fit_in_subprocess(span: int, nbins: int | None) -> dict:
    """A multi-Otsu fit in a fresh process: its result, and how far it raised the peak RSS."""
    done = subprocess.run([sys.executable, "-c", FIT_IN_SUBPROCESS, str(span), str(nbins).lower()],
                          capture_output=True, text=True, timeout=300, check=True)
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("span", [1 << 14, 1 << 16])
def test_multiotsu_on_a_wide_uint16_range_is_refused_before_its_table(span):
    """One bin per value made scikit-image's table bins x bins: 540 MB for 2**14 values, 8.6 GB
    for a full-range uint16 image, in the client process."""
    result = fit_in_subprocess(span, None)
    assert result["found"].startswith("BudgetError: the multiotsu threshold on the only band has "
                                      f"{span} bins"), result
    assert "(GEOSEG_MAX_MULTIOTSU_BINS)" in result["found"] and "Pass nbins" in result["found"]
    assert result["grown_kib"] < 100 * 1024, result


def test_multiotsu_with_nbins_on_full_range_uint16_stays_in_bounded_memory():
    result = fit_in_subprocess(1 << 16, 256)
    assert isinstance(result["found"], list) and len(result["found"]) == 2, result
    assert result["grown_kib"] < 100 * 1024, result


def test_nbins_groups_integer_values_as_scikit_image_would_on_those_bins():
    image = spanning(1 << 14)
    fitted = fit_threshold(raster(image), "multiotsu", classes=3, nbins=256)
    values, counts = np.unique(image, return_counts=True)
    full = np.zeros(1 << 14, np.int64)
    full[values] = counts
    grouped, centers = group_values(full, np.arange(1 << 14), 256)
    assert grouped.size == 256 and grouped.sum() == image.size
    expected = threshold_multiotsu(hist=(grouped / grouped.sum(), centers), classes=3)
    assert fitted.thresholds == tuple(expected)


@pytest.mark.parametrize("classes", [3, 4])
@pytest.mark.parametrize("seed", [0, 1])
def test_8_bit_multiotsu_stays_exact_against_scikit_image(classes, seed, monkeypatch):
    monkeypatch.setenv("GEOSEG_MAX_MULTIOTSU_BINS", "256")  # 8 bits fit the tightest budget
    rng = np.random.default_rng(seed)
    image = np.concatenate([rng.normal(m, 12, 3000) for m in (40, 120, 200)]).clip(0, 255)
    image = image.astype(np.uint8).reshape(90, 100)
    image[0, :2] = 0, 255
    for nbins in (None, 256):
        fitted = fit_threshold(raster(image), "multiotsu", classes=classes, nbins=nbins)
        assert fitted.thresholds == tuple(threshold_multiotsu(image, classes=classes))


def test_raising_the_bins_budget_gives_the_exact_thresholds(monkeypatch):
    image = spanning(5000)
    monkeypatch.setenv("GEOSEG_MAX_MULTIOTSU_BINS", "4096")
    with pytest.raises(BudgetError, match=r"has 5000 bins.*the limit is 4096"):
        fit_threshold(raster(image), "multiotsu", classes=3)
    monkeypatch.setenv("GEOSEG_MAX_MULTIOTSU_BINS", "5000")
    fitted = fit_threshold(raster(image), "multiotsu", classes=3)
    assert fitted.thresholds == tuple(threshold_multiotsu(image, classes=3))


# -- manual thresholds and the input's dtype -------------------------------------------------


@pytest.mark.parametrize("value", [300, -5, 255])
def test_a_manual_threshold_leaving_a_class_empty_on_uint8_is_refused(value):
    """255 passed the job's check, yet with x > t no uint8 pixel is above it."""
    with pytest.raises(MethodParameterError, match=re.escape(
            f"thresholds: received [{float(value)}], but the only band of the raster (uint8) lies "
            f"in [0, 255], so [{float(value)}] would leave a class empty on every pixel (a pixel "
            "is above a threshold t when x > t); give thresholds in [0, 255)")):
        check_manual_in_range(Threshold((value,)), np.uint8)


@pytest.mark.parametrize("value", [1.0, 1.5, -0.5])
def test_a_manual_threshold_leaving_a_class_empty_on_a_bool_mask_is_refused(value):
    """A mask's pixels are 0 and 1: Threshold((1.0,)) put every pixel in class 0, unrefused."""
    with pytest.raises(MethodParameterError, match=re.escape(
            f"the only band of the raster (bool) lies in [0, 1], so [{value}] would leave a class "
            "empty on every pixel")):
        check_manual_in_range(Threshold((value,)), np.bool_)
    check_manual_in_range(Threshold((0.5,)), np.bool_)


def test_the_range_follows_the_rule_that_places_equal_pixels():
    check_in_range(Threshold((0, 254.5)), np.uint8)
    check_in_range(Threshold((255,), equal_to_upper=True), np.uint8)  # x >= 255 holds on 255
    with pytest.raises(MethodParameterError, match=re.escape("x >= t); give thresholds in (0, 255]")):
        check_in_range(Threshold((0,), equal_to_upper=True), np.uint8)
    check_in_range(Threshold((1e9,)), np.float32)  # floats: no bound known
    check_manual_in_range(Threshold((300,), method="otsu"), np.uint8)  # fitted: from the data


def test_manual_thresholds_inside_an_ensemble_or_a_tta_are_checked():
    from geoseg.ensembles import TTA, Ensemble

    inside = Threshold((10,), class_names=("a", "b"))
    outside = Threshold((300,), class_names=("a", "b"))
    for wrapped in (Ensemble([inside, outside]), TTA(outside), TTA(Ensemble([inside, outside]))):
        with pytest.raises(MethodParameterError, match=r"received \[300.0\]"):
            check_manual_in_range(wrapped, np.uint8)
    check_manual_in_range(TTA(inside), np.uint8)


# -- LocalThreshold's block_size -------------------------------------------------------------


@pytest.mark.parametrize("value", [3.5, 3.0, True])
def test_local_threshold_refuses_a_block_size_that_is_not_a_whole_number(value):
    with pytest.raises(MethodParameterError, match=re.escape(
            f"block_size: received {value!r}; expected a whole number >= 1.")):
        LocalThreshold(value)


def test_local_threshold_takes_numpy_integers():
    assert LocalThreshold(np.int64(5)).halo == LocalThreshold(5).halo


def test_segment_refuses_a_manual_threshold_outside_the_rasters_range_as_a_job_does():
    import xarray as xr

    import geoseg

    image = xr.DataArray(np.arange(200, dtype=np.uint8).reshape(1, 10, 20), dims=("band", "y", "x"))
    for thresholds in ((300.0,), (255.0,)):
        with pytest.raises(MethodParameterError, match=r"lies in \[0, 255\].*give thresholds in "
                                                       r"\[0, 255\)"):
            geoseg.segment(image, Threshold(thresholds))  # before any compute
    assert geoseg.segment(image, Threshold((254.0,))).values.max() == 0  # 254 < x: none here


def test_a_multiotsu_search_of_too_many_combinations_is_refused_before_it_runs(monkeypatch):
    """scikit-image tries every choice of classes - 1 bins: 6 classes over uint8's 256 bins is
    8.8e9 tries (minutes), 7 classes hours. Grouped into fewer bins, the search is small."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(60, 70)).astype(np.uint8)
    image[0, :2] = 0, 255
    monkeypatch.setenv("GEOSEG_MAX_MULTIOTSU_SEARCH", "1e7")
    with pytest.raises(BudgetError, match=r"search for 5 classes over 256 bins tries 1.75e8 "
                                          r"threshold combinations.*GEOSEG_MAX_MULTIOTSU_SEARCH"
                                          r".*Pass nbins \(e.g. nbins=64"):
        fit_threshold(raster(image), "multiotsu", classes=5)
    assert len(fit_threshold(raster(image), "multiotsu", classes=5, nbins=32).thresholds) == 4
    assert fit_threshold(raster(image), "multiotsu", classes=3).thresholds == \
        tuple(threshold_multiotsu(image, classes=3))


@pytest.mark.parametrize("nbins", [0, 1, -3, 2.5, True, "abc", 10**11])
def test_nbins_that_is_no_bin_count_or_too_many_is_refused_before_any_histogram(nbins):
    image = np.arange(1000, dtype=np.uint16).reshape(25, 40)
    for method in ("otsu", "multiotsu"):
        with pytest.raises(MethodParameterError, match=r"nbins: received .*; expected a whole "
                                                       r"number from 2 to 1048576"):
            fit_threshold(raster(image), method, nbins=nbins)


def test_multiotsu_nbins_over_its_budget_is_refused_before_the_histogram(monkeypatch):
    monkeypatch.setenv("GEOSEG_MAX_MULTIOTSU_BINS", "512")
    image = np.linspace(0, 1, 1000, dtype=np.float32).reshape(25, 40)
    with pytest.raises(BudgetError, match=r"\(nbins=1000\) has 1000 bins.*the limit is 512"):
        fit_threshold(raster(image), "multiotsu", nbins=1000)
