"""int64 and uint64 bands beyond 2**53, where float64 rounds their values: manual thresholds
compare exactly with the numbers given, and histogram fits on a narrow span of huge values get
one bin per value, as scikit-image's on the same values shifted to 0.

References are independent of geoseg: Python's own integer comparison (exact at any size), and
scikit-image on the shifted values (small integers), its thresholds shifted back.
"""

from __future__ import annotations

import math

import dask
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage import data as skdata
from skimage import filters

import geoseg
from geoseg.errors import MethodParameterError
from geoseg.methods import Threshold, fit_threshold
from tests.methods.rasters import memory_raster, zarr_raster

INT64 = (-(2**63), 2**63 - 1)
UINT64 = (0, 2**64 - 1)


def python_classes(values: list[int], thresholds: list[int | float], upper: bool = False) -> list:
    """How many thresholds are below each value, in Python's exact integer arithmetic."""
    return [sum((v >= t) if upper else (v > t) for t in thresholds) for v in values]


def segmented(image: np.ndarray, segmenter, chunks: int | None = None) -> np.ndarray:
    """``geoseg.segment`` on ``image`` (y, x): dask chunks of ``chunks`` pixels, or whole."""
    raster = xr.DataArray(image, dims=("y", "x"))
    if chunks is not None:
        raster = raster.chunk({"y": chunks, "x": chunks})
    with dask.config.set(scheduler="sync"):
        return geoseg.segment(raster, segmenter, chunks=chunks or image.shape[0]).values


