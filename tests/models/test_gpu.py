"""CUDA path: bf16 autocast on the GPU agrees with float32 on the CPU (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest

import geoseg
from tests.conftest import textured_image

pytestmark = pytest.mark.gpu


def test_cuda_bf16_matches_cpu_float32():
    image = textured_image(512, 512, seed=2)
    cpu = geoseg.load_model("builtin:demo-unet", device="cpu").predict_image(image)
    gpu = geoseg.load_model("builtin:demo-unet", device="cuda").predict_image(image)
    assert np.abs(gpu - cpu).max() < 0.05
    assert (gpu.argmax(0) == cpu.argmax(0)).mean() > 0.99


def test_chunked_equals_whole_image_on_cuda(tmp_path):
    import dask

    from tests.conftest import write_zarr

    image = textured_image(300, 260, seed=4)
    model = geoseg.load_model("builtin:demo-unet", device="cuda")
    raster = geoseg.open_raster(write_zarr(tmp_path / "in.zarr", image))
    with dask.config.set(scheduler="sync"):
        probs = geoseg.segment(raster, model, output="probabilities", chunks=(128, 96), tile=128).values
    np.testing.assert_allclose(probs, model.predict_image(image), atol=2e-2)
