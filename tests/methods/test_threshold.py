"""Global and local thresholds: chunked fit and apply against scikit-image on the whole image."""

from __future__ import annotations

import pickle
import re
from dataclasses import FrozenInstanceError

import dask
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi
from skimage import color, filters
from skimage import data as skdata
from skimage.util import img_as_ubyte

import geoseg
from geoseg.errors import BandMismatchError
from geoseg.methods import (
    Feature,
    LocalThreshold,
    Threshold,
    as_feature,
    fit_threshold,
    global_histogram,
    thresholds_from_histogram,
)
from geoseg.methods.threshold import LOCAL_METHODS, box_mean
from tests.conftest import textured_image
from tests.methods.rasters import memory_raster, photo, run_segment, zarr_raster

SINGLE = ["otsu", "li", "yen", "triangle", "isodata", "minimum", "mean"]


def skimage_threshold(method: str, image: np.ndarray, classes: int = 2) -> np.ndarray:
    if method == "multiotsu":
        return filters.threshold_multiotsu(image, classes=classes)
    return np.atleast_1d(getattr(filters, f"threshold_{method}")(image))


def fit(raster, method: str, **kwargs) -> Threshold:
    with dask.config.set(scheduler="sync"):
        return fit_threshold(raster, method, **kwargs)


def all_methods(raster, nbins: int = 256) -> dict[tuple[str, int], tuple[float, ...]]:
    """Every method's thresholds from one distributed histogram (fit_threshold does one)."""
    with dask.config.set(scheduler="sync"):
        hist = global_histogram(raster, Feature(), nbins)
    cases = [(m, 2) for m in SINGLE] + [("multiotsu", 3), ("multiotsu", 4)]
    return {(m, k): thresholds_from_histogram(hist, m, k) for m, k in cases}


@pytest.fixture(scope="module")
def uint16_image() -> np.ndarray:
    """A synthetic 12-bit-like uint16 raster with sides that are multiples of nothing."""
    base = textured_image(203, 157, bands=1, seed=5).astype(np.uint16) * 3 + 400
    return base


@pytest.mark.parametrize("name", ["coins", "camera"])
def test_integer_thresholds_equal_scikit_image_on_the_whole_photo(tmp_path, name):
    image = photo(name)
    for (method, classes), thresholds in all_methods(zarr_raster(tmp_path, image)).items():
        expected = skimage_threshold(method, image[0], classes)
        assert thresholds == tuple(float(t) for t in expected), (method, classes)


