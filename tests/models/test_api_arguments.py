"""load_model() and predict_image() refuse arguments they cannot use with a geoseg error that
says what was received and what is expected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geoseg.errors import BandMismatchError, ParameterError
from geoseg.models import load_model
from tests.conftest import textured_image


@pytest.fixture(scope="module")
def model(model_path: str):
    """The random U-Net of the test suite: 3 bands, 4 classes."""
    return load_model(model_path, device="cpu")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return textured_image(32, 40)


def test_predict_image_refuses_one_band_for_a_three_band_model(model, image):
    with pytest.raises(BandMismatchError, match=r"expects 3 band\(s\).*the image of shape \(1, 32, 40\) "
                                                r"has 1"):
        model.predict_image(image[:1])


def test_predict_image_refuses_two_bands_for_a_three_band_model(model, image):
    with pytest.raises(BandMismatchError, match=r"expects 3 band\(s\).*has 2"):
        model.predict_image(image[:2])


def test_predict_image_refuses_a_two_dimensional_image(model, image):
    with pytest.raises(ParameterError, match=r"received an image of shape \(32, 40\) \(2 axes\); "
                                             r"expected 3 axes, \(bands, y, x\)"):
        model.predict_image(image[0])


def test_predict_image_refuses_bands_last(model, image):
    with pytest.raises(ParameterError, match=r"shape \(32, 40, 3\), which looks bands-last; expected "
                                             r"\(bands, y, x\).*np.moveaxis"):
        model.predict_image(np.moveaxis(image, 0, -1))


def test_predict_image_still_takes_bands_first(model, image):
    assert model.predict_image(image).shape == (4, 32, 40)


@pytest.mark.parametrize("url", [3, None, b"model.safetensors"])
def test_load_model_refuses_a_url_that_is_not_a_string(url):
    with pytest.raises(ParameterError, match=rf"url: received {url!r:.20}.*expected a model file's "
                                             r"path or URL string"):
        load_model(url)


def test_load_model_takes_a_pathlib_path(model_path):
    assert load_model(Path(model_path), device="cpu").n_classes == 4


@pytest.mark.parametrize("device", ["gpu", "cuda:x", 0], ids=["a-name", "a-bad-index", "an-int"])
def test_load_model_refuses_an_unknown_device(model_path, device):
    with pytest.raises(ParameterError, match=rf"device: received {device!r}; expected 'auto'.*'cpu', "
                                             r"'cuda' or 'cuda:N'"):
        load_model(model_path, device=device)


def test_load_model_takes_device_auto(model_path):
    assert load_model(model_path, device="auto").device.type in ("cpu", "cuda")