def every_way(image: np.ndarray, segmenter) -> list[np.ndarray]:
    """Classes of ``image`` by the method directly, and segmented whole and in 2 x 2 chunks."""
    direct = segmenter.predict_image(image[None]).argmax(axis=0)
    return [direct, segmented(image, segmenter), segmented(image, segmenter, image.shape[0] // 2)]


def test_manual_thresholds_between_huge_uint64_values_are_exact():
    """2**63 + 100 and 2**63 + 1500 are one float64: the threshold 2**63 + 1500 kept them
    together."""
    image = np.array([[2**63 + 100, 2**63 + 3000]], np.uint64).repeat(2, axis=0)
    for out in every_way(image, Threshold(thresholds=[2**63 + 1500])):
        np.testing.assert_array_equal(out, [[0, 1], [0, 1]])


def test_a_threshold_just_below_the_uint64_maximum_is_accepted_and_exact():
    """2**64 - 1000 was rounded to 2**64 (above every uint64) and refused as leaving a class
    empty; it is below every pixel here."""
    image = (np.uint64(2**64 - 1) - np.arange(16, dtype=np.uint64)).reshape(4, 4)
    thresholds = [2**64 - 1000, 2**64 - 9]
    expected = np.array(python_classes(image.ravel().tolist(), thresholds)).reshape(4, 4)
    assert sorted(set(expected.ravel().tolist())) == [1, 2]
    for out in every_way(image, Threshold(thresholds=thresholds)):
        np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(("dtype", "t", "shown"), [
    (np.int64, 2**63 - 1, (r"lies in \[-9223372036854775808, 9223372036854775807\], so "
                           r"\[9223372036854775807\]")),
    (np.uint64, 2**64 - 1, r"lies in \[0, 18446744073709551615\], so \[18446744073709551615\]"),
    (np.int64, -(2**63) - 1, r"so \[-9223372036854775809\]"),
])
def test_thresholds_at_the_64_bit_ends_are_refused_with_their_exact_values(dtype, t, shown):
    """A threshold at the dtype's maximum leaves the class above empty: refused, the numbers
    printed as given, not rounded to 9.223372036854776e+18."""
    image = np.full((4, 4), np.iinfo(dtype).max, dtype)
    with pytest.raises(MethodParameterError, match=shown):
        segmented(image, Threshold(thresholds=[t]))


def test_a_threshold_one_below_the_int64_maximum_splits_it_off():
    image = np.array([[2**63 - 2, 2**63 - 1], [-(2**63), 0]], np.int64)
    for out in every_way(image, Threshold(thresholds=[2**63 - 2])):
        np.testing.assert_array_equal(out, [[0, 1], [0, 0]])


def near(end: int, sign: int) -> st.SearchStrategy[int]:
    """Integers within 2**12 of ``end``, on the side ``sign`` points to (inside the dtype)."""
    return st.integers(0, 2**12).map(lambda d: end + sign * d)


def extreme_values(bounds: tuple[int, int]) -> st.SearchStrategy[int]:
    low, high = bounds
    below_zero = [near(-(2**53), -1)] if low < 0 else []
    return st.one_of(near(low, 1), near(high, -1), near(2**53, 1), *below_zero,
                     st.integers(low, high))


@pytest.mark.parametrize(("dtype", "bounds"), [(np.int64, INT64), (np.uint64, UINT64)])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_manual_thresholds_classify_as_python_integers_do(dtype, bounds, data):
    """Values near both ends of the dtype and near 2**53, thresholds near them (integers, or a
    float in between): the classes of Python's exact comparison, by the method, whole and in
    chunks, with either rule for a value equal to a threshold."""
    values = data.draw(st.lists(extreme_values(bounds), min_size=16, max_size=16))
    picks = data.draw(st.lists(st.sampled_from(values), min_size=1, max_size=3, unique=True))
    shifts = data.draw(st.lists(st.sampled_from([-1, 0, 0.5]), min_size=len(picks),
                                max_size=len(picks)))
    thresholds = sorted({p + s if isinstance(s, int) else float(p) + s
                         for p, s in zip(picks, shifts)})
    upper = data.draw(st.booleans())
    image = np.array(values, dtype).reshape(4, 4)
    try:
        segmenter = Threshold(thresholds=thresholds, equal_to_upper=upper)
    except MethodParameterError:  # two floats that rounded to one
        return
    expected = np.array(python_classes(values, thresholds, upper)).reshape(4, 4)
    low, high = bounds
    empty = [t for t in thresholds if not (low < t <= high if upper else low <= t < high)]
    if empty:  # a class empty on every raster of this dtype: refused
        with pytest.raises(MethodParameterError, match="would leave a class empty"):
            segmented(image, segmenter)
        return
    for out in every_way(image, segmenter):
        np.testing.assert_array_equal(out, expected)


# -- fits on narrow spans of huge values ----------------------------------------------------------

CAMERA = skdata.camera()[::4, ::4]  # (128, 128) uint8


def skimage_thresholds(method: str, image: np.ndarray) -> list[float]:
    if method == "multiotsu":
        return list(filters.threshold_multiotsu(image, 3))
    return [float(getattr(filters, f"threshold_{method}")(image))]


def shifted(t: float, offset: int, upper: bool) -> int:
    """A threshold found on values shifted by ``offset``, back among the huge integers: the
    integer that splits them alike."""
    return (math.ceil(t) if upper else math.floor(t)) + offset


@pytest.mark.parametrize("method", ["otsu", "li", "yen", "triangle", "isodata", "minimum",
                                    "mean", "multiotsu"])
@pytest.mark.parametrize(("dtype", "offset"), [(np.int64, 2**62), (np.int64, -(2**63)),
                                               (np.uint64, 2**64 - 256)])
def test_histogram_fits_on_huge_values_of_a_narrow_span_equal_scikit_image_shifted(
        tmp_path, method, dtype, offset):
    """The camera's values plus 2**62 (or from the int64 minimum, or up to the uint64
    maximum): one bin per value, scikit-image's thresholds on the camera itself shifted back,
    and the camera's own classes, from a Zarr store."""
    image = (CAMERA.astype(object) + offset).astype(dtype)[None]
    upper = method == "multiotsu"
    raster = zarr_raster(tmp_path, image)
    with dask.config.set(scheduler="sync"):
        fitted = fit_threshold(raster, method, classes=3 if upper else 2)
        out = geoseg.segment(raster, fitted, chunks=64).values
    reference = skimage_thresholds(method, CAMERA)
    assert list(fitted.thresholds) == [shifted(t, offset, upper) for t in reference]
    expected = np.digitize(CAMERA, reference) if upper else CAMERA > reference[0]
    np.testing.assert_array_equal(out, expected)


@settings(max_examples=15, deadline=None)
@given(offset=st.one_of(st.integers(-(2**63), -(2**63) + 2**12), st.integers(2**53, 2**63 - 300)),
       seed=st.integers(0, 2**16))
def test_otsu_on_shifted_random_integers_is_scikit_images_shifted(offset, seed):
    """Any offset in int64 beyond 2**53: Otsu's threshold is scikit-image's on the small values,
    plus the offset, exactly."""
    rng = np.random.default_rng(seed)
    small = np.concatenate([rng.integers(0, 120, 512), rng.integers(100, 256, 512)]).reshape(32, 32)
    if np.unique(small).size < 2:
        return
    image = (small.astype(object) + offset).astype(np.int64)
    with dask.config.set(scheduler="sync"):
        fitted = fit_threshold(memory_raster(image[None], chunks=(16, 16)), "otsu")
    assert fitted.thresholds == (shifted(filters.threshold_otsu(small), offset, False),)


@pytest.mark.parametrize(("dtype", "offset"), [(np.int64, 2**62), (np.uint64, 2**64 - 256)])
def test_histogram_modes_on_huge_values_are_refused_not_rounded_together(dtype, offset):
    """Histogram modes compute with the bins' values in float64: beyond 2**53 they would round
    the camera's 256 values to one (a threshold at the offset, levels equal); refused, saying
    the exact span and how to shift it."""
    from geoseg.methods import fit_histogram_modes

    image = (CAMERA.astype(object) + offset).astype(dtype)
    low, high = int(CAMERA.min()) + offset, int(CAMERA.max()) + offset
    with pytest.raises(MethodParameterError, match=rf"span {low} to {high}: .*"
                                                   rf"Subtract an offset .*its minimum, {low}"):
        fit_histogram_modes(xr.DataArray(image, dims=("y", "x")))


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.uint64])
def test_a_threshold_at_the_dtypes_largest_value_takes_it_with_the_equal_to_upper_rule(dtype):
    """``x >= max`` holds for the largest value, where ``x > max`` holds for none (Hypothesis
    found the first taken as the second)."""
    from geoseg.methods.threshold import integer_above

    top = int(np.iinfo(dtype).max)
    values = np.array([top - 1, top], dtype)
    assert integer_above(values, top, equal_to_upper=True).tolist() == [False, True]
    assert integer_above(values, top, equal_to_upper=False).tolist() == [False, False]