def test_integer_thresholds_equal_scikit_image_on_uint16(uint16_image):
    for (method, classes), thresholds in all_methods(memory_raster(uint16_image)).items():
        expected = skimage_threshold(method, uint16_image[0], classes)
        assert thresholds == tuple(float(t) for t in expected), (method, classes)
    assert fit(memory_raster(uint16_image), "li").thresholds == (
        filters.threshold_li(uint16_image[0]),
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_thresholds_within_one_bin_width(dtype):
    rng = np.random.default_rng(1)
    image = (photo("camera") / 255.0 + rng.normal(0, 0.02, (1, 512, 512))).astype(dtype)
    bin_width = (float(image.max()) - float(image.min())) / 256
    for (method, classes), thresholds in all_methods(memory_raster(image)).items():
        expected = skimage_threshold(method, image[0], classes)
        diff = np.abs(np.array(thresholds) - expected) / bin_width
        print(
            f"{np.dtype(dtype).name} {method} ({classes} classes): "
            f"|difference| = {diff.max():.3g} bin widths"
        )
        assert np.all(diff <= 1.0), method


@pytest.mark.parametrize("source", ["zarr", "memory"])
def test_chunked_otsu_mask_equals_whole_image(tmp_path, source):
    image = photo("coins")
    raster = zarr_raster(tmp_path, image) if source == "zarr" else memory_raster(image)
    otsu = fit(raster, "otsu")
    mask = run_segment(raster, otsu)
    np.testing.assert_array_equal(mask, image[0] > filters.threshold_otsu(image[0]))
    probabilities = run_segment(raster, otsu, output="probabilities")
    np.testing.assert_array_equal(probabilities.argmax(0), mask)


def grey_photo(name: str) -> np.ndarray:
    """camera, coins, or astronaut as 8-bit grey (``img_as_ubyte(rgb2gray(...))``), ``(1, y, x)``."""
    if name == "astronaut":
        return img_as_ubyte(color.rgb2gray(skdata.astronaut()))[None]
    return photo(name)


@pytest.mark.parametrize("name", ["camera", "coins", "astronaut"])
def test_multiotsu_masks_equal_scikit_image(name):
    """scikit-image applies multi-Otsu with np.digitize(image, thresholds): equal goes up."""
    image = grey_photo(name)
    for classes in (3, 4):
        thresholds = filters.threshold_multiotsu(image[0], classes=classes)
        expected = np.digitize(image[0], bins=thresholds)
        assert np.isin(image[0], thresholds).any()  # pixels on a threshold: the convention matters
        for chunks in ((37, 53), (128, 512), (image.shape[1], image.shape[2])):
            raster = memory_raster(image, chunks)
            fitted = fit(raster, "multiotsu", classes=classes)
            assert fitted.thresholds == tuple(float(t) for t in thresholds)
            masks = run_segment(raster, fitted, chunks=chunks, tile=chunks)
            np.testing.assert_array_equal(masks, expected, err_msg=f"{name} {classes} {chunks}")
    assert [c.name for c in fitted.classes] == ["class_0", "class_1", "class_2", "class_3"]


def test_nodata_nan_and_infinite_pixels_are_excluded_from_the_fit_and_marked_in_the_output():
    image = photo("coins").astype(np.float32)
    image[:, 40:90, 100:200] = -1.0  # nodata
    image[:, 200:210, :] = np.nan
    image[:, 20, 30], image[:, 250, 40] = np.inf, -np.inf
    raster = memory_raster(image, nodata=-1.0)
    valid = (image[0] != -1.0) & np.isfinite(image[0])
    fitted = fit(raster, "otsu", nbins=256)
    expected = filters.threshold_otsu(image[0][valid])
    assert fitted.thresholds == (pytest.approx(expected, abs=1e-4),)  # float32 image, float64 fit
    classes = run_segment(raster, fitted)
    np.testing.assert_array_equal(classes[~valid], 255)
    np.testing.assert_array_equal(classes[valid], (image[0] > fitted.thresholds[0])[valid])


def test_normalized_difference_and_band_mean_features():
    image = textured_image(211, 167, bands=3, seed=2)
    raster = memory_raster(image)
    a, b = image[2].astype(float), image[1].astype(float)
    ndiff = np.where(a + b == 0, 0.0, (a - b) / np.where(a + b == 0, 1, a + b))
    for feature, values in (((3, 2), ndiff), ("mean", image.astype(float).mean(0)), (2, image[1])):
        fitted = fit(raster, "otsu", feature=feature)
        expected = filters.threshold_otsu(values)
        width = 1.0 if feature == 2 else (values.max() - values.min()) / 256
        assert abs(fitted.thresholds[0] - expected) <= width, feature
        if feature == 2:
            assert fitted.thresholds[0] == expected  # integer band: identical
        np.testing.assert_array_equal(run_segment(raster, fitted), values > fitted.thresholds[0])


def test_manual_thresholds():
    image = photo("camera")
    manual = Threshold((60, 120.5, 200), class_names=("dark", "mid", "bright", "white"))
    classes = run_segment(memory_raster(image), manual)
    np.testing.assert_array_equal(classes, np.digitize(image[0], [60, 120.5, 200], right=True))
    with pytest.raises(ValueError, match="strictly increasing"):
        Threshold((5, 5))
    with pytest.raises(ValueError, match="2 threshold.*3 classes.*2 class_names"):
        Threshold((1, 2), class_names=("a", "b"))


def test_fitted_threshold_is_small_frozen_and_checks_bands_before_compute(tmp_path):
    image = photo("coins")
    otsu = fit(zarr_raster(tmp_path, image), "otsu")
    blob = pickle.dumps(otsu)
    assert len(blob) < 1000 and pickle.loads(blob) == otsu
    with pytest.raises(FrozenInstanceError):
        otsu.thresholds = (1.0,)
    other = memory_raster(np.concatenate([image, image]))
    with pytest.raises(BandMismatchError, match="expects 1 band"):
        geoseg.segment(other, otsu)


def test_unknown_method_and_wrong_class_count_are_explained():
    raster = memory_raster(photo("coins"))
    with pytest.raises(ValueError, match="Unknown threshold method 'kittler'.*otsu"):
        fit(raster, "kittler")
    with pytest.raises(ValueError, match="use method='multiotsu'"):
        fit(raster, "otsu", classes=3)


# -- local threshold -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, method, block_size, offset",
    [
        ("coins", "gaussian", 35, 0),
        ("camera", "gaussian", 15, 3),
        ("coins", "median", 11, 2),
        ("camera", "mean", 35, 2.5),
    ],
)
def test_local_threshold_equals_scikit_image_on_the_whole_photo(name, method, block_size, offset):
    image = photo(name)
    local = LocalThreshold(block_size, method, offset=offset)
    mask = run_segment(memory_raster(image), local)
    as_float = image[0].astype(np.float64)
    expected = as_float > filters.threshold_local(as_float, block_size, method, offset=offset)
    np.testing.assert_array_equal(mask, expected)


