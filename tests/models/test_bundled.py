"""The bundled demo model: exact stitching and quality on a scene it never saw."""

from __future__ import annotations

import dask
import numpy as np
import pytest

import geoseg
from geoseg.demo import write_scene
from geoseg.metrics import confusion_matrix, iou_per_class, mean_iou
from geoseg.synth import make_scene

FRESH_SEED = 4242  # training used seeds 0-3 and 999


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return geoseg.load_model("builtin:demo-unet", device="cpu")


HEIGHT, WIDTH = 211, 197  # multiples of nothing useful (primes)


@pytest.fixture(scope="module")
def scene():
    """A scene written once (Zarr chunks of 100) and the model on the whole of it."""
    return make_scene(HEIGHT, WIDTH, seed=77)


@pytest.fixture(scope="module")
def written(scene, tmp_path_factory):
    return write_scene(scene, str(tmp_path_factory.mktemp("bundled") / "s.zarr"), chunks=100)


@pytest.fixture(scope="module")
def reference(scene, model):
    return model.predict_image(scene.image, nodata=0)


@pytest.mark.parametrize("chunks, tile", [((128, 128), 128), ((97, 61), 64), ((HEIGHT, WIDTH), 512)])
def test_bundled_model_chunked_equals_whole_image(written, reference, model, chunks, tile):
    raster = geoseg.open_raster(written, variable="image")
    with dask.config.set(scheduler="sync"):
        probs = geoseg.segment(raster, model, output="probabilities", chunks=chunks, tile=tile).values
        classes = geoseg.segment(raster, model, chunks=chunks, tile=tile).values
    np.testing.assert_allclose(probs, reference, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(classes, reference.argmax(0))


def test_bundled_model_reaches_miou_080_on_a_fresh_scene(model):
    scene = make_scene(1024, 1024, seed=FRESH_SEED)
    pred = model.predict_image(scene.image, nodata=0).argmax(0)
    confusion = confusion_matrix(scene.labels, pred, len(scene.classes))
    miou = mean_iou(confusion)
    print(f"bundled model mIoU on fresh scene (seed {FRESH_SEED}, 1024x1024): {miou:.4f}; per class "
          + ", ".join(f"{c.name} {v:.3f}" for c, v in zip(scene.classes, iou_per_class(confusion))))
    assert miou >= 0.80
