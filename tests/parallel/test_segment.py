"""Chunked segmentation equals the model on the whole image at once."""

from __future__ import annotations

import warnings

import dask
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import geoseg
from geoseg.core.classes import ClassInfo
from geoseg.errors import BandMismatchError
from geoseg.models import Segmenter
from tests.conftest import random_unet, textured_image, write_zarr

HEIGHT, WIDTH = 131, 101  # multiples of nothing useful (primes)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Identity(Segmenter):
    """Stand-in "model": scores are the input bands themselves."""

    name = "identity"

    def __init__(self, bands: int, stride: int, halo: int):
        self.classes = tuple(ClassInfo(f"b{i}") for i in range(bands))
        self.stride = (stride, stride)
        self.halo = (halo, halo)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return batch.copy()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return textured_image(HEIGHT, WIDTH, seed=3)


@pytest.fixture(scope="module")
def reference(model_path: str, image: np.ndarray) -> np.ndarray:
    probs = geoseg.load_model(model_path).predict_image(image)
    assert len(np.unique(probs.argmax(0))) >= 3, "the random model should not predict one class"
    return probs


@pytest.mark.parametrize("chunks, tile", [((64, 64), 64), ((50, 77), 32), ((HEIGHT, WIDTH), 512),
                                          ((33, 100), 48), ((100, 30), 24)])
