"""Blended inference: independent of chunking, and equal to MONAI's sliding window."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import torch

import geoseg
from tests.conftest import textured_image, write_zarr


@pytest.fixture(scope="module")
def model(model_path):
    return geoseg.load_model(model_path)


@pytest.mark.parametrize("mode", ["gaussian", "linear"])
def test_blended_result_does_not_depend_on_chunking(tmp_path, model, mode):
    image = textured_image(150, 118, seed=8)
    raster = geoseg.open_raster(write_zarr(tmp_path / "in.zarr", image))
    results = []
    with dask.config.set(scheduler="sync"):
        for chunks in [(150, 118), (37, 53), (64, 40)]:
            results.append(geoseg.segment(raster, model, output="probabilities", chunks=chunks, tile=48,
                                          blend=mode, overlap=0.5).values)
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode, overlap", [("gaussian", 0.25), ("constant", 0.25), ("gaussian", 0.5)])
def test_matches_monai_sliding_window_inference(tmp_path, model, mode, overlap):
    from monai.inferers import sliding_window_inference

    roi = 64
    step = int(roi * (1 - overlap))
    height, width = roi + 3 * step, roi + 2 * step  # both tools place windows identically here
    image = textured_image(height, width, seed=9)
    x, _ = model.prepare(image)
    with torch.inference_mode():
        expected = sliding_window_inference(
            torch.from_numpy(x[None]), roi_size=(roi, roi), sw_batch_size=4, overlap=overlap, mode=mode,
            predictor=lambda t: torch.softmax(model.net(t), dim=1))[0].numpy()
    raster = geoseg.open_raster(write_zarr(tmp_path / "in.zarr", image))
    with dask.config.set(scheduler="sync"):
        got = geoseg.segment(raster, model, output="probabilities", chunks=(70, 90), tile=roi, blend=mode,
                             overlap=overlap).values
    assert np.abs(got - expected).max() < 1e-4