def test_local_mean_differs_from_scikit_image_only_at_exact_ties():
    image = photo("camera")
    size, offset = 35, 2
    mask = run_segment(memory_raster(image), LocalThreshold(size, "mean", offset=offset))
    as_float = image[0].astype(np.float64)
    expected = as_float > filters.threshold_local(as_float, size, "mean", offset=offset)
    padded = np.pad(image[0].astype(np.int64), size // 2, mode="symmetric")  # ndimage "reflect"
    box = np.lib.stride_tricks.sliding_window_view(padded, (size, size)).sum(axis=(2, 3))
    ties = box == size * size * (image[0].astype(np.int64) + offset)
    print(
        f"local mean: {np.sum(mask != expected)} pixel(s) differ from scikit-image, "
        f"all at exact ties "
        f"({ties.sum()} ties)"
    )
    assert not np.any(mask[ties])  # x == mean - offset is background under x > threshold
    np.testing.assert_array_equal(mask[~ties], expected[~ties])


def test_local_threshold_needs_its_halo():
    image = photo("coins")
    local = LocalThreshold(35, "gaussian")
    assert local.halo == (23, 23)  # int(4 * 34 / 6 + 0.5)
    expected = local.predict_image(image).argmax(0)
    np.testing.assert_array_equal(run_segment(memory_raster(image), local), expected)
    assert np.any(run_segment(memory_raster(image), local, halo=8) != expected)
    with pytest.raises(ValueError, match="odd"):
        LocalThreshold(10)


def peaked_uint16() -> np.ndarray:
    """64 x 64 uint16 with one narrow histogram peak: 'minimum' finds no valley."""
    return np.full((1, 64, 64), 700, np.uint16) + (np.arange(64 * 64) % 3 == 0).reshape(1, 64, 64)


def test_thresholds_scikit_image_cannot_compute_are_method_errors():
    """They were a RuntimeError / ValueError from scikit-image: an internal error, exit 1."""
    from geoseg.errors import MethodParameterError

    with pytest.raises(MethodParameterError, match="'minimum' needs .* two peaks.*'otsu'"):
        fit(memory_raster(peaked_uint16()), "minimum")
    many = np.random.default_rng(0).integers(0, 256, (1, 64, 64), dtype=np.uint8)
    with pytest.raises(MethodParameterError, match=r"'multiotsu'.*classes=300.*Lower classes"):
        fit(memory_raster(many), "multiotsu", classes=300)
    constant = np.full((1, 16, 16), 7, np.uint8)  # one value: no class count would do
    with pytest.raises(MethodParameterError, match=r"1 occupied bin\(s\).*holds one value on every "
                                                   r"valid pixel: check the input's nodata") as err:
        fit(memory_raster(constant), "multiotsu", classes=3)
    assert "Lower classes" not in str(err.value)


@pytest.mark.parametrize("method, params, image", [
    ("minimum", {}, "peaked"),
    ("multiotsu", {"classes": 300}, "uint8"),
])
def test_a_job_with_an_uncomputable_threshold_exits_2_with_the_fix(tmp_path, method, params, image):
    import yaml

    from tests.cli import geoseg as cli
    from tests.conftest import write_zarr

    data = (peaked_uint16() if image == "peaked"
            else np.random.default_rng(0).integers(0, 256, (1, 64, 64), dtype=np.uint8))
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "input": {"url": write_zarr(tmp_path / "in.zarr", data, chunks=(32, 32))},
        "model": {"method": method, "params": params},
        "output": {"url": str(tmp_path / "out.zarr"), "chunks": [32, 32]}}))
    result = cli("run", str(job), "--cluster", "threads")
    said = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2, said
    assert "internal error" not in said and f"'{method}'" in said, said