def test_chunked_equals_whole_image_from_zarr(tmp_path, model_path, image, reference, chunks, tile):
    raster = geoseg.open_raster(write_zarr(tmp_path / "in.zarr", image, chunks=(40, 40)))
    model = geoseg.load_model(model_path)
    with dask.config.set(scheduler="sync"):
        probs = geoseg.segment(raster, model, output="probabilities", chunks=chunks, tile=tile).values
        classes = geoseg.segment(raster, model, chunks=chunks, tile=tile).values
    np.testing.assert_allclose(probs, reference, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(classes, reference.argmax(0))


def test_in_memory_dataarray_takes_the_generic_path(model_path, image, reference):
    raster = xr.DataArray(image, dims=("band", "y", "x")).chunk({"y": 70, "x": 70})
    with dask.config.set(scheduler="sync"):
        classes = geoseg.segment(raster, model_path, chunks=(70, 70), tile=40).values
    np.testing.assert_array_equal(classes, reference.argmax(0))


def test_nodata_pixels_get_the_nodata_class(tmp_path, model_path, image):
    image = image.copy()
    image[:, 10:20, 30:50] = 0
    raster = geoseg.open_raster(write_zarr(tmp_path / "in.zarr", image, nodata=0))
    model = geoseg.load_model(model_path)
    with dask.config.set(scheduler="sync"):
        classes = geoseg.segment(raster, model, chunks=(64, 64)).values
    expected = model.predict_image(image, nodata=0).argmax(0)
    expected[10:20, 30:50] = 255
    np.testing.assert_array_equal(classes, expected)


@pytest.mark.parametrize("value, dtype", [(np.inf, np.float32), (-np.inf, np.float32),
                                          (1e300, np.float64), (-1e39, np.float64)])
def test_an_infinite_pixel_is_nodata_and_leaves_its_neighbours_as_a_clean_run_has_them(
        tmp_path, model_path, image, value, dtype):
    """So is a finite float64 value past float32's range, which networks compute in: it was
    scored NaN, whose class id was 0, a class, where its probabilities said no data."""
    model = geoseg.load_model(model_path)
    clean = image.astype(dtype)
    hit = clean.copy()
    hit[1, 100, 80] = value  # one band of one pixel
    hit_raster = geoseg.open_raster(write_zarr(tmp_path / "hit.zarr", hit))
    with dask.config.set(scheduler="sync"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one pixel in 40,000 cannot move the range check
        expected = geoseg.segment(geoseg.open_raster(write_zarr(tmp_path / "clean.zarr", clean)),
                                  model, chunks=(64, 64)).values
        classes = geoseg.segment(hit_raster, model, chunks=(64, 64)).values
        probabilities = geoseg.segment(hit_raster, model, chunks=(64, 64),
                                       output="probabilities").values
    expected[100, 80] = 255
    np.testing.assert_array_equal(classes, expected)
    assert np.isnan(probabilities[:, 100, 80]).all()
    assert np.isfinite(np.delete(probabilities.reshape(len(probabilities), -1),
                                 100 * hit.shape[2] + 80, axis=1)).all()


def test_band_mismatch_fails_before_compute(tmp_path, model_path):
    raster = geoseg.open_raster(write_zarr(tmp_path / "in.zarr", textured_image(40, 40, bands=4)))
    with pytest.raises(BandMismatchError, match="expects 3 band.*has 4"):
        geoseg.segment(raster, model_path)


@settings(max_examples=40, deadline=None)
@given(height=st.integers(1, 90), width=st.integers(1, 90), chunk=st.integers(5, 64),
       stride=st.sampled_from([1, 2, 4, 8]), tile_mult=st.integers(2, 6), halo_mult=st.integers(0, 2))
def test_identity_model_reproduces_the_input(height, width, chunk, stride, tile_mult, halo_mult):
    image = np.random.default_rng(height * width).integers(1, 255, (2, height, width)).astype(np.uint8)
    raster = xr.DataArray(image, dims=("band", "y", "x")).chunk({"y": chunk, "x": chunk})
    model = Identity(2, stride, halo_mult * stride)
    with dask.config.set(scheduler="sync"):
        out = geoseg.segment(raster, model, output="probabilities", chunks=chunk,
                             tile=tile_mult * stride).values
    np.testing.assert_array_equal(out, image.astype(np.float32))


def test_two_dimensional_and_transposed_inputs(model_path):
    model = Identity(1, 1, 0)
    image = np.arange(12 * 9, dtype=np.float32).reshape(12, 9)
    with dask.config.set(scheduler="sync"):
        flat = geoseg.segment(xr.DataArray(image, dims=("y", "x")), model, output="probabilities")
        np.testing.assert_array_equal(flat.values[0], image)
        moved = xr.DataArray(image[:, :, None], dims=("y", "x", "band"))
        np.testing.assert_array_equal(geoseg.segment(moved, model, output="probabilities").values[0], image)
    with pytest.raises(ValueError, match=r"dims \(band, y, x\), \(band, z, y, x\) or those without band; "
                                         r"got \('row', 'col'\)"):
        geoseg.segment(xr.DataArray(image, dims=("row", "col")), model)


def test_in_memory_model_runs_in_process_and_says_to_save_it_on_a_cluster(cluster_address, image):
    from distributed import Client

    from geoseg.errors import ModelFileError

    model = random_unet(seed=21)
    raster = xr.DataArray(image, dims=("band", "y", "x"))
    with dask.config.set(scheduler="sync"):
        np.testing.assert_array_equal(geoseg.segment(raster, model, chunks=100).values,
                                      model.predict_image(image).argmax(0))
    with Client(cluster_address), pytest.raises(
            ModelFileError, match=r"built in memory \(or its weights changed since it was read\) in another"):
        geoseg.segment(raster, model, chunks=100).compute()


def test_a_lazy_result_keeps_its_in_memory_model_alive_on_the_threaded_scheduler(image):
    """The graph holds the model: a result made inside a function outlives the caller's name."""
    import gc

    def lazy() -> xr.DataArray:
        return geoseg.segment(xr.DataArray(image, dims=("band", "y", "x")), random_unet(seed=21),
                              chunks=100)

    mask = lazy()
    gc.collect()
    with dask.config.set(scheduler="threads"):
        np.testing.assert_array_equal(mask.values, random_unet(seed=21).predict_image(image).argmax(0))


def test_weights_changed_after_segment_are_not_taken_for_the_graphs(model_path, image):
    """A file's graph computes the file's weights on every scheduler; an in-memory model's graph
    is refused once its weights changed, as those it stands for are kept nowhere."""
    import torch

    from geoseg.errors import ModelFileError

    raster = xr.DataArray(image, dims=("band", "y", "x"))
    expected = geoseg.load_model(model_path).predict_image(image).argmax(0)
    model = geoseg.load_model(model_path)
    mask = geoseg.segment(raster, model, chunks=100)
    with torch.no_grad():
        for p in model.net.parameters():
            p.mul_(-1)
    with dask.config.set(scheduler="threads"):
        np.testing.assert_array_equal(mask.values, expected)
        assert (geoseg.segment(raster, model, chunks=100).values != expected).any()

    built = random_unet(seed=21)
    mask = geoseg.segment(raster, built, chunks=100)
    with torch.no_grad():
        next(built.net.parameters()).mul_(2)
    with dask.config.set(scheduler="threads"), pytest.raises(
            ModelFileError, match=r"weights changed after geoseg.segment\(\) made this result"):
        mask.compute()


def test_the_same_weights_written_again_are_still_the_graphs_and_a_cast_is_not(image):
    """load_state_dict of the very weights moved torch's counters, and the graph was refused;
    a cast (half, then float) moved none and the graph computed the changed weights."""
    from geoseg.errors import ModelFileError

    raster = xr.DataArray(image, dims=("band", "y", "x"))
    model = random_unet(seed=21)
    mask = geoseg.segment(raster, model, chunks=100)
    model.net.load_state_dict(model.net.state_dict())
    with dask.config.set(scheduler="threads"):
        np.testing.assert_array_equal(mask.values, model.predict_image(image).argmax(0))
    mask = geoseg.segment(raster, model, chunks=100)
    model.net.half().float()
    with dask.config.set(scheduler="threads"), pytest.raises(ModelFileError, match="weights changed"):
        mask.compute()
