"""The classical methods on volumes (z, y, x): the n-D ones segment them, the 2D ones are
refused by ``geoseg.segment`` and by jobs alike, before any compute, with the fix."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr
from skimage import feature, filters

import geoseg
from geoseg.errors import PlanError
from geoseg.jobs import prepare
from geoseg.jobs.spec import JobSpec
from geoseg.methods import Canny, Cleaned, Cleanup, EdgeMagnitude, LocalThreshold, Threshold
from geoseg.methods.morphology import MaskCleanup
from geoseg.models import SliceWise
from tests.methods.rasters import run_segment

REFUSED = r"segment\(\): model: .* segments images \(y, x\), but the raster has spatial axes " \
          r"\('z', 'y', 'x'\); expected a model for volumes \(z, y, x\)\. Wrap it with " \
          r"geoseg.models.SliceWise"


def volume(shape: tuple[int, int, int] = (6, 40, 48)) -> np.ndarray:
    """A bright box in smooth noise, (band, z, y, x) float64."""
    rng = np.random.default_rng(0)
    v = filters.gaussian(rng.normal(size=shape), 1.0) * 20
    v[1:5, 10:30, 12:36] += 500
    return v[None]


def as_raster(v: np.ndarray) -> xr.DataArray:
    return xr.DataArray(v, dims=("band", "z", "y", "x"))


TWO_D = {
    "canny": Canny(sigma=1.0, low_threshold=50, high_threshold=100),
    "canny deferred": Canny(sigma=1.0, low_threshold=50, high_threshold=100, hysteresis="deferred"),
    "cleaned": Cleaned(Threshold((300,)), steps=Cleanup(opening=1)),
    "cleaned sizes": Cleaned(Threshold((300,)), steps=Cleanup(max_object_size=4)),
    "mask clean-up": MaskCleanup(1, Cleanup(closing=1)),
}


@pytest.mark.parametrize("name", TWO_D)
def test_a_2d_method_on_a_volume_is_refused_by_segment_before_any_compute(name):
    with pytest.raises(PlanError, match=REFUSED):
        geoseg.segment(as_raster(volume()), TWO_D[name])  # lazy: nothing was computed


@pytest.mark.parametrize("segmenter", [Threshold((300,)), Cleaned(Threshold((300,)))])
def test_pointwise_methods_segment_volumes(segmenter):
    """A threshold, or one whose clean-up has no step, segments any number of axes."""
    v = volume()
    mask = run_segment(as_raster(v), segmenter, chunks=(3, 17, 19), tile=(3, 17, 19))
    np.testing.assert_array_equal(mask == 1, v[0] > 300)


@pytest.mark.parametrize("operator", ["sobel", "scharr", "prewitt"])
def test_edge_magnitude_on_a_volume_equals_scikit_image_3d_at_any_chunking(operator):
    v = volume()
    chunks = (4, 13, 17)
    edges = run_segment(as_raster(v), EdgeMagnitude(operator, threshold=20), chunks=chunks, tile=chunks)
    np.testing.assert_array_equal(edges == 1, getattr(filters, operator)(v[0], mode="reflect") > 20)


def test_slice_wise_canny_on_a_volume_equals_scikit_image_per_slice():
    v = volume()
    canny = Canny(sigma=1.0, low_threshold=50, high_threshold=100)
    whole_slices = (2, *v.shape[2:])  # one tile per slice: each window is the whole slice
    edges = run_segment(as_raster(v), SliceWise(canny), chunks=whole_slices, tile=(1, *v.shape[2:]))
    expected = np.stack([feature.canny(p, sigma=1.0, low_threshold=50, high_threshold=100)
                         for p in v[0]])
    np.testing.assert_array_equal(edges == 1, expected)


def volume_job(tmp_path, model: dict) -> JobSpec:
    store = zarr.create_array(str(tmp_path / "vol.zarr"), shape=(1, 6, 40, 48), chunks=(1, 6, 20, 24),
                              dtype="float32", dimension_names=["band", "z", "y", "x"])
    store[:] = volume().astype(np.float32)
    return JobSpec.from_dict({"input": {"url": str(tmp_path / "vol.zarr")}, "model": model,
                              "output": {"url": str(tmp_path / "out.zarr")}})


@pytest.mark.parametrize("method", ["gaussian", "mean", "median"])
def test_a_job_plans_every_local_threshold_on_a_volume_with_its_halo_on_every_axis(tmp_path, method):
    prepared = prepare(volume_job(tmp_path, {"method": "local", "params": {"block_size": 7,
                                                                             "method": method}}))
    radius = 4 if method == "gaussian" else 3  # int(4 * sigma + 0.5), sigma (7 - 1) / 6; 7 // 2
    assert prepared.work.tiling.halo == (radius,) * 3


def test_a_job_refuses_canny_on_a_volume_as_segment_does(tmp_path):
    spec = volume_job(tmp_path, {"method": "canny", "params": {"low_threshold": 50,
                                                                "high_threshold": 100}})
    with pytest.raises(PlanError, match=r"model: canny edges \(sigma=1\) segments images \(y, x\), "
                                        r"but the input .* has spatial axes \('z', 'y', 'x'\).*SliceWise"):
        prepare(spec)


def test_clean_up_steps_around_a_3d_segmenter_are_refused_with_the_order_that_works():
    from geoseg.errors import MethodParameterError

    with pytest.raises(MethodParameterError, match=r"segments 3 spatial axes.*SliceWise\(Cleaned\("):
        Cleaned(SliceWise(LocalThreshold(5)), steps=Cleanup(opening=1))
    inside = SliceWise(Cleaned(LocalThreshold(5), steps=Cleanup(opening=1)))
    assert inside.spatial_axes == 3


def test_a_slicewise_segmenter_on_an_image_is_refused_naming_volumes():
    """SliceWise takes volumes apart into slices; even around a pointwise method an image has
    no z axis to take apart."""
    image = xr.DataArray(volume()[:, 0], dims=("band", "y", "x"))
    with pytest.raises(PlanError, match=r"segments volumes \(z, y, x\), but the raster has "
                                        r"spatial axes \('y', 'x'\).*Give a 2D model"):
        geoseg.segment(image, SliceWise(Threshold((300,))))


def test_an_ensemble_of_n_d_methods_segments_a_volume_and_of_a_2d_one_is_refused():
    from geoseg import Ensemble

    v = volume()
    local = LocalThreshold(block_size=5, method="gaussian")
    names = [c.name for c in local.classes]
    nd = Ensemble([local, Threshold((300,), class_names=tuple(names))], classes=names)
    mask = run_segment(as_raster(v), nd, chunks=(3, 17, 19), tile=(3, 17, 19))
    whole = nd.predict_image(v).argmax(0)
    np.testing.assert_array_equal(mask, whole)
    two_d = Ensemble([TWO_D["canny"]])
    with pytest.raises(PlanError, match=REFUSED):
        geoseg.segment(as_raster(v), two_d)