@pytest.mark.parametrize("method, params, message", [
    ("otsu", {"classes": 3}, "method 'otsu' finds one threshold (2 classes)"),
    ("otsu", {"class_names": ["a", "b", "c"]},
     "class_names: received 3 name(s) ['a', 'b', 'c'], but method 'otsu' gives 2 classes"),
    ("multiotsu", {"classes": 4, "class_names": ["a", "b"]}, "method 'multiotsu' gives 4 classes"),
])
def test_classes_a_fit_cannot_give_are_refused_before_a_pixel_is_read(method, params, message):
    from geoseg.errors import MethodParameterError
    from tests.methods.rasters import unreadable_raster

    with pytest.raises(MethodParameterError, match=re.escape(message)):
        fit_threshold(unreadable_raster(bands=1), method, **params)


@pytest.mark.parametrize("params, message", [
    ({"mode": "wrap"}, "mode: received 'wrap'; expected one of ('reflect', 'mirror'"),
    ({"mode": "bogus"}, "mode: received 'bogus'"),  # was scipy's RuntimeError in the first task
    ({"param": -1.0}, "param: received -1.0; expected the gaussian sigma, a finite number >= 0"),
])
def test_local_threshold_refuses_a_mode_or_sigma_it_cannot_apply_exactly(params, message):
    """'wrap' wraps each tile onto itself, not onto the image's far side (7 of 10,000 pixels
    differed from scikit-image on a 100 x 100 image in 32-pixel chunks); a negative sigma made a
    negative halo."""
    from geoseg.errors import MethodParameterError

    with pytest.raises(MethodParameterError, match=re.escape(message)):
        LocalThreshold(7, **params)


def test_manual_thresholds_outside_what_the_input_can_hold_are_refused():
    from geoseg.errors import MethodParameterError
    from geoseg.methods.threshold import check_in_range

    check_in_range(Threshold([0, 254], feature=1), np.uint8)
    check_in_range(Threshold([300.0], feature=1), np.float32)  # floats: no bound known
    with pytest.raises(MethodParameterError, match=re.escape(
            "thresholds: received [100.0, 300.0], but band 1 of the input (uint8) lies in [0, 255], "
            "so [300.0] would leave a class empty")):
        check_in_range(Threshold([100, 300], feature=1), np.uint8)
    with pytest.raises(MethodParameterError, match=re.escape("(b4 - b3) / (b4 + b3) of the input "
                                                             "(uint16) lies in [-1, 1]")):
        check_in_range(Threshold([0.2, 1500], feature=(4, 3)), np.uint16)


def counted_threshold(raster, **kwargs) -> tuple[Threshold, object]:
    """An Otsu fit on the threads scheduler, with the chunks it read from the store."""
    from tests.methods.rasters import counted_reads

    with dask.config.set(scheduler="threads"), counted_reads() as reads:
        fitted = fit_threshold(raster, "otsu", **kwargs)
    return fitted, reads


