"""Volumes (band, z, y, x) through the same plan: anisotropic halos, 3D and slice-wise 2D models."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import torch
import xarray as xr

import geoseg
from geoseg.core.classes import ClassInfo
from geoseg.models import ModelInfo, SegmentationModel, SliceWise, build_network
from tests.conftest import random_unet


def random_unet3d(pool_z) -> SegmentationModel:
    torch.manual_seed(1)
    config = {"in_channels": 1, "num_classes": 3, "depth": 2, "width": 4, "pool_z": pool_z}
    net = build_network("unet3d", config)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm3d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.bias.uniform_(-0.1, 0.3)
        net.head.weight.normal_(0.0, 1.0)
        net.head.bias.zero_()
    info = ModelInfo("random-unet3d", "unet3d", config, tuple(ClassInfo(f"c{i}") for i in range(3)),
                     ("intensity",), (0.0,), (0.1,))
    return SegmentationModel(net, info, device="cpu")


def volume(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return (np.sin(zz / 3 + yy / 7) * np.cos(xx / 5) + rng.normal(0, 0.3, shape)).astype(np.float32)[None]


@pytest.mark.parametrize("pool_z", [True, False])
def test_3d_unet_chunked_equals_whole_volume(pool_z):
    model = random_unet3d(pool_z)
    assert (model.stride[0] == model.stride[1]) == pool_z  # anisotropic without z pooling
    image = volume((21, 45, 38))
    reference = model.predict_image(image)
    assert len(np.unique(reference.argmax(0))) >= 2
    data = xr.DataArray(image, dims=("band", "z", "y", "x")).chunk({"z": 7, "y": 20, "x": 20})
    with dask.config.set(scheduler="sync"):
        probs = geoseg.segment(data, model, output="probabilities", chunks=(9, 16, 25), tile=(8, 16, 16))
        values = probs.values
    assert probs.dims == ("class", "z", "y", "x")
    np.testing.assert_allclose(values, reference, atol=1e-5, rtol=0)


def test_2d_model_slice_by_slice_over_a_volume(tmp_path):
    model = random_unet(bands=1, classes=3)
    image = (volume((5, 40, 33), seed=2) * 60 + 128).astype(np.float32)
    expected = np.stack([model.predict_image(image[:, z]).argmax(0) for z in range(5)])
    data = xr.DataArray(image[0], dims=("z", "y", "x"))
    with dask.config.set(scheduler="sync"):
        classes = geoseg.segment(data, SliceWise(model), chunks=(2, 16, 16), tile=(1, 16, 16)).values
    np.testing.assert_array_equal(classes, expected)
