"""Chunked equals whole-image inference for every 2D architecture whose receptive field a halo covers."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import torch
import xarray as xr

import geoseg
from geoseg.core.classes import ClassInfo
from geoseg.models import ModelInfo, SegmentationModel, build_network

CASES = {
    "fcn": ("fcn", {"depth": 3, "width": 4, "convs": 1, "fc_kernel": 3}),
    "segnet": ("segnet", {"depth": 3, "width": 4}),
    "deeplab-local": ("deeplabv3plus", {"backbone": "resnet18", "width": 4, "atrous_rates": [1, 2],
                                        "image_pooling": False}),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def model_for(name: str) -> SegmentationModel:
    torch.manual_seed(3)
    arch, config = CASES[name]
    config = {"in_channels": 3, "num_classes": 3, **config}
    net = build_network(arch, config)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    info = ModelInfo(name, arch, config, tuple(ClassInfo(f"c{i}") for i in range(3)), ("r", "g", "b"),
                     (128.0,) * 3, (40.0,) * 3)
    return SegmentationModel(net, info, device="cpu")


@pytest.mark.parametrize("name", sorted(CASES))
def test_chunked_equals_whole_image(name):
    model = model_for(name)
    halo = model.halo[0]
    size = 2 * (halo + model.stride[0]) + 3 * model.stride[0] + 5  # windows smaller than the image
    rng = np.random.default_rng(1)
    image = rng.integers(1, 255, (3, size, size - 7)).astype(np.float32)
    reference = model.predict_image(image)
    # the largest tile the check below allows (fewer windows of tile + 2 * halo to run), and
    # still several windows per axis (deeplab: 9)
    tile = model.stride[0] * 5
    assert tile + 2 * model.halo[0] < size, "the test must really cut the image into windows"
    raster = xr.DataArray(image, dims=("band", "y", "x"))
    with dask.config.set(scheduler="sync"):
        probs = geoseg.segment(raster, model, output="probabilities", chunks=(size // 3, size // 2 + 1),
                               tile=tile).values
    np.testing.assert_allclose(probs, reference, atol=2e-5, rtol=0)
