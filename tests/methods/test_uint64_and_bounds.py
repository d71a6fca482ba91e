"""Review fixes: uint64 values from 2**63 up, and bounds on kernel sizes and fits' work."""

from __future__ import annotations

import re

import numpy as np
import pytest
import xarray as xr
from skimage import filters

import geoseg
from geoseg.errors import BudgetError, MethodParameterError
from geoseg.methods import (
    Canny,
    Cleanup,
    LocalThreshold,
    Threshold,
    fit_histogram_modes,
    fit_kmeans,
    fit_threshold,
)
from geoseg.methods.build import build_method
from geoseg.methods.kmeans import unfitted_kmeans
from geoseg.methods.params import check_params

pytestmark = pytest.mark.filterwarnings("ignore:the integer feature spans:UserWarning")


def _uint64_populations() -> np.ndarray:
    rng = np.random.default_rng(0)
    low = np.uint64(10**19) + rng.integers(0, 10**15, 2048).astype(np.uint64)
    high = np.uint64(12 * 10**18) + rng.integers(0, 10**15, 2048).astype(np.uint64)
    return np.concatenate([low, high]).reshape(64, 64)


@pytest.mark.parametrize(("method", "reference"), [
    ("otsu", lambda a: filters.threshold_otsu(a.astype(np.float64))),
    ("mean", lambda a: a.astype(np.float64).mean()),
])
def test_uint64_values_from_2_63_up_are_not_wrapped(method, reference):
    image = _uint64_populations()
    expected = reference(image)
    fitted = fit_threshold(xr.DataArray(image, dims=("y", "x")), method)
    assert fitted.thresholds[0] == pytest.approx(expected, rel=1e-12)
    mask = geoseg.segment(xr.DataArray(image, dims=("y", "x")), fitted).values
    np.testing.assert_array_equal(mask, image.astype(np.float64) > fitted.thresholds[0])
    assert np.count_nonzero(mask) == 2048


def test_uint64_values_close_to_2_64_fit_without_overflow():
    image = (np.uint64(2**64 - 1) - np.arange(64 * 64, dtype=np.uint64) * 2**20).reshape(64, 64)
    fitted = fit_threshold(xr.DataArray(image, dims=("y", "x")), "mean")
    assert fitted.thresholds[0] == pytest.approx(image.astype(np.float64).mean(), rel=1e-12)


@pytest.mark.parametrize("fit", [lambda x: fit_threshold(x, "otsu"), fit_histogram_modes])
@pytest.mark.parametrize("values", [(-1.7e308, 1.7e308), (2.0**64, 2.0**64 + 2**13)])
def test_values_float64_cannot_bin_are_a_method_error_saying_so(fit, values):
    image = np.random.default_rng(0).normal(0, 1, (64, 64)) if values[0] < 0 else np.full(
        (64, 64), values[0])
    image[0, :2] = values
    with pytest.raises(MethodParameterError, match=r"cannot split .* pass fewer nbins"):
        fit(xr.DataArray(image, dims=("y", "x")))


@pytest.mark.parametrize(("build", "parameter"), [
    (lambda: LocalThreshold(5, param=1e7), "param=1e+07"),
    (lambda: LocalThreshold(100001, "median"), "block_size=100001"),
    (lambda: Canny(10, 20, sigma=1e8), "sigma=1e+08"),
    (lambda: Canny(10, 20, context=10**6), "context=1000000"),
    (lambda: Cleanup(opening=2000), "opening=2000"),
    (lambda: Cleanup(closing=600), "closing=600"),
])
def test_kernels_wider_than_the_limit_are_refused_when_built(build, parameter):
    with pytest.raises(BudgetError, match=re.escape(parameter) + r" makes a kernel of .* pixels "
                       r"across.*the limit is 1025 \(GEOSEG_MAX_KERNEL\)"):
        build()


def test_the_kernel_limit_is_a_setting_and_leaves_usual_kernels_alone(monkeypatch):
    assert LocalThreshold(1025, "median").halo == (512, 512)
    assert Cleanup(opening=512).halo == 1024
    monkeypatch.setenv("GEOSEG_MAX_KERNEL", "1e9")
    assert LocalThreshold(5, param=1e7).halo == (40_000_000, 40_000_000)


