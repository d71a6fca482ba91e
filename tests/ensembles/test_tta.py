"""Test-time augmentation: transforms are applied and undone exactly."""

from __future__ import annotations

import itertools
import pickle

import dask
import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import geoseg
from geoseg.core.classes import ClassInfo
from geoseg.ensembles import TTA, TTARef, transform_set
from geoseg.models import Segmenter
from tests.conftest import random_unet, textured_image, write_zarr

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Identity(Segmenter):
    """Scores are the input bands: TTA must return its input untouched."""

    name = "identity"

    def __init__(self, bands: int, ndim: int = 2):
        self.classes = tuple(ClassInfo(f"b{i}") for i in range(bands))
        self.stride = (1,) * ndim
        self.halo = (0,) * ndim

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return batch.copy()


class SymmetricConv(Segmenter):
    """Conv stack whose 3x3 kernels are symmetric under the square's 8 symmetries: D4-equivariant."""

    name = "symmetric-conv"
    stride = (1, 1)
    halo = (2, 2)

    def __init__(self, bands: int = 3, classes: int = 4, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.classes = tuple(ClassInfo(f"class_{i}") for i in range(classes))
        self.kernels = [self._symmetric(8, bands, gen), self._symmetric(classes, 8, gen)]

    @staticmethod
    def _symmetric(out: int, inp: int, gen: torch.Generator) -> torch.Tensor:
        corner, edge, centre = (torch.randn(out, inp, 1, 1, generator=gen, dtype=torch.float64) for _ in range(3))
        row_a = torch.cat([corner, edge, corner], dim=3)
        row_b = torch.cat([edge, centre, edge], dim=3)
        return torch.cat([row_a, row_b, row_a], dim=2)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.asarray(batch, np.float64))
        x = torch.tanh(torch.nn.functional.conv2d(x, self.kernels[0], padding=1))
        x = torch.nn.functional.conv2d(x, self.kernels[1], padding=1)
        return torch.softmax(x, dim=1).numpy().astype(np.float32)


def test_d4_has_eight_distinct_transforms_that_undo_exactly():
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 6, 6)))
    transforms = transform_set("d4", 2)
    assert len(transforms) == 8
    images = [t.apply(x) for t in transforms]
    for a, b in itertools.combinations(images, 2):
        assert not torch.equal(a, b)
    for t in transforms:
        assert torch.equal(t.undo(t.apply(x)), x)
    assert len(transform_set("d4", 3)) == len(transform_set("flips", 3)) == 8
    assert len(transform_set("flips", 2)) == 4
    with pytest.raises(ValueError, match="transforms"):
        transform_set("rot45", 2)


@pytest.mark.parametrize("shape, transforms", [((2, 3, 8, 12), "d4"), ((1, 2, 5, 7), "flips"),
                                               ((2, 2, 4, 6, 10), "d4")])
def test_tta_of_identity_returns_the_input(shape, transforms):
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    tta = TTA(Identity(shape[1], ndim=len(shape) - 2), transforms)
    np.testing.assert_allclose(tta.predict(x), x, atol=1e-6, rtol=0)


def test_tta_of_an_equivariant_model_changes_nothing():
    model = SymmetricConv()
    x = np.random.default_rng(2).normal(size=(2, 3, 20, 14)).astype(np.float32)
    np.testing.assert_allclose(TTA(model).predict(x), model.predict(x), atol=1e-6, rtol=0)


def test_tta_of_a_random_unet_changes_the_output():
    model = random_unet(seed=0)
    image = textured_image(48, 64, seed=2)
    plain, augmented = model.predict_image(image), TTA(model).predict_image(image)
    assert np.abs(plain - augmented).max() > 1e-2
    np.testing.assert_allclose(augmented.sum(0), 1.0, atol=1e-5)


def test_rotations_make_stride_and_halo_square():
    class Strided(Identity):
        def __init__(self) -> None:
            super().__init__(1)
            self.stride, self.halo = (2, 4), (3, 5)

    assert (TTA(Strided()).stride, TTA(Strided()).halo) == ((4, 4), (5, 5))
    assert (TTA(Strided(), "flips").stride, TTA(Strided(), "flips").halo) == ((2, 4), (3, 5))


def test_chunked_tta_equals_whole_image_and_ref_resolves(tmp_path):
    model = random_unet(seed=1, depth=2, width=4)
    image = textured_image(70, 53, seed=4)
    tta = TTA(model)
    ref = tta.ref()
    assert isinstance(ref, TTARef) and len(pickle.dumps(ref)) < 2_000
    assert isinstance(geoseg.models.resolve(ref), TTA)
    raster = geoseg.open_raster(write_zarr(tmp_path / "in.zarr", image, chunks=(30, 30)))
    with dask.config.set(scheduler="sync"):
        probs = geoseg.segment(raster, tta, output="probabilities", chunks=(31, 27), tile=24).values
    np.testing.assert_allclose(probs, tta.predict_image(image), atol=1e-5, rtol=0)


@st.composite
def placed_windows(draw: st.DrawFn) -> tuple[np.ndarray, tuple[slice, ...], str]:
    """An image of 2 or 3 spatial axes with distinct values, and a window of it."""
    ndim = draw(st.sampled_from([2, 3]))
    shape = tuple(draw(st.integers(1, 9)) for _ in range(ndim))
    window = []
    for n in shape:
        start = draw(st.integers(0, n - 1))
        window.append(slice(start, draw(st.integers(start + 1, n))))
    return np.arange(np.prod(shape)).reshape(shape), tuple(window), "d4" if ndim == 2 else "flips"


@settings(max_examples=150, deadline=None)
@given(placed_windows())
def test_a_window_is_placed_where_the_transform_moves_its_pixels(case):
    """What a member inside TTA is told (where its windows lie) matches the pixels it sees."""
    image, window, name = case
    whole = torch.from_numpy(image)[None, None]
    for t in transform_set(name, image.ndim):
        (placed,), shape = t.place([window], image.shape)
        moved = t.apply(whole)
        assert tuple(moved.shape[2:]) == shape
        np.testing.assert_array_equal(moved[(..., *placed)], t.apply(whole[(..., *window)]))


class WhereCheck(Segmenter):
    """Checks what a member is told: each window it gets holds the pixels that lie at the place
    it is told, in the image as one of the transforms moved it."""

    name = "where-check"
    classes = (ClassInfo("a"), ClassInfo("b"))
    halo = (3, 3)

    def __init__(self, image: np.ndarray):
        self.moved = [t.apply(torch.from_numpy(image)[None])[0] for t in transform_set("d4", 2)]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.zeros((batch.shape[0], 2, *batch.shape[2:]), np.float32)

    def predict_tensor_at(self, batch, windows, shape):
        for tile, window in zip(batch, windows):
            places = [m[(slice(None), *window)] for m in self.moved if tuple(m.shape[1:]) == tuple(shape)]
            assert any(torch.equal(tile, p) for p in places if p.shape == tile.shape), window
        return self.predict_tensor(batch)


def test_tta_tells_its_member_where_each_transformed_window_lies():
    """Through the executor, on a non-square image of distinct values, for all 8 transforms."""
    image = np.arange(60 * 90, dtype=np.float32).reshape(1, 60, 90)
    raster = xr.DataArray(image, dims=("band", "y", "x")).chunk({"y": 30, "x": 45})
    member = WhereCheck(image)
    with dask.config.set(scheduler="sync"):
        classes = geoseg.segment(raster, TTA(member, "d4"), chunks=(30, 45), tile=(16, 20)).values
    assert classes.shape == (60, 90)