@settings(max_examples=200, deadline=None)
@given(
    x=st.floats(allow_nan=False),
    t=st.one_of(st.integers(-(2**70), 2**70), st.integers().map(lambda n: n * 10**300),
                st.sampled_from([2**60 + 1, -(2**60) - 1, 10**400, -(10**400)])),
    upper=st.booleans(),
)
def test_whole_number_thresholds_on_float_values_compare_as_python_does(x, t, upper):
    """Python compares a float with an int exactly; NumPy rounded the int (``2**60 + 1``) or
    overflowed on one beyond float64 (``10**400``: an OverflowError traceback)."""
    from geoseg.methods.threshold import float_above

    for dtype in (np.float64, np.float32):
        value = float(dtype(x))
        got = float_above(np.array([value], dtype), t, upper)
        assert got.tolist() == [(value >= t) if upper else (value > t)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_thresholds_beyond_float64_classify_every_pixel_without_overflow(dtype):
    """``thresholds: [-10**400, 10**400]`` were checked with ``math.isnan``, which overflowed on
    such an int: a traceback for a valid (if odd) spec. Every pixel lies between them."""
    image = np.array([[0, 7], [200, -1e30]], dtype)
    for out in every_way(image, Threshold(thresholds=[-(10**400), 10**400])):
        np.testing.assert_array_equal(out, np.ones((2, 2)))


@pytest.mark.parametrize("dtype", [np.uint8, np.int64])
def test_thresholds_beyond_float64_on_an_integer_band_are_refused_in_a_few_digits(dtype):
    """Outside an integer band's range they leave a class empty: refused, as any such
    threshold, naming them as 1e+400 rather than in 401 digits."""
    image = np.array([[0, 7], [200, 100]], dtype)
    with pytest.raises(MethodParameterError) as caught:
        segmented(image, Threshold(thresholds=[-(10**400), 10**400]))
    message = str(caught.value)
    assert "[-1.00000e+400, 1.00000e+400]" in message and len(message) < 500, message


def test_unsorted_huge_thresholds_are_named_in_a_few_digits():
    with pytest.raises(MethodParameterError, match=r"got \[1.00000e\+400, 5\]"):
        Threshold(thresholds=[10**400, 5])