@pytest.mark.parametrize(("method", "params"), [("local", {"param": 1e12}),
                                                ("canny", {"sigma": 1e12})])
def test_a_job_method_with_a_huge_kernel_is_refused_before_compute(method, params):
    with pytest.raises(BudgetError, match="GEOSEG_MAX_KERNEL"):
        build_method(method, {**params, **({"low_threshold": 1, "high_threshold": 2}
                                           if method == "canny" else {"block_size": 5})})


def _wide_int32() -> xr.DataArray:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(200_000, 60_000, 2048), rng.normal(800_000, 60_000, 2048)])
    return xr.DataArray(values.clip(0, 1_000_000).astype(np.int32).reshape(64, 64), dims=("y", "x"))


@pytest.mark.parametrize("fit", [fit_histogram_modes, lambda x, **kw: fit_threshold(
    x, "minimum", **kw)])
def test_smoothing_a_histogram_of_a_million_bins_stops_at_the_limit(fit, monkeypatch):
    monkeypatch.setenv("GEOSEG_MAX_SMOOTHING", "1e7")
    with pytest.raises(BudgetError, match=r"after 10 smoothing passes .*GEOSEG_MAX_SMOOTHING.*"
                                          r"Pass nbins"):
        fit(_wide_int32())
    assert fit(_wide_int32(), nbins=256).thresholds[0] == pytest.approx(441401.0)


@pytest.mark.parametrize(("params", "message"), [
    ({"n_init": 10**8}, r"n_init: received 100000000; expected a whole number >= 1, at most 1000"),
    ({"sample_size": 10**9}, r"sample_size: received 1000000000; expected a whole number >= 1, at most"),
    ({"class_names": ["a", "a"]}, r"class_names: received \['a', 'a'\].*more than one class"),
])
def test_kmeans_starts_sample_and_names_are_bounded(params, message):
    image = np.random.default_rng(0).integers(0, 255, (2, 32, 32)).astype(np.uint8)
    with pytest.raises(MethodParameterError, match=message):
        fit_kmeans(image, 2, **params)
    with pytest.raises(MethodParameterError, match=message):
        check_params(params, "model.params") if "class_names" not in params else \
            unfitted_kmeans(("b1", "b2"), 2, **params)


@pytest.mark.parametrize(("build", "message"), [
    (lambda: Threshold(["a"]), r"strictly increasing numbers.*got \['a'\]"),
    (lambda: Threshold([[1, 2], [3, 4]]), r"got \[\[1, 2\], \[3, 4\]\]"),
    (lambda: Threshold(None), r"strictly increasing numbers.*got \[None\]"),
    (lambda: Threshold([9], class_names=["a", "a"]), r"more than one class \['a'\]"),
    (lambda: Canny(None, None), r"received low_threshold=None; .*canny_params"),
    (lambda: Canny(10, 20, sigma="1"), r"sigma: received '1'"),
    (lambda: Cleanup(opening="2"), r"Cleanup opening: received '2'; expected a whole number"),
    (lambda: Cleanup(opening=None), r"Cleanup opening: received None"),
    (lambda: Cleanup(opening=float("nan")), r"Cleanup opening: received nan"),
    (lambda: Cleanup(max_object_size=2.7), r"Cleanup max_object_size: received 2.7"),
    (lambda: LocalThreshold(11, offset=float("nan")), r"offset: received nan"),
    (lambda: LocalThreshold(11, offset=float("inf")), r"offset: received inf; expected a finite"),
])
def test_bad_parameters_are_method_errors_naming_them(build, message):
    with pytest.raises(MethodParameterError, match=message):
        build()


def test_good_parameters_still_build():
    assert Threshold(np.array([1, 2])).thresholds == (1.0, 2.0)
    assert Threshold(5).thresholds == (5.0,)
    assert Cleanup(opening=np.int64(2)).opening == 2
    assert Canny(1, 2, sigma=2).halo == (20, 20)
