"""load_model(), predict_image(), SegmentationModel, ModelInfo and ClassInfo refuse arguments
they cannot use with a geoseg error that says what was received and what is expected."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from geoseg.errors import (
    BandMismatchError,
    ModelConfigError,
    ModelFileError,
    ParameterError,
    UnsupportedFormatError,
)
from geoseg.models import ClassInfo, SegmentationModel, load_model, save_model
from tests.conftest import random_unet, textured_image


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


def test_load_model_refuses_a_folder(tmp_path):
    with pytest.raises(ModelFileError, match=r"is a folder; expected the path of a model file"):
        load_model(str(tmp_path))


@pytest.mark.parametrize("color", [(300, 0, 0), "red", (1, 2), (True, 0, 0), (1.5, 0, 0)])
def test_class_info_refuses_a_colour_that_is_no_rgb_triple(color):
    with pytest.raises(ModelConfigError, match=r"class 'a': received colour .*; expected three "
                                               r"integers in 0..255"):
        ClassInfo("a", color)


def test_class_info_takes_a_list_or_numpy_integers_as_its_colour():
    assert ClassInfo("a", [1, 2, 3]).color == ClassInfo("a", tuple(np.uint8([1, 2, 3]))).color == (1, 2, 3)


def test_class_info_refuses_a_name_that_is_no_string():
    with pytest.raises(ModelConfigError, match=r"name: received int 3; expected the class name, a "
                                               r"string"):
        ClassInfo(3)


def test_model_info_takes_class_names_as_classes(tmp_path):
    model = random_unet()
    info = dataclasses.replace(model.info, classes=("a", "b", "c", "d"))
    assert info.classes == tuple(ClassInfo(n) for n in "abcd")
    save_model(SegmentationModel(model.net, info, device="cpu"), str(tmp_path / "m.safetensors"))
    assert [c.name for c in load_model(str(tmp_path / "m.safetensors")).classes] == list("abcd")


@pytest.mark.parametrize("classes", ["abcd", (1, 2, 3, 4), None])
def test_model_info_refuses_classes_that_are_no_class_infos(classes):
    with pytest.raises(ModelConfigError, match=r"classes: received .*; expected a list of ClassInfo"):
        dataclasses.replace(random_unet().info, classes=classes)


@pytest.mark.parametrize(("net", "info", "fragment"), [
    (lambda x: x, None, r"net: received function .*; expected a torch.nn.Module"),
    (None, {"name": "m"}, r"info: received dict .*; expected a geoseg.ModelInfo"),
])
def test_segmentation_model_refuses_a_net_or_info_of_the_wrong_kind(net, info, fragment):
    model = random_unet()
    with pytest.raises(ParameterError, match=fragment):
        SegmentationModel(model.net if net is None else net, model.info if info is None else info,
                          device="cpu")


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_predict_image_refuses_complex_pixels(model, image, dtype):
    """torch would keep the real part alone, as segment() refuses complex rasters for."""
    with pytest.raises(UnsupportedFormatError, match=rf"predict_image\(\): image has pixels of dtype "
                                             rf"{np.dtype(dtype)} \(complex\); geoseg reads bool, "
                                             r"integer and floating-point .*numpy.abs\(x\) or x.real"):
        model.predict_image(image.astype(dtype))
