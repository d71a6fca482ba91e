"""Morphological clean-up with exact halos: chunked equals scikit-image on the whole mask."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage import filters, morphology

import geoseg
from geoseg.errors import MethodParameterError
from geoseg.methods import (
    Cleaned,
    Cleanup,
    LocalThreshold,
    Threshold,
    clean,
    fit_threshold,
)
from geoseg.parallel.cleanup import clean_mask
from tests.conftest import textured_image
from tests.methods.rasters import memory_raster, photo, run_segment


def reference(
    mask: np.ndarray, opening=0, closing=0, max_object_size=0, max_hole_size=0, connectivity=1
) -> np.ndarray:
    """The clean-up written out with scikit-image, on the whole mask."""
    out = mask.astype(bool)
    if opening:
        out = morphology.opening(out, morphology.disk(opening))
    if closing:
        out = morphology.closing(out, morphology.disk(closing))
    if max_object_size:
        out = morphology.remove_small_objects(
            out, max_size=max_object_size, connectivity=connectivity
        )
    if max_hole_size:
        out = morphology.remove_small_holes(out, max_size=max_hole_size, connectivity=connectivity)
    return out


STEPS = [
    {"opening": 2},
    {"closing": 3},
    {"max_object_size": 40},
    {"max_hole_size": 25, "connectivity": 2},
    {"opening": 1, "closing": 2, "max_object_size": 30, "max_hole_size": 30},
]


@pytest.mark.parametrize("steps", STEPS)
def test_cleaned_otsu_equals_scikit_image_on_the_whole_photo(steps):
    image = photo("coins")
    raster = memory_raster(image)
    with dask.config.set(scheduler="sync"):
        otsu = fit_threshold(raster, "otsu")
    cleaned = Cleaned(otsu, steps=Cleanup(**steps))
    expected = reference(image[0] > filters.threshold_otsu(image[0]), **steps)
    assert cleaned.halo[0] == Cleanup(**steps).halo
    np.testing.assert_array_equal(run_segment(raster, cleaned), expected)


def test_cleaned_local_threshold_adds_both_halos():
    image = photo("camera")
    local = LocalThreshold(15, "gaussian", offset=-3)
    cleaned = Cleaned(local, steps=Cleanup(opening=1, max_object_size=20))
    assert (
        cleaned.halo == (9 + 2 + 20,) * 2
    )  # gaussian radius int(4 * 14 / 6 + 0.5), 2 * opening, size
    as_float = image[0].astype(np.float64)
    mask = as_float > filters.threshold_local(as_float, 15, "gaussian", offset=-3)
    np.testing.assert_array_equal(
        run_segment(memory_raster(image), cleaned), reference(mask, opening=1, max_object_size=20)
    )


def test_halo_below_the_documented_one_breaks_equality():
    """3 x 3 tiles of 101 x 128: the documented halo (360) makes every window the whole photo,
    so smaller tiles would only repeat the same work; 10 leaves seams inside the objects."""
    image = photo("coins")
    cleaned = Cleaned(Threshold((100,)), steps=Cleanup(max_object_size=300, max_hole_size=60))
    assert cleaned.halo == (360, 360)
    expected = reference(image[0] > 100, max_object_size=300, max_hole_size=60)
    tiles = {"chunks": (101, 128), "tile": (101, 128)}
    raster = memory_raster(image, chunks=(101, 128))
    np.testing.assert_array_equal(run_segment(raster, cleaned, **tiles), expected)
    assert np.any(run_segment(raster, cleaned, halo=10, **tiles) != expected)


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    size=st.integers(1, 25),
    hole=st.integers(0, 25),
    radius=st.integers(0, 2),
    density=st.floats(0.3, 0.7),
    connectivity=st.sampled_from([1, 2]),
)
def test_clean_mask_of_random_masks_equals_whole_mask(
    seed, size, hole, radius, density, connectivity
):
    rng = np.random.default_rng(seed)
    noise = filters.gaussian(rng.random((83, 71)), 1.0)
    classes = (noise > np.quantile(noise, 1 - density)).astype(np.uint8)
    classes[rng.random(classes.shape) < 0.02] = 255  # no data
    steps = {
        "opening": radius,
        "max_object_size": size,
        "max_hole_size": hole,
        "connectivity": connectivity,
    }
    lazy = xr.DataArray(classes, dims=("y", "x"), attrs={"nodata": 255}).chunk({"y": 19, "x": 23})
    with dask.config.set(scheduler="sync"):
        out = clean_mask(lazy, target=1, chunks=(19, 23), tile=(19, 23), **steps).values
    expected = reference(classes == 1, **steps).astype(np.uint8)
    expected[classes == 255] = 255
    np.testing.assert_array_equal(out, expected)


def test_clean_function_and_parameter_checks():
    mask = np.zeros((30, 30), bool)
    mask[5:20, 5:20] = True
    mask[10, 10] = False  # a one-pixel hole
    mask[25, 25] = True  # a one-pixel object
    cleaned = clean(mask, max_object_size=1, max_hole_size=1)
    assert cleaned[10, 10] and not cleaned[25, 25]
    with pytest.raises(ValueError, match="Cleanup opening: received -1; expected a whole number >= 0"):
        Cleanup(opening=-1)
    with pytest.raises(ValueError, match="target=3 is not a class"):
        Cleaned(Threshold((1.0,)), target=3)
    with pytest.raises(ValueError, match="select one class map"):
        clean_mask(xr.DataArray(np.zeros((2, 4, 4)), dims=("band", "y", "x")))


def test_cleaned_wraps_a_deep_model_by_reference(tmp_path, model_path):
    model = geoseg.load_model(model_path)
    cleaned = Cleaned(model, target=2, steps=Cleanup(max_object_size=10))
    ref = cleaned.ref()
    assert ref is not cleaned and not isinstance(ref.inner, geoseg.SegmentationModel)  # a ModelRef
    assert [c.name for c in cleaned.classes] == ["other", "class_2"]
    assert cleaned.halo[0] == model.halo[0] + 10
    image = textured_image(64, 56, seed=3)  # multiples of the stride: no end padding
    expected = reference(model.predict_image(image).argmax(0) == 2, max_object_size=10)
    got = run_segment(memory_raster(image, chunks=(32, 28)), cleaned, chunks=(32, 28), tile=16)
    np.testing.assert_array_equal(got, expected)


def pooling_deeplab() -> geoseg.SegmentationModel:
    """A small DeepLabv3+ with image pooling: its scores depend on the whole input."""
    import torch

    from geoseg.core.classes import ClassInfo
    from geoseg.models import ModelInfo, build_network

    torch.manual_seed(5)
    config = {"in_channels": 3, "num_classes": 3, "backbone": "resnet18", "width": 4,
              "atrous_rates": [1, 2], "image_pooling": True}
    net = build_network("deeplabv3plus", config).eval()
    info = ModelInfo("pooling-deeplab", "deeplabv3plus", config,
                     tuple(ClassInfo(f"c{i}") for i in range(3)), ("r", "g", "b"),
                     (128.0,) * 3, (40.0,) * 3)
    return geoseg.SegmentationModel(net, info, device="cpu")


def test_a_cleaned_global_context_network_is_planned_as_the_network_alone(one_torch_thread):
    """Cleaned said no global context: a DeepLab with image pooling inside it was planned in
    cropped tiles (whose pooled context differs from the image's) where alone it is blended.
    With no clean-up steps the wrapper gives the network's classes."""
    from geoseg.tiling import Geometry, Plan

    model = pooling_deeplab()
    cleaned = Cleaned(model, target=1, steps=Cleanup())
    shape = (4096, 4096)
    assert Plan.create(shape, Geometry.of(cleaned)).tiling.blend == "gaussian"
    assert Plan.create(shape, Geometry.of(cleaned)) == Plan.create(shape, Geometry.of(model))
    image = textured_image(96, 96, seed=4)
    alone = run_segment(memory_raster(image, chunks=(48, 48)), model, chunks=(48, 48), tile=64)
    got = run_segment(memory_raster(image, chunks=(48, 48)), cleaned, chunks=(48, 48), tile=64)
    np.testing.assert_array_equal(got, np.where(alone == 1, 1, 0))  # classes: other, c1


def test_clean_up_steps_around_a_global_context_network_are_refused_pointing_to_clean_mask():
    """Its windows are blended, so the steps' halo was dropped and objects were cut at window
    seams (57 pixels unlike the whole image's clean-up)."""
    with pytest.raises(MethodParameterError, match="global context.*clean_mask"):
        Cleaned(pooling_deeplab(), target=1, steps=Cleanup(max_object_size=60))


def test_a_cleaned_network_computes_where_the_network_does():
    """A wrapper of a network on a GPU said the CPU: its regions were prepared on the host and
    took no turn on the GPU. The device is the inner segmenter's (set here by hand: no GPU)."""
    import torch

    model = pooling_deeplab()
    model.device = torch.device("meta")
    assert Cleaned(model, target=1).device == torch.device("meta")
