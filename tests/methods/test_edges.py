"""Edge magnitudes and Canny, chunked, against scikit-image on the whole image."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import feature, filters

from geoseg.methods import Canny, EdgeMagnitude, canny_min_halo
from tests.conftest import textured_image
from tests.methods.rasters import memory_raster, photo, run_segment, zarr_raster

OPERATORS = ["sobel", "scharr", "prewitt"]


@pytest.mark.parametrize("operator", OPERATORS)
def test_magnitude_within_1e6_of_scikit_image_on_the_whole_photo(tmp_path, operator):
    image = photo("camera")
    magnitude = run_segment(
        zarr_raster(tmp_path, image), EdgeMagnitude(operator), output="probabilities"
    )
    expected = getattr(filters, operator)(image[0].astype(np.float64))
    assert magnitude.shape == (1,) + image.shape[1:]
    np.testing.assert_allclose(magnitude[0], expected, rtol=1e-6, atol=1e-6 * expected.max())


def test_magnitude_of_a_normalized_difference_and_thresholded_mask():
    image = textured_image(211, 167, bands=3, seed=8)
    a, b = image[0].astype(float), image[2].astype(float)
    ndiff = (a - b) / (a + b)  # no zero sums: textured_image is >= 1
    expected = filters.scharr(ndiff)
    raster = memory_raster(image)
    magnitude = run_segment(
        raster, EdgeMagnitude("scharr", feature=(1, 3)), output="probabilities"
    )[0]
    np.testing.assert_allclose(magnitude, expected, rtol=1e-6, atol=1e-6 * expected.max())
    threshold = float(np.percentile(expected, 80))
    mask = run_segment(raster, EdgeMagnitude("scharr", feature=(1, 3), threshold=threshold))
    exact = np.abs(expected - threshold) > 1e-6 * expected.max()  # float32 scores, ties aside
    np.testing.assert_array_equal(mask[exact], (expected > threshold)[exact])


def test_magnitude_needs_its_one_pixel_halo():
    image = photo("coins")
    expected = filters.sobel(image[0].astype(np.float64))
    without = run_segment(
        memory_raster(image), EdgeMagnitude("sobel"), output="probabilities", halo=0
    )[0]
    assert np.abs(without - expected).max() > 1.0  # tile seams show without the halo


def canny_agreement(image: np.ndarray, sigma: float, context: int, quantiles=(0.8, 0.92)) -> float:
    as_float = image[0].astype(np.float64)
    magnitude = np.hypot(*np.gradient(filters.gaussian(as_float, sigma, preserve_range=True)))
    low, high = np.quantile(magnitude, quantiles)
    expected = feature.canny(as_float, sigma, low, high)
    edges = run_segment(memory_raster(image), Canny(low, high, sigma=sigma, context=context))
    return float(np.mean(edges.astype(bool) == expected))


@pytest.mark.parametrize("name, sigma", [("camera", 1.0), ("coins", 2.0), ("coins", 3.0)])
def test_window_hysteresis_canny_is_close_to_scikit_image_above_the_minimum_halo(name, sigma):
    """Hysteresis inside each window: close, not exact (test_canny_exact.py has the exact path)."""
    image = photo(name)
    minimum = canny_min_halo(sigma)
    for context in (minimum, 2 * minimum):
        agreement = canny_agreement(image, sigma, context)
        print(
            f"canny {name} sigma={sigma} halo={context} (minimum {minimum}), 37 x 53 tiles: "
            f"{100 * agreement:.4f}% of pixels agree with skimage.feature.canny"
        )
        assert agreement >= 0.999


def test_canny_local_steps_are_exact_at_the_minimum_halo():
    """With low == high there is no hysteresis: only the local steps, which the halo makes exact."""
    image = photo("coins")
    as_float = image[0].astype(np.float64)
    for sigma in (1.0, 2.5):
        expected = feature.canny(as_float, sigma, 20.0, 20.0)
        edges = run_segment(
            memory_raster(image), Canny(20.0, 20.0, sigma=sigma, context=canny_min_halo(sigma))
        )
        np.testing.assert_array_equal(edges.astype(bool), expected)


def test_canny_parameters_are_checked():
    with pytest.raises(ValueError, match="below the minimum halo 10"):
        Canny(1.0, 2.0, sigma=2.0, context=4)
    with pytest.raises(ValueError, match="low_threshold <= high_threshold"):
        Canny(3.0, 2.0)
    with pytest.raises(ValueError, match="expected one of"):
        Canny(1.0, 2.0, hysteresis="global")
    assert Canny(1.0, 2.0, sigma=2.0).halo == (2 * canny_min_halo(2.0),) * 2
    assert Canny(1.0, 2.0, sigma=2.0, hysteresis="deferred").halo == (canny_min_halo(2.0),) * 2