@pytest.mark.parametrize("feature, kept, attrs", [
    (2, 1, {}),  # one band kept, the feature renumbered to it
    ((3, 1), 2, {}),  # two bands kept, in another order than the feature's
    ("mean", 3, {}),
    (2, 3, {"nodata": 0}),  # a nodata value: every band decides validity, so all are kept
])
def test_a_threshold_fit_reads_each_chunk_once_when_its_bands_fit_the_cache(
        tmp_path, monkeypatch, feature, kept, attrs):
    image = textured_image(120, 120)  # 3 bands uint8: 9 stored chunks of 3 x 40 x 40
    raster = zarr_raster(tmp_path, image, **attrs)
    monkeypatch.setenv("GEOSEG_MAX_FIT_CACHE_BYTES", str(kept * 120 * 120))  # just fits
    cached, once = counted_threshold(raster, feature=feature)
    plain, each = counted_threshold(raster, feature=feature, cache=False)
    assert len(once.chunks) == len(each.chunks) == 9
    assert set(once.chunks.values()) == {1}
    assert set(each.chunks.values()) == {2}  # the value range, then the histogram
    assert cached == plain and cached.feature == as_feature(feature)


def test_a_threshold_fit_asked_for_a_cache_over_the_limit_is_refused_before_a_read(monkeypatch):
    from geoseg.errors import BudgetError
    from tests.methods.rasters import unreadable_raster

    monkeypatch.setenv("GEOSEG_MAX_FIT_CACHE_BYTES", str(64 * 64 - 1))  # one band, one byte over
    message = "the otsu threshold on band 2 would keep 4 KiB"
    with pytest.raises(BudgetError, match=message):
        fit_threshold(unreadable_raster(), "otsu", feature=2, cache=True)


def smooth_noise(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Smooth float64 noise: no two local means tie with a pixel, so masks compare exactly."""
    rng = np.random.default_rng(seed)
    return filters.gaussian(rng.normal(size=shape), 1.5) * 100


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    shape=st.sampled_from([(31, 37), (9, 23, 29), (13, 17, 11)]),
    chunk=st.tuples(st.integers(4, 13), st.integers(5, 19), st.integers(5, 19)),
    method=st.sampled_from(LOCAL_METHODS),
    block_size=st.sampled_from([3, 5, 7]),
    offset=st.floats(-2, 2),
)
def test_chunked_local_threshold_equals_scikit_image_on_images_and_volumes(
    seed, shape, chunk, method, block_size, offset
):
    """Every local method spans every axis, as scikit-image's, and tiles equal the whole."""
    image = smooth_noise(shape, seed)
    chunks = chunk[-len(shape):]
    raster = xr.DataArray(image[None], dims=("band", *("z", "y", "x")[-len(shape):]))
    local = LocalThreshold(block_size, method, offset=offset)
    mask = run_segment(raster, local, chunks=chunks, tile=chunks)
    expected = image > filters.threshold_local(image, block_size, method, offset=offset)
    np.testing.assert_array_equal(mask, expected)


def test_local_mean_box_spans_every_axis_of_a_volume():
    volume = smooth_noise((9, 12, 14), 0)
    expected = ndi.uniform_filter(volume, 5, mode="reflect")
    np.testing.assert_allclose(box_mean(volume, 5), expected, rtol=1e-12)
    assert LocalThreshold(5, "mean").spatial_axes is None  # any: images and volumes


def test_an_integer_band_too_wide_for_one_bin_per_value_is_binned_with_a_warning():
    """Above 2**20 values the fit bins them as floats: it said nothing, and the README said
    integer thresholds equal scikit-image's (Otsu 1,276,998 for its 1,278,798)."""
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(1000, 100, 6000), rng.normal(3000, 200, 7000)])
    image = (values * 1000).astype(np.int64).reshape(1, 100, 130)
    with pytest.warns(UserWarning, match=r"spans \d+ values .* more than the 1048576 one-value "
                                         r"bins .* 256 equal bins instead"):
        fitted = fit_threshold(xr.DataArray(image, dims=("band", "y", "x")), "otsu")
    width = (image.max() - image.min()) / 256
    assert abs(fitted.thresholds[0] - filters.threshold_otsu(image)) <= width
